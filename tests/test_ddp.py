"""Multi-worker trials (trainables/distributed.py): DDP through Ray Train inside a Tune trial.

The tolerance. A 2-worker trial at per-worker batch B sees the same global batches of 2B rows,
in the same order, from the same initial weights as a 1-worker trial at batch 2B: worker r
takes rows r*B.. of each global batch, and DDP averages the two workers' mean-loss gradients,
which is the 2B-row mean gradient. The two runs differ only in float32 reduction order (a sum
of two half-batch means instead of one full-batch mean; all-reduced epoch sums), about 1e-7
relative per step, compounding over the steps. Measured on digits (1,150 training images, 17
steps an epoch): at most 1.3e-7 relative on train_loss and val_loss (MLP 2x64, 3 epochs) and
3.9e-7 (MLP 2x512, 10 epochs; benchmarks/bench_ddp_teacher). rtol 1e-4 leaves a 250x margin over that
while a real fault (a gradient summed instead of averaged, a worker seeing the other's rows or
every row, a dropped or repeated batch, unsynchronised weights) changes the steps themselves,
not their rounding, so it moves the loss far beyond 1e-4 (not measured fault by fault here).
"""
from __future__ import annotations

import math

import pytest

from kdtune import datasets
from kdtune.trainables import checkpoint, reporting
from kdtune.trainables.teacher import train_teacher

pytestmark = pytest.mark.ray

RTOL = 1e-4
EPOCHS = 4
GLOBAL_BATCH = 64
CONFIG = {"dataset": "digits", "val_fraction": 0.2, "seed": 0, "model": "mlp", "depth": 2, "width": 64,
          "epochs": EPOCHS, "lr": 0.05, "precision": "fp32", "num_threads": 1}


@pytest.fixture(scope="module")
def digits():
    return datasets.create_dataset("digits", val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def one_worker(digits, tmp_path_factory):
    """The reference: today's one-process teacher at the global batch (no Ray)."""
    with reporting.local_session(root=str(tmp_path_factory.mktemp("one"))) as rec:
        train_teacher({**CONFIG, "batch_size": GLOBAL_BATCH}, data=digits)
    return rec


def _curve(results: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in results]


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=RTOL) for x, y in zip(a, b))


def test_two_worker_teacher_in_a_tune_trial_follows_the_one_worker_curve(ray_local, digits, one_worker, tmp_path):
    """The teacher stage's own Tune set-up (Stage(workers=2): the trial holds no CPU, its two
    Ray Train workers one each) reports every epoch with a checkpoint, as a one-process trial."""
    from ray import tune

    from kdtune.search.record import trials as record
    from kdtune.search.stages.tune_stage import Stage, run_stage, worker_resources

    stage = Stage(name="teacher", experiment_dir=tmp_path, num_samples=1, cpus=1, gpus=0, max_failures=0,
                  trainable=tune.with_parameters(train_teacher, data=digits, worker_resources=worker_resources(1, 0)),
                  param_space={**CONFIG, "batch_size": GLOBAL_BATCH // 2, "workers": 2}, workers=2)
    results = run_stage(stage, resume=False)
    result = results[0]
    assert result.error is None, result.error
    rows = result.metrics_dataframe.to_dict("records")
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        assert _close(_curve(rows, key), _curve(one_worker.results, key)), (key, _curve(rows, key),
                                                                             _curve(one_worker.results, key))
    assert rows[0]["images_per_s"] > 0 and rows[-1]["train_loss"] < rows[0]["train_loss"]
    # The best checkpoint is a kdtune checkpoint of the unwrapped model with the split record.
    best = record.stage_record([record.from_result(r, "teacher") for r in results])  # as the pipeline records it
    model, payload = checkpoint.load_model(best["best_checkpoint"])
    ref = checkpoint.load_payload(one_worker.checkpoints[-1])
    assert payload["split"] == ref["split"] and payload["split"] is not None
    assert payload["config"]["workers"] == 2 and payload["epoch"] >= 1
    assert not any(k.startswith("module.") for k in payload["state_dict"])


def test_two_worker_teacher_resumes_from_a_checkpoint(ray_local, digits, one_worker, tmp_path):
    """Resumed from the one-worker run's epoch-2 checkpoint, two workers continue its curve:
    weights, optimiser, schedule, epoch and RNG restored on every worker."""
    with reporting.local_session(resume_from=one_worker.checkpoints[1], root=str(tmp_path)) as rec:
        train_teacher({**CONFIG, "batch_size": GLOBAL_BATCH // 2, "workers": 2}, data=digits)
    assert [int(r["epoch"]) for r in rec.results] == [3, 4]
    for key in ("train_loss", "val_loss"):
        assert _close(_curve(rec.results, key), _curve(one_worker.results[2:], key)), key
    assert len(rec.checkpoints) == 2  # rank 0's, one per epoch
    assert checkpoint.load_payload(rec.checkpoints[-1])["epoch"] == EPOCHS
