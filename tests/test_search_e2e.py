"""End-to-end: the search service on digits, read back through Ray's own result classes.

These start Ray (4 s) and run real trials, at most 2 at a time (~840 MiB per trial actor on a
24 GiB CI machine: docs/architecture.md).
Interrupts and `--resume` are covered in test_reliability.py.
"""
import json
from pathlib import Path

import pytest
from ray import tune

pytestmark = pytest.mark.ray


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _trial_dirs(stage_dir: Path) -> list[Path]:
    """The stage's trial folders; none is a failure, so a check looping over them cannot pass empty."""
    dirs = sorted(p for p in stage_dir.iterdir() if p.is_dir() and (p / "result.json").exists())
    assert dirs, f"no trial folders with results in {stage_dir}"
    return dirs


@pytest.fixture(scope="module")
def finished_run(small_search):
    """The session's small finished search (conftest.small_search): 6 distillation trials, 3 baselines."""
    return small_search


def _spec(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["spec"]


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
        assert info["wall_s"] > 0, stage  # the attempt that finished the stage
    build = manifest["cache_builds"][0]  # digits: no augmentation, one row per image
    assert not build["views"] and build["seconds"] > 0 and build["teacher"] == manifest["stages"]["teacher"]["best_checkpoint"]
    assert len(_trial_dirs(finished_run / "distill")) == 6
    assert len(_trial_dirs(finished_run / "baseline")) == 3
    summary = (finished_run / "summary.md").read_text()
    assert "best distilled" in summary and "tensorboard --logdir" in summary


def test_asha_stopped_a_trial_early(finished_run):
    max_epochs = _spec(finished_run)["max_epochs"]
    epochs = [len(_rows(d)) for d in _trial_dirs(finished_run / "distill")]
    assert max(epochs) == max_epochs
    assert min(epochs) < max_epochs, epochs
    # Successive halving's budget (search/tune/capped_asha.py): 6 trials x 1 epoch, the best 2 on to epoch
    # 3, the best of those to 4. (Ray's ASHA lets the first arrival at each rung run on.)
    assert sum(epochs) <= 6 * 1 + 2 * 2 + 1 * 1, epochs


def test_saved_experiment_state_has_every_trial_ended(finished_run):
    # Trials stopped while paused at a rung must be saved TERMINATED + done, or a resume
    # (and analysis' "stopped early") would take them for unfinished.
    for stage in ("baseline", "distill"):
        analysis = tune.ExperimentAnalysis(str(finished_run / stage))
        assert {t.status for t in analysis.trials} == {"TERMINATED"}, stage
        assert all(t.last_result.get("done") for t in analysis.trials), stage


def test_paused_trials_resumed_from_their_checkpoints_report_each_epoch_once(finished_run):
    for trial in _trial_dirs(finished_run / "distill"):
        iterations = [row["training_iteration"] for row in _rows(trial)]
        assert iterations == list(range(1, len(iterations) + 1)), (trial.name, iterations)


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


def test_two_node_cluster_places_trials_on_both_nodes(tmp_path, capsys):
    import ray
    from ray.cluster_utils import Cluster

    from kdtune.search.run_kd_search import main

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        code = main(["--address", cluster.address, "--num-samples", "4", "--baseline-samples", "2",
                     "--max-epochs", "3", "--grace-period", "3", "--teacher-epochs", "2", "--max-concurrent", "2",
                     "--final-seeds", "0",
                     "--storage-path", str(tmp_path), "--name", "multi"])
        assert code == 0
        nodes = {row["node_id"] for trial in _trial_dirs(tmp_path / "multi" / "distill") for row in _rows(trial)}
        assert len(nodes) == 2, nodes
        # The teacher-logit cache (val + train parts) was built by a task on each node.
        out = capsys.readouterr().out
        assert "2 part(s) to compute, 0 saved, in 2 task(s)" in out and "on 2 node(s)" in out, out
    finally:
        ray.shutdown()
        cluster.shutdown()
