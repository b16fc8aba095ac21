"""distill_student inside a real (tiny, local) Ray Tune run: reports, checkpoints, teacher,
and a trial restarted by Tune resuming from its checkpoint."""
import os

import pytest
import ray
from ray import tune

from kdtune import datasets
from kdtune.trainables import checkpoint, reporting
from kdtune.trainables.distill import distill_student
from kdtune.trainables.teacher import train_teacher
from kdtune.trainables.teacher_logits import compute_logits, load_teacher


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_distill_student_in_a_tune_run(local_ray, tmp_path):
    bundle = datasets.create_dataset("digits", seed=0)
    with reporting.local_session(root=str(tmp_path / "teacher")) as rec:
        train_teacher({"epochs": 1, "batch_size": 32, "precision": "fp32"}, data=bundle)
    teacher_ckpt = rec.checkpoints[-1]
    logits = compute_logits(load_teacher(teacher_ckpt), bundle.train, 256, "cpu",
                            mean=bundle.mean, std=bundle.std)
    tuner = tune.Tuner(
        tune.with_parameters(distill_student, data=bundle, teacher_logits=logits),
        param_space={"epochs": 2, "batch_size": 32, "precision": "fp32", "width": 64,
                     "teacher_checkpoint": teacher_ckpt, "alpha": tune.choice([0.5]),
                     "temperature": 4.0},
        tune_config=tune.TuneConfig(num_samples=1, metric=reporting.METRIC, mode=reporting.MODE),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="t", verbose=0),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["val_acc"] > 0.5 and result.metrics["epoch"] == 2
    assert "agreement" in result.metrics
    assert result.checkpoint is not None
    payload = checkpoint.load_payload(result.checkpoint.path)
    assert payload["epoch"] == 2 and payload["config"]["teacher_checkpoint"] == teacher_ckpt


def test_trial_restarted_by_tune_resumes_exactly(local_ray, tmp_path):
    """A trial that dies after epoch 1 is restarted by Tune from its checkpoint, trains only
    epoch 2, and ends with the same metrics as an uninterrupted twin (1 thread each)."""
    bundle = datasets.create_dataset("digits", seed=0)
    marker, log = str(tmp_path / "crashed"), str(tmp_path / "reports.log")

    def flaky(config, data):  # nested: pickled by value into the trial actors
        from kdtune.trainables import distill, reporting
        real = getattr(reporting, "_real_report", reporting.report)
        reporting._real_report = real
        config = dict(config)
        crash = config.pop("crash")
        attempt = "retry" if crash and os.path.exists(marker) else "first"

        def logged_report(metrics, directory):
            with open(log, "a") as f:
                f.write(f"{crash} {attempt} {metrics['epoch']}\n")
            real(metrics, directory)
            if crash and attempt == "first":
                open(marker, "w").close()
                raise RuntimeError("simulated worker loss after epoch 1")

        reporting.report = logged_report
        return distill.distill_student(config, data)

    tuner = tune.Tuner(
        tune.with_parameters(flaky, data=bundle),
        param_space={"epochs": 2, "batch_size": 32, "precision": "fp32", "width": 64,
                     "model_kwargs": {"dropout": 0.1}, "num_threads": 1,
                     "crash": tune.grid_search([False, True])},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="r", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    grid = tuner.fit()
    assert not grid.errors
    reports = open(log).read().split("\n")
    assert [r for r in reports if r.startswith("True")] == ["True first 1", "True retry 2"]
    assert [r for r in reports if r.startswith("False")] == ["False first 1", "False first 2"]
    by_crash = {r.config["crash"]: r for r in grid}
    crashed, clean = by_crash[True].metrics, by_crash[False].metrics
    assert crashed["epoch"] == clean["epoch"] == 2
    for key in ("train_loss", "val_loss", "val_acc"):
        assert crashed[key] == pytest.approx(clean[key], abs=1e-6), key
    # The return value adds no extra result inside Tune (reporting.final): one row per epoch.
    assert by_crash[False].metrics_dataframe["epoch"].tolist() == [1, 2]
