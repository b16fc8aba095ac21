"""The paper-protocol runner of benchmarks/bench_accuracy_anchor.py --protocol hinton
(benchmarks/hinton_protocol.py): all training images, last epoch, resumable after a kill.
On the offline digits set with tiny models; the real run is a benchmark."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hinton_protocol  # noqa: E402

from trainables import reporting  # noqa: E402
from trainables.teacher import train_teacher  # noqa: E402

CFG = {"dataset": "digits", "model": "mlp", "depth": 1, "width": 16, "epochs": 3, "lr": 0.05,
       "precision": "fp32", "augment": "jitter", "model_kwargs": {"input_dropout": 0.2}}


def test_full_train_bundle_folds_validation_into_training(bundle):
    full = hinton_protocol.full_train_bundle(bundle)
    assert len(full.train) == len(bundle.train) + len(bundle.val)
    assert full.test is bundle.test and full.val is bundle.val


def test_a_killed_run_resumes_and_counts_each_epoch_once(bundle, tmp_path, monkeypatch):
    folder = tmp_path / "teacher"
    real = reporting.LocalSession.record

    def killed_after_two(self, metrics, checkpoint_dir):
        real(self, metrics, checkpoint_dir)
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt  # the shell's cut, after epoch 2 was checkpointed

    monkeypatch.setattr(reporting.LocalSession, "record", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
    assert not (folder / "result.json").exists()
    assert len(list((folder / "part000").glob("checkpoint_*"))) == 1  # keep_last=1
    monkeypatch.setattr(reporting.LocalSession, "record", real)

    result = hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
    lines = [json.loads(x)["epoch"] for x in (folder / "epochs.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3]  # the second part ran epoch 3 only
    assert result["epochs"] == 3 and 0 <= result["errors"] <= len(bundle.test)
    with reporting.local_session() as rec:  # an uninterrupted run ends at the same weights
        straight = train_teacher(CFG, data=bundle)
    assert result["last_train_acc"] == pytest.approx(straight["train_acc"], abs=1e-6)
    # a finished run is read back, not retrained
    assert hinton_protocol.run_resumable(None, CFG, bundle, folder) == result


def test_a_folder_refuses_to_resume_under_another_config(bundle, tmp_path):
    folder = tmp_path / "teacher"
    hinton_protocol.check_same_config(folder, CFG)
    hinton_protocol.check_same_config(folder, dict(CFG))  # the same run again: fine
    with pytest.raises(SystemExit, match=r"started with another config \(lr differ\)"):
        hinton_protocol.run_resumable(train_teacher, {**CFG, "lr": 123.0}, bundle, folder)


def test_the_protocol_students_stay_unjittered_under_a_jittered_search():
    """With `--augment jitter:2` the hinton_mnist search's students train on jittered fixed views;
    the paper's 2x800 students must not inherit that (no jitter, no views: one row per image)."""
    import dataclasses

    from search.cli import parse_args
    from trainables.config import DistillConfig

    spec, _ = parse_args(["--preset", "hinton_mnist", "--augment", "jitter:2"])
    spec = dataclasses.replace(spec, augment_views=spec.max_epochs)  # as preflight fills it in
    assert spec.student_constants(None)["augment"] == "jitter"
    cfg = hinton_protocol.configs(spec, 0, None, 60, 0.9, 20.0, 0.05, 1, kd_lr=0.01)
    for role in ("student", "kd"):
        assert cfg[role]["augment"] == "none"
        assert "augment_pixels" not in cfg[role] and "augment_views" not in cfg[role]
        DistillConfig.from_dict(cfg[role])
    assert cfg["kd"]["alpha"] == 0.9 and cfg["kd"]["lr"] == 0.01 and cfg["student"]["alpha"] == 0.0
    assert cfg["teacher"]["augment"] == "jitter"  # the teacher keeps its own
