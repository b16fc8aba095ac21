"""Fixed augmented views with cached teacher logits (`augment_views`, FKD-style).

The claims checked here: a trial that cycles K views and reads its teacher's logits from a
cache trains exactly as the same trial with the teacher run online on every batch; the
search's cache, built by Ray tasks, holds what the trial would compute itself and is saved
once; and the command line's default on augmented data (K = --max-epochs) trains what
`--augment-views online` trains. CIFAR-10 in its real pickle format (tests/fakedata.py),
fp32, a small conv teacher.
"""
from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
import yaml

from kdtune import datasets
from kdtune.search.stages.teacher_cache import build_cache, local_cache
from tests import fakedata
from kdtune.trainables import reporting
from kdtune.trainables.distill import distill_student
from kdtune.trainables.teacher import train_teacher
from kdtune.trainables.teacher_logits import compute_logits, for_inference, load_teacher

FAST = {"dataset": "cifar10", "batch_size": 32, "lr": 0.05, "precision": "fp32", "seed": 3,
        "model": "cifar_resnet", "depth": 8}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    fakedata.write_cifar10(root, n_per_batch=40, n_test=20)
    return root


@pytest.fixture(scope="module")
def cifar(cifar_root):
    return datasets.create_dataset("cifar10", str(cifar_root), val_fraction=0.2)


@pytest.fixture(scope="module")
def teacher_ckpt(cifar, tmp_path_factory):
    with reporting.local_session(root=str(tmp_path_factory.mktemp("teacher"))) as rec:
        train_teacher({**FAST, "width": 16, "epochs": 1}, data=cifar)
    return rec.checkpoints[-1]


def test_view_cache_rows_are_the_teachers_logits_of_the_trials_batches(cifar, teacher_ckpt):
    from kdtune.trainables.config import DistillConfig
    from kdtune.trainables.runtime import Runtime
    from kdtune.trainables.trial import loaders

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
        shared = local_cache(cifar, teacher_ckpt, views=2, seed=3, precision="fp32")
        given = distill_student(base, data=cifar, teacher_logits=shared)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "agreement"):
        assert cached[key] == pytest.approx(online[key], abs=1e-4), key
        assert given[key] == pytest.approx(online[key], abs=1e-4), key


def test_a_cache_of_the_wrong_size_is_refused(cifar, teacher_ckpt):
    config = {**FAST, "width": 8, "epochs": 1, "augment_views": 3,
              "teacher_checkpoint": teacher_ckpt}
    two_views = local_cache(cifar, teacher_ckpt, views=2, seed=3, precision="fp32")
    with reporting.local_session(), pytest.raises(ValueError, match="3 augmented views"):
        distill_student(config, data=cifar, teacher_logits=two_views)


def _arrays(cache):
    return [cache.val, *cache.train]


def test_search_cache_is_built_by_tasks_saved_once_and_reused(cifar, teacher_ckpt, ray_local,
                                                              tmp_path, capsys):
    kw = dict(views=2, seed=3, precision="fp32", cpus=1, cache_dir=tmp_path)
    first = build_cache(cifar, teacher_ckpt, **kw)
    assert "3 part(s) to compute, 0 saved, in 2 task(s)" in capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    files = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    assert sorted(files) == ["val-float32.npy", "view-0001-float32.npy", "view-0002-float32.npy"]
    # The tasks' arrays are what this process computes with the trial's own code.
    mine = local_cache(cifar, teacher_ckpt, views=2, seed=3, precision="fp32")
    for got, want in zip(_arrays(first.resolve()), _arrays(mine), strict=True):
        np.testing.assert_array_equal(got, want)
    val_part = first.resolve(val_only=True)  # what the driver reads: no train view fetched
    assert val_part.views == 0 and val_part.dtype == mine.dtype
    np.testing.assert_array_equal(val_part.val, mine.val)
    again = build_cache(cifar, teacher_ckpt, **kw)  # --resume: read back, not recomputed
    assert "0 part(s) to compute, 3 saved" in capsys.readouterr().out
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == files
    for got, want in zip(_arrays(again.resolve()), _arrays(mine), strict=True):
        np.testing.assert_array_equal(got, want)
    # View v is the same pixels whatever K: a larger K computes only the new views.
    build_cache(cifar, teacher_ckpt, **{**kw, "views": 3})
    assert "1 part(s) to compute, 3 saved" in capsys.readouterr().out
    # The online teacher: only the validation logits are shared.
    online = build_cache(cifar, teacher_ckpt, **{**kw, "views": 0}).resolve()
    assert online.views == 0 and online.val.shape == (len(cifar.val), 10)


