"""Trainables as plain calls on digits (CPU, fp32): learning, resume, teacher logits,
divergence, gradient probes, checkpoint errors."""
import os

import pytest
import torch

from kdtune import datasets
from kdtune import models
from kdtune.trainables import checkpoint, reporting
from kdtune.trainables.distill import distill_student
from kdtune.trainables.teacher import train_teacher
from kdtune.trainables.teacher_logits import compute_logits, load_teacher

# fp32 and a fixed seed: runs are bit-for-bit repeatable on one machine.
FAST = {"dataset": "digits", "epochs": 2, "batch_size": 32, "lr": 0.05, "precision": "fp32",
        "seed": 0}


@pytest.fixture(scope="module")
def teacher_dir(bundle, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("teacher"))
    with reporting.local_session(root=root) as rec:
        metrics = train_teacher({**FAST, "width": 256}, data=bundle)
    assert metrics["val_acc"] > 0.5 and len(rec.checkpoints) == 2
    return rec.checkpoints[-1]


def test_teacher_learns_and_reports_every_epoch(bundle):
    with reporting.local_session() as rec:
        last = train_teacher({**FAST, "width": 128}, data=bundle)
        assert [r["epoch"] for r in rec.results] == [1, 2]
        assert all(os.path.isfile(os.path.join(c, "checkpoint.pt")) for c in rec.checkpoints)
    assert last == rec.results[-1]
    assert last["val_acc"] > 0.5 and last["diverged"] == 0
    for key in ("train_loss", "train_acc", "val_loss", "lr", "epoch_time_s", "images_per_s",
                "params", "flops"):
        assert key in last, key
    assert "agreement" not in last


def test_distilled_student_learns_and_reports_agreement(bundle, teacher_dir):
    with reporting.local_session():
        last = distill_student({**FAST, "width": 64, "teacher_checkpoint": teacher_dir,
                                "alpha": 0.5, "temperature": 4.0}, data=bundle)
    assert last["val_acc"] > 0.5
    assert 0.0 <= last["agreement"] <= 1.0
    assert last["params"] < models.count_params(load_teacher(teacher_dir))


def test_resume_from_epoch_one_matches_uninterrupted_run(bundle):
    # dropout: the restored RNG stream matters, not only weights and optimiser state.
    config = {**FAST, "width": 64, "model_kwargs": {"dropout": 0.1}, "schedule": "cosine"}
    with reporting.local_session() as full:
        train_teacher(config, data=bundle)
        with reporting.local_session(resume_from=full.checkpoints[0]) as resumed:
            train_teacher(config, data=bundle)
        assert [r["epoch"] for r in resumed.results] == [2]
        for key in ("train_loss", "train_acc", "val_acc", "val_loss", "lr"):
            assert resumed.results[0][key] == pytest.approx(full.results[1][key], abs=1e-6), key


def test_cached_and_online_teacher_logits_agree(bundle, teacher_dir):
    assert bundle.augment == "none"
    base = {**FAST, "width": 64, "teacher_checkpoint": teacher_dir, "alpha": 0.7}
    with reporting.local_session():
        cached = distill_student({**base, "teacher_logits": "cached"}, data=bundle)
        online = distill_student({**base, "teacher_logits": "online"}, data=bundle)
        # The driver's path: logits computed once and handed to the trial.
        shared = compute_logits(load_teacher(teacher_dir), bundle.train, 256, "cpu",
                                mean=bundle.mean, std=bundle.std)
        given = distill_student(base, data=bundle, teacher_logits=shared)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "agreement"):
        assert online[key] == pytest.approx(cached[key], abs=1e-4), key
        assert given[key] == pytest.approx(cached[key], abs=1e-4), key


def test_alpha_zero_is_the_baseline(bundle, teacher_dir):
    with reporting.local_session():
        plain = distill_student({**FAST, "width": 64}, data=bundle)
        zero = distill_student({**FAST, "width": 64, "alpha": 0.0,
                                "teacher_checkpoint": teacher_dir}, data=bundle)
    assert zero["train_loss"] == pytest.approx(plain["train_loss"], abs=1e-6)
    assert "agreement" in zero and "agreement" not in plain


def test_divergence_stops_the_trial_without_raising(bundle):
    with reporting.local_session() as rec:
        last = train_teacher({**FAST, "epochs": 3, "lr": 1e4, "schedule": "constant"}, data=bundle)
    assert last["diverged"] == 1 and last["val_acc"] == 0.0
    assert "diverged" in last["stop_reason"]
    assert rec.results[-1] == last and len(rec.results) < 3  # stopped early
    assert len(rec.checkpoints) == len(rec.results) - 1  # no checkpoint of NaN weights


def test_grad_norms_for_every_probe(bundle):
    config = {**FAST, "epochs": 1, "depth": 4, "width": 32, "track_grad_norms": True}
    with reporting.local_session():
        last = train_teacher(config, data=bundle)
    net = models.create_model("mlp", bundle.num_classes, bundle.in_shape, depth=4, width=32)
    names = [name for name, _ in models.gradient_probes(net)]
    assert names and {f"grad_norm/{n}" for n in names} <= set(last)
    assert all(last[f"grad_norm/{n}"] > 0 for n in names)


