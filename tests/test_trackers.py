"""--tracker mlflow / wandb: the runs read back with MLflow's and W&B's own files and APIs."""
import json

import pytest
import ray
import yaml
from ray import tune

from kdtune.search.run_kd_search import main
from kdtune.search.tune.trackers import mlflow_uri, tracker_callbacks


def test_mlflow_holds_one_run_per_trial_with_params_and_epoch_metrics(small_search):
    import mlflow

    spec = json.loads((small_search / "manifest.json").read_text())["spec"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(small_search))
    mlflow.set_tracking_uri(mlflow_uri(small_search))
    runs = mlflow.search_runs(experiment_names=[f"{small_search.name}/distill"], output_format="list")
    assert len(runs) == spec["num_samples"]
    results = {}
    for path in (small_search / "distill").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        results[rows[0]["trial_id"]] = rows
    for run in runs:
        trial_id = run.data.tags["trial_name"].rsplit("_", 1)[-1]
        rows = results[trial_id]
        assert float(run.data.params["lr"]) == pytest.approx(rows[-1]["config"]["lr"])
        history = client.get_metric_history(run.info.run_id, "val_acc")
        # One point per reported epoch, at step = epoch, the values result.json holds.
        assert [(m.step, m.value) for m in history] == [(r["training_iteration"], pytest.approx(r["val_acc"]))
                                                        for r in rows]
    baseline = mlflow.search_runs(experiment_names=[f"{small_search.name}/baseline"], output_format="list")
    assert len(baseline) == spec["baseline_samples"]


def _three_epochs(config):
    for epoch in range(1, 4):
        tune.report({"val_acc": config["lr"] * epoch, "epoch": epoch})


@pytest.mark.ray
def test_wandb_offline_writes_run_files_per_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(tune.with_resources(_three_epochs, {"cpu": 1}),
                           param_space={"lr": tune.grid_search([0.1, 0.2])},
                           run_config=tune.RunConfig(name="distill", storage_path=str(tmp_path), verbose=0,
                                                     callbacks=tracker_callbacks("wandb", tmp_path, "distill")))
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    assert not results.errors
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, sorted(p.name for p in (tmp_path / "wandb").iterdir())
    for trial in results:
        # The run's record log (what `wandb sync` uploads): protobuf records whose history items
        # carry each metric as JSON text, so every epoch's val_acc is there verbatim.
        tid = trial.metrics["trial_id"]
        (run,) = (tmp_path / "wandb").glob(f"offline-run-*-{tid}")
        records = (run / f"run-{tid}.wandb").read_bytes()
        lr = trial.config["lr"]
        for epoch in (1, 2, 3):
            assert json.dumps(lr * epoch).encode() in records, (run.name, epoch)
        assert b"val_acc" in records and b"training_iteration" in records


def test_tracker_without_its_package_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["--tracker", "mlflow", "--storage-path", str(tmp_path), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["run_kd_search.py: error: --tracker mlflow needs the mlflow package: "
                   "pip install -e '.[mlflow]'"], err
    assert not (tmp_path / "x").exists()
