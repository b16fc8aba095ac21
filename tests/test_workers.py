"""--teacher-workers / --final-workers without Ray: the flags' errors (one line, exit 2, never
accepted and ignored), what they put in the trial configs, and the loaders' sharding that
makes N workers see one process's global batches (tests/test_ddp.py trains them)."""
from __future__ import annotations

import os

import pytest
import ray
import torch

from kdtune import datasets
from kdtune.datasets import DeviceLoader
from kdtune.search.input.cli import parse_args
from kdtune.search.run_kd_search import main
from tests.test_cli_errors import _digits_teacher

CASES = [
    ("zero", lambda t: ["--teacher-workers", "0"], "argument --teacher-workers: must be >= 1, got 0"),
    ("not-a-number", lambda t: ["--final-workers", "two"], "argument --final-workers: expected a whole number, got 'two'"),
    ("with-a-given-teacher", lambda t: ["--teacher-checkpoint", _digits_teacher(t, 0), "--teacher-workers", "2"],
     "--teacher-workers: only for a teacher that kdtune trains"),
    ("more-cpus-than-the-machine", lambda t: ["--teacher-workers", str((os.cpu_count() or 1) + 1)],
     "CPUs at once but this machine has"),
    ("fractional-cpus-over-the-machine", lambda t: ["--teacher-workers", "2", "--cpus-per-trial", str(os.cpu_count())],
     "CPUs at once but this machine has"),
    ("no-final-stage", lambda t: ["--final-workers", "2", "--final-seeds", "0"], "this run has no final stage"),
    ("feature-method-retraining", lambda t: ["--final-workers", "2", "--methods", "kd,fitnet"],
     "retraining with feature method(s) fitnet runs single-process"),
    ("with-resume", lambda t: ["--resume", "--name", "x", "--teacher-workers", "2"], "--teacher-workers would change it"),
]


@pytest.mark.parametrize("case_id, build, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_workers_flag_is_one_error_line_and_exit_2(case_id, build, message, tmp_path, capsys):
    storage = tmp_path / "storage"
    try:
        code = main(["--storage-path", str(storage), *build(tmp_path)])
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not ray.is_initialized()
    assert not storage.exists() or not any(storage.iterdir())


def test_the_flags_reach_the_trials_configs_and_default_to_one_process(tmp_path):
    spec, _ = parse_args(["--storage-path", str(tmp_path), "--teacher-workers", "2", "--final-workers", "2"])
    assert (spec.teacher_workers, spec.final_workers) == (2, 2)
    assert spec.teacher_config()["workers"] == 2
    plain, _ = parse_args(["--storage-path", str(tmp_path)])
    assert (plain.teacher_workers, plain.final_workers) == (1, 1)
    assert "workers" not in plain.teacher_config()  # N = 1: the config (and manifest) as before


def test_final_trial_passes_workers_to_the_student(monkeypatch):
    import kdtune.trainables.distill as distill
    from kdtune.search.stages import final

    seen = {}

    def fake(run, data=None, teacher_logits=None, worker_resources=None):
        seen.update(run=run, resources=worker_resources)

    monkeypatch.setattr(distill, "distill_student", fake)  # final_trial imports it when called
    candidates = [{"config": {"model": "mlp", "epochs": 1}}]
    final.final_trial({"candidate": 0, "seed": 5}, candidates, workers=2, worker_resources={"CPU": 1})
    assert seen["run"]["workers"] == 2 and seen["resources"] == {"CPU": 1}
    final.final_trial({"candidate": 0, "seed": 5}, candidates)
    assert "workers" not in seen["run"]


@pytest.fixture(scope="module")
def digits():
    return datasets.create_dataset("digits", val_fraction=0.2, seed=0)


def _loader(split, batch, shard=None, shuffle=True, drop_last=True):
    return DeviceLoader(split, batch_size=batch, mean=[0.5], std=[0.25], shuffle=shuffle, seed=3,
                        drop_last=drop_last, shard=shard)


@pytest.mark.parametrize("drop_last", [True, False])
def test_workers_split_each_global_batch_of_one_process(digits, drop_last):
    """Worker r's k-th batch is rows r*B.. of one process's k-th batch at 2B (same x, y, keys);
    a short last training batch is padded from the epoch's start to equal halves."""
    one = _loader(digits.train, 64, drop_last=drop_last)
    parts = [_loader(digits.train, 32, (r, 2), drop_last=drop_last) for r in range(2)]
    for loader in (one, *parts):
        loader.set_epoch(2)
    assert len(parts[0]) == len(parts[1]) == len(one)
    for k, ((x, y, idx), *halves) in enumerate(zip(one, *parts)):
        got_idx = torch.cat([h[2] for h in halves])
        if len(idx) == 64:
            assert torch.equal(got_idx, idx) and torch.equal(torch.cat([h[0] for h in halves]), x)
            assert torch.equal(torch.cat([h[1] for h in halves]), y)
        else:  # the short last batch (drop_last off): padded to two equal halves
            assert not drop_last and len(halves[0][2]) == len(halves[1][2]) == (len(idx) + 1) // 2
            assert torch.equal(got_idx[:len(idx)], idx)


def test_validation_rows_are_split_without_repeats(digits):
    parts = [_loader(digits.val, 512, (r, 2), shuffle=False, drop_last=False) for r in range(2)]
    seen = torch.cat([idx for p in parts for _, _, idx in p])
    assert sorted(seen.tolist()) == list(range(len(digits.val)))


def test_a_shard_must_name_a_worker_of_the_group(digits):
    with pytest.raises(ValueError, match="shard must be"):
        _loader(digits.train, 32, (2, 2))