@pytest.mark.parametrize("optimizer,schedule", [("adam", "step"), ("adamw", "onecycle")])
def test_other_optimizers_and_schedules(bundle, optimizer, schedule):
    config = {**FAST, "optimizer": optimizer, "schedule": schedule, "lr": 3e-3,
              "milestones": [1], "grad_clip": 1.0, "label_smoothing": 0.1, "width": 64}
    with reporting.local_session() as rec:
        last = train_teacher(config, data=bundle)
    assert last["val_acc"] > 0.5
    if schedule == "step":  # stepped per epoch: lr drops by gamma after epoch 1
        assert rec.results[1]["lr"] == pytest.approx(rec.results[0]["lr"] * 0.1)


def test_checkpoint_rebuilds_model_from_its_spec(teacher_dir, tmp_path):
    # Copy under a misleading name: the architecture must come from the spec inside.
    fake = tmp_path / "resnet56_teacher"
    fake.mkdir()
    (fake / "checkpoint.pt").write_bytes(open(os.path.join(teacher_dir, "checkpoint.pt"), "rb").read())
    model, payload = checkpoint.load_model(fake)
    assert payload["model_spec"]["name"] == "mlp" and payload["epoch"] == 2
    assert payload["config"]["width"] == 256 and payload["dataset"]["name"] == "digits"


def test_checkpoint_errors(teacher_dir, tmp_path, bundle):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load_model(tmp_path / "missing")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a kdtune checkpoint"):
        checkpoint.load_model(tmp_path / "other.pt")
    torch.save({"format": checkpoint.FORMAT, "obj": object()}, tmp_path / "pickled.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a kdtune checkpoint"):
        checkpoint.load_payload(tmp_path / "pickled.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a zip" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load_payload(tmp_path / "corrupt.pt")
    _, payload = checkpoint.load_model(teacher_dir)
    checkpoint.check_compatible(payload, bundle.meta())
    with pytest.raises(checkpoint.CheckpointError, match="num_classes 10 != 100"):
        checkpoint.check_compatible(payload, {**bundle.meta(), "num_classes": 100})
    with pytest.raises(checkpoint.CheckpointError, match="dataset 'digits' != 'mnist'"):
        load_teacher(teacher_dir, dataset_meta={**bundle.meta(), "name": "mnist", "in_shape": [1, 28, 28]})
    assert issubclass(checkpoint.CheckpointError, ValueError)


def test_teacher_logits_without_teacher_checkpoint_is_refused(bundle):
    with pytest.raises(ValueError, match="no teacher_checkpoint"):
        distill_student({**FAST}, data=bundle, teacher_logits=torch.zeros(3, 10))


def test_dataset_mismatch_between_data_and_config(bundle):
    with pytest.raises(ValueError, match="given dataset 'digits'"):
        train_teacher({**FAST, "dataset": next(d for d in datasets.list_datasets() if d != "digits")},
                      data=bundle)


@pytest.mark.parametrize("name, kwargs", [("resnet20", {}), ("resnet", {"layers": [1, 1, 1], "dropblock": 0.1}),
                                          ("mlp", {"depth": 2, "width": 32, "batch_norm": True})])
def test_inference_teacher_folds_batchnorm_exactly(name, kwargs):
    from torch import nn

    from kdtune.trainables.teacher_logits import for_inference

    torch.manual_seed(0)
    teacher = models.create_model(name, 10, (3, 16, 16), **kwargs)
    teacher.train()
    with torch.no_grad():  # running statistics away from their (0, 1) defaults
        for _ in range(3):
            teacher(torch.randn(32, 3, 16, 16) * 2 + 0.5)
    x = torch.randn(16, 3, 16, 16)
    folded = for_inference(teacher)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert folded.kdtune_spec == teacher.kdtune_spec
    assert not any(p.requires_grad for p in folded.parameters())
    with torch.no_grad():
        ref = teacher.eval()(x)
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    in_bf16 = for_inference(teacher, torch.bfloat16)
    assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = in_bf16(x).float()
    assert (low.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert (low - ref).abs().max() <= 0.05 * ref.abs().max()


def test_channels_last_is_off_on_cpu_for_nets_with_a_narrow_strided_1x1_conv():
    """oneDNN (torch 2.14.1, AVX2) corrupts the heap in the weight backward of a strided 1x1
    conv with < 8 input channels in channels_last: cifar_resnet width 4's shortcut. Such nets
    run NCHW on the CPU; wider ones and MLPs keep their layout rule; an explicit choice wins."""
    from kdtune import models
    from kdtune.trainables.runtime import Runtime

    def layout(width, channels_last=None):
        net = models.create_model("cifar_resnet", num_classes=10, in_shape=(3, 32, 32), depth=8, width=width)
        return Runtime.resolve("cpu", "fp32", net, 1, channels_last).channels_last

    assert (layout(4), layout(7), layout(8), layout(16)) == (False, False, True, True)
    assert layout(4, channels_last=True) is True
    mlp = models.create_model("mlp", num_classes=10, in_shape=(1, 8, 8), depth=1, width=8)
    assert Runtime.resolve("cpu", "fp32", mlp, 1).channels_last is False