def test_no_later_task_runs_in_a_cache_build_worker(cifar, teacher_ckpt, ray_local):
    """Ray reuses idle workers for later tasks and actors: a trial landing in a build worker
    would inherit its teacher and allocator heap (and on a GPU its CUDA context)."""
    def ran_a_cache_build() -> bool:  # nested: pickled by value, so it imports nothing itself
        import sys
        return "kdtune.search.stages.teacher_cache" in sys.modules  # a build task's worker imported it

    build_cache(cifar, teacher_ckpt, views=2, seed=3, precision="fp32", cpus=1)
    probe = ray.remote(num_cpus=1)(ran_a_cache_build)
    assert not any(ray.get([probe.remote() for _ in range(6)]))


def test_default_views_train_like_the_online_teacher(cifar_root, cifar, teacher_ckpt, ray_local, tmp_path):
    """The command line's default on CIFAR-format files against --augment-views online:
    the same trial metrics, the default reading its training rows from the search's cache."""
    from kdtune.search.input.cli import parse_args
    from kdtune.search.record.manifest import Manifest
    from kdtune.search.stages.pipeline import teacher_logits
    from kdtune.search.input.validate import preflight

    preset = {"dataset": "cifar10", "val_fraction": 0.2, "seed": 3, "students": ["cifar_resnet"],
              "train": {"batch_size": 32, "precision": "fp32"}, "teacher": {"model": "cifar_resnet"},
              "search": {"max_epochs": 3, "grace_period": 1}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(preset))
    metrics = {}
    for mode, flags in (("default", []), ("online", ["--augment-views", "online"])):
        spec, _ = parse_args(["--preset", str(tmp_path / "p.yaml"), "--data-dir", str(cifar_root),
                              "--storage-path", str(tmp_path), "--name", mode, *flags])
        spec, bundle = preflight(spec)
        assert spec.augment_views == (3 if mode == "default" else 0)
        manifest = Manifest.create(spec.experiment_dir, spec.to_dict(), bundle.meta(), spec.planned_stages())
        shared = teacher_logits(spec, bundle, manifest, teacher_ckpt)
        assert len(shared.train) == (3 if mode == "default" else 0)
        config = {**spec.student_constants(teacher_ckpt), "model": "cifar_resnet", "depth": 8,
                  "width": 8, "alpha": 0.8, "temperature": 4.0, "lr": 0.05}
        with reporting.local_session():
            metrics[mode] = distill_student(config, data=bundle, teacher_logits=shared)
    assert metrics["default"]["epoch"] == metrics["online"]["epoch"] == 3
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "agreement"):
        assert metrics["default"][key] == pytest.approx(metrics["online"][key], abs=1e-4), key


def test_a_trial_with_the_search_cache_never_loads_the_teacher(cifar, teacher_ckpt, ray_local,
                                                               tmp_path, monkeypatch):
    from kdtune.trainables import distill

    shared = build_cache(cifar, teacher_ckpt, views=2, seed=3, precision="fp32", cpus=1)
    def refuse(*_a, **_k):
        raise AssertionError("the teacher was loaded although the cache holds every row")

    monkeypatch.setattr(distill, "prepare_teacher", refuse)
    config = {**FAST, "width": 8, "epochs": 1, "augment_views": 2, "teacher_checkpoint": teacher_ckpt}
    with reporting.local_session():
        out = distill_student(config, data=cifar, teacher_logits=shared)
    assert 0.0 <= out["agreement"] <= 1.0


def test_a_cache_above_the_resident_threshold_is_mapped_from_its_files(cifar, teacher_ckpt, ray_local, tmp_path,
                                                                       capsys):
    """The switch by size, both ways: under the threshold the object store holds the parts; above
    it (resident_max_mb=0 here) the tasks only save them and trials map the files, the same rows."""
    from kdtune.trainables.logit_cache import MappedLogitCache, SharedLogitCache

    kw = dict(views=2, seed=3, precision="fp32", cpus=1, cache_dir=tmp_path)
    resident = build_cache(cifar, teacher_ckpt, **kw)
    mapped = build_cache(cifar, teacher_ckpt, resident_max_mb=0, **kw)
    assert isinstance(resident, SharedLogitCache) and isinstance(mapped, MappedLogitCache)
    assert "mapped from disk" in capsys.readouterr().out
    assert all(p.startswith(str(tmp_path)) for p in (*mapped.train, mapped.val))
    opened = mapped.resolve()
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in opened.train)
    for got, want in zip(_arrays(opened), _arrays(resident.resolve()), strict=True):
        np.testing.assert_array_equal(got, want)
    # A student trains identically on either: tests/test_logit_cache.py (no Ray, digits).
