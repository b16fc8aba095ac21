"""End-to-end: the search service on digits, read back through Ray's own result classes.

These start Ray (4 s) and run real trials, at most 2 at a time (24 GiB CI machine, STACK_NOTES).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import tune

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "search" / "run_kd_search.py"
# Small but real: 6 distillation trials so ASHA (grace 1, rf 3) has a rung to cut at.
FAST = ["--num-samples", "6", "--baseline-samples", "3", "--max-epochs", "6", "--grace-period", "1",
        "--reduction-factor", "3", "--teacher-epochs", "4", "--max-concurrent", "2", "--width", "16:64",
        "--depth", "1:2"]


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _trial_dirs(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.iterdir() if p.is_dir() and (p / "result.json").exists())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from search.run_kd_search import main

    storage = tmp_path_factory.mktemp("runs")
    code = main(FAST + ["--storage-path", str(storage), "--name", "e2e"])
    assert code == 0
    return storage / "e2e"


def test_all_stages_write_manifest_results_and_tensorboard_events(finished_run):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "digits"
    assert manifest["git_revision"]
    for stage in ("teacher", "baseline", "distill"):
        info = manifest["stages"][stage]
        assert info["status"] == "done", stage
        assert Path(info["best_checkpoint"]).is_file()
        assert info["metrics"]["val_acc"] > 0.5  # 10 classes: chance is 0.1
        assert list((finished_run / stage).rglob("events.out.tfevents*")), f"no TensorBoard events in {stage}"
    assert len(_trial_dirs(finished_run / "distill")) == 6
    assert len(_trial_dirs(finished_run / "baseline")) == 3
    summary = (finished_run / "summary.md").read_text()
    assert "best distilled" in summary and "tensorboard --logdir" in summary


def test_asha_stopped_a_trial_early(finished_run):
    epochs = [len(_rows(d)) for d in _trial_dirs(finished_run / "distill")]
    assert max(epochs) == 6
    assert min(epochs) < 6, epochs


def test_best_config_read_back_with_rays_result_grid(finished_run):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    analysis = tune.ExperimentAnalysis(str(finished_run / "distill"))
    best = analysis.get_best_config(metric="val_acc", mode="max", scope="all")
    recorded = manifest["stages"]["distill"]["config"]
    for key in ("alpha", "temperature", "lr", "depth", "width"):
        assert best[key] == pytest.approx(recorded[key])
    assert 0.0 <= best["alpha"] <= 1.0 and best["teacher_checkpoint"].endswith("checkpoint.pt")


def test_baseline_trials_have_no_teacher(finished_run):
    for trial in _trial_dirs(finished_run / "baseline"):
        config = json.loads((trial / "params.json").read_text())
        assert config["alpha"] == 0.0 and "teacher_checkpoint" not in config


def _wait_for(predicate, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_resume_after_sigint_reruns_no_finished_trial(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(CLI), *FAST, "--max-epochs", "12", "--width", "256:512",
            "--storage-path", str(tmp_path), "--name", "cut"]
    exp = tmp_path / "cut"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = _wait_for(lambda: (exp / "distill").is_dir() and len(_trial_dirs(exp / "distill")) >= 1, 240)
        assert started, "distill stage never started"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-2000:]
    assert "--resume" in out
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["status"] == "done"
    assert manifest["stages"]["distill"]["status"] != "done"
    teacher_rows = _rows(_trial_dirs(exp / "teacher")[0])
    before = {d.name: len(_rows(d)) for d in _trial_dirs(exp / "distill")}

    done = subprocess.run([sys.executable, str(CLI), "--resume", "--storage-path", str(tmp_path), "--name", "cut"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert _rows(_trial_dirs(exp / "teacher")[0]) == teacher_rows  # teacher not re-trained
    trials = _trial_dirs(exp / "distill")
    assert len(trials) == 6
    for trial in trials:
        iterations = [row["training_iteration"] for row in _rows(trial)]
        # A re-run trial would report epoch 1 again; resumed ones continue where they stopped.
        assert iterations == sorted(set(iterations)), (trial.name, iterations)
        assert len(iterations) >= before.get(trial.name, 0)
    assert json.loads((exp / "manifest.json").read_text())["stages"]["distill"]["status"] == "done"


def test_two_node_cluster_places_trials_on_both_nodes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from search.run_kd_search import main

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        code = main(["--address", cluster.address, "--num-samples", "4", "--baseline-samples", "2",
                     "--max-epochs", "3", "--grace-period", "3", "--teacher-epochs", "2", "--max-concurrent", "2",
                     "--storage-path", str(tmp_path), "--name", "multi"])
        assert code == 0
        nodes = {row["node_id"] for trial in _trial_dirs(tmp_path / "multi" / "distill") for row in _rows(trial)}
        assert len(nodes) == 2, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
