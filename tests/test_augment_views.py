"""Fixed augmented views with cached teacher logits (`augment_views`, FKD-style).

The claim checked here: a trial that cycles K views and reads its teacher's logits from a
cache trains exactly as the same trial with the teacher run online on every batch, and the
driver's cache is the one the trial would compute itself. CIFAR-10 in its real pickle
format (tests/fakedata.py), fp32, a small conv teacher.
"""
from __future__ import annotations

import pytest
import torch

import datasets
from search.teacher_cache import cached_teacher_logits
from tests import fakedata
from trainables import reporting
from trainables.distill import distill_student
from trainables.teacher import train_teacher
from trainables.teacher_logits import compute_logits, for_inference, load_teacher

FAST = {"dataset": "cifar10", "batch_size": 32, "lr": 0.05, "precision": "fp32", "seed": 3,
        "model": "cifar_resnet", "depth": 8}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    fakedata.write_cifar10(root, n_per_batch=40, n_test=20)
    return datasets.create_dataset("cifar10", str(root), val_fraction=0.2)


@pytest.fixture(scope="module")
def teacher_ckpt(cifar, tmp_path_factory):
    with reporting.local_session(root=str(tmp_path_factory.mktemp("teacher"))) as rec:
        train_teacher({**FAST, "width": 16, "epochs": 1}, data=cifar)
    return rec.checkpoints[-1]


def test_view_cache_rows_are_the_teachers_logits_of_the_trials_batches(cifar, teacher_ckpt):
    from trainables.config import DistillConfig
    from trainables.runtime import Runtime
    from trainables.stage import loaders

    teacher = for_inference(load_teacher(teacher_ckpt))
    cache = compute_logits(teacher, cifar.train, 64, "cpu", mean=cifar.mean, std=cifar.std,
                           augment=cifar.augment, views=2, seed=3)
    assert cache.shape == (2 * len(cifar.train), 10) and cache.dtype == torch.float32
    cfg = DistillConfig.from_dict({**FAST, "augment_views": 2})
    train, _ = loaders(cfg, cifar, Runtime(torch.device("cpu"), None, False, 1))
    with torch.inference_mode():
        for epoch in (1, 2, 3):  # epoch 3 shows view 1 again, with a new order
            train.set_epoch(epoch)
            x, _, keys = next(iter(train))
            assert torch.allclose(cache[keys], teacher(x), atol=1e-4)


def test_cached_views_train_exactly_like_the_online_teacher(cifar, teacher_ckpt):
    base = {**FAST, "width": 8, "epochs": 3, "augment_views": 2,
            "teacher_checkpoint": teacher_ckpt, "alpha": 0.8}
    with reporting.local_session():
        online = distill_student({**base, "teacher_logits": "online"}, data=cifar)
        cached = distill_student(base, data=cifar)  # auto: cached, since views are fixed
        shared = cached_teacher_logits(cifar, teacher_ckpt, views=2, seed=3, precision="fp32")
        given = distill_student(base, data=cifar, teacher_logits=shared)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "agreement"):
        assert cached[key] == pytest.approx(online[key], abs=1e-4), key
        assert given[key] == pytest.approx(online[key], abs=1e-4), key


def test_a_cache_of_the_wrong_size_is_refused(cifar, teacher_ckpt):
    config = {**FAST, "width": 8, "epochs": 1, "augment_views": 3,
              "teacher_checkpoint": teacher_ckpt}
    two_views = cached_teacher_logits(cifar, teacher_ckpt, views=2, seed=3, precision="fp32")
    with reporting.local_session(), pytest.raises(ValueError, match="3 augmented views"):
        distill_student(config, data=cifar, teacher_logits=two_views)


def test_driver_cache_is_saved_once_and_reused(cifar, teacher_ckpt, tmp_path, capsys):
    kw = dict(views=2, seed=0, precision="fp32", cache_dir=tmp_path)
    first = cached_teacher_logits(cifar, teacher_ckpt, **kw)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    assert "teacher logits for 2 augmented views" in capsys.readouterr().out
    again = cached_teacher_logits(cifar, teacher_ckpt, **kw)
    assert torch.equal(first, again)
    assert capsys.readouterr().out == ""  # read back, not recomputed
    cached_teacher_logits(cifar, teacher_ckpt, **{**kw, "views": 3})  # a new key, a new file
    assert len(list(tmp_path.iterdir())) == 2
    # Without views an augmented dataset has no cache: trials run the teacher online.
    assert cached_teacher_logits(cifar, teacher_ckpt, precision="fp32") is None
