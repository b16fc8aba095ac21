"""The final stage: a retraining run tests its best-val epoch once, and what a search wrote on disk.

The trainable tests are plain calls (no Ray, a few seconds); the stage tests read the shared
`small_search` (conftest.py: --final-seeds 2 --final-top-k 1) back from disk. Resume after
SIGINT during the final stage is in test_reliability.py.
"""
import json
from pathlib import Path

import pytest
import torch

from kdtune import datasets
from kdtune.trainables.best_epoch import best_epoch_file
from kdtune.trainables.checkpoint import load_model
from kdtune.trainables.distill import distill_student
from kdtune.trainables.reporting import local_session
from kdtune.trainables.runtime import resolve_autocast

RETRAIN = {"dataset": "digits", "val_fraction": 0.1, "model": "mlp", "depth": 1, "width": 32, "epochs": 5,
           "lr": 0.05, "alpha": 0.0, "precision": "fp32", "test_best_epoch": True}


def _test_acc(checkpoint: str, bundle) -> float:
    """Accuracy of a saved model on the test split, computed here in fp32 (not by the trial)."""
    model, _ = load_model(checkpoint)
    model.eval()
    loader = datasets.DeviceLoader(bundle.test, batch_size=512, mean=bundle.mean, std=bundle.std)
    with torch.inference_mode():
        pred = torch.cat([model(x).argmax(1) for x, _y, _i in loader])
    return float((pred == bundle.test.labels).float().mean())


def _first_best(rows: list[dict]) -> dict:
    """The epoch with the highest val_acc, the earliest on ties."""
    return max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))


@pytest.fixture(scope="module")
def retrained(bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    with local_session(root=str(root)) as rec:
        last = distill_student(dict(RETRAIN), data=bundle)
    return rec, last


def test_retraining_run_tests_its_best_val_epoch_once(retrained, bundle):
    rec, last = retrained
    assert [r["epoch"] for r in rec.results] == [1, 2, 3, 4, 5]
    # Only the last report carries test metrics: the test split is evaluated once.
    assert all("test_acc" not in r for r in rec.results[:-1])
    best = _first_best(rec.results)
    assert last["best_epoch"] == best["epoch"] and last["best_val_acc"] == best["val_acc"]
    saved = best_epoch_file(rec.checkpoints[-1])
    model_epoch = torch.load(saved, weights_only=True)["epoch"]
    assert model_epoch == best["epoch"]
    assert last["test_acc"] == pytest.approx(_test_acc(saved, bundle), abs=1e-6)
    assert 0.5 < last["test_acc"] <= 1.0 and last["test_loss"] > 0


def test_resumed_retraining_run_keeps_the_best_epoch_it_had_seen(retrained, bundle, tmp_path):
    rec, last = retrained
    with local_session(resume_from=rec.checkpoints[2], root=str(tmp_path)) as again:  # after epoch 3
        resumed = distill_student(dict(RETRAIN), data=bundle)
    assert [r["epoch"] for r in again.results] == [4, 5]
    for key in ("best_epoch", "best_val_acc", "test_acc", "test_loss"):
        assert resumed[key] == pytest.approx(last[key]), key


def test_search_configs_do_not_touch_the_test_split(bundle):
    with local_session() as rec:
        distill_student({**RETRAIN, "test_best_epoch": False, "epochs": 1}, data=bundle)
    assert "test_acc" not in rec.results[-1] and "best_epoch" not in rec.results[-1]


# ---- the stage, as a search wrote it ------------------------------------------------------------
def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _rows(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]


def test_final_stage_retrains_baseline_and_top_k_over_seeds_on_disk(small_search):
    manifest = _manifest(small_search)
    spec, final = manifest["spec"], manifest["stages"]["final"]
    assert final["status"] == "done"
    assert final["seeds"] == [spec["seed"] + 1000 + i for i in range(spec["final_seeds"])]
    assert [r["role"] for r in final["results"]] == ["baseline"] + [
        f"distilled #{i}" for i in range(1, spec["final_top_k"] + 1)] + ["twin of distilled #1"]
    # The distilled candidate: of the trials ASHA let run longest, the best by val_acc.
    distill = [t for t in manifest["stages"]["distill"]["trials"] if not t["diverged"]]
    longest = max(t["epochs"] for t in distill)
    pick = max((t for t in distill if t["epochs"] == longest), key=lambda t: t["val_acc"])
    assert final["candidates"][1]["source_trial"] == pick["trial_id"]
    trials = sorted(p for p in (small_search / "final").iterdir() if (p / "result.json").is_file())
    assert len(trials) == len(final["results"]) * spec["final_seeds"]
    for trial in trials:  # no early stopping: every run trains the full budget, tested at the end only
        rows = _rows(trial)
        assert [r["epoch"] for r in rows] == list(range(1, spec["max_epochs"] + 1)), trial.name
        assert ["test_acc" in r for r in rows] == [False] * (len(rows) - 1) + [True], trial.name
        best = _first_best(rows)
        assert rows[-1]["best_epoch"] == best["epoch"] and rows[-1]["best_val_acc"] == best["val_acc"]


def test_final_stage_numbers_read_back_from_its_checkpoints(small_search):
    final = _manifest(small_search)["stages"]["final"]
    spec = _manifest(small_search)["spec"]
    bundle = datasets.create_dataset(spec["dataset"], val_fraction=spec["val_fraction"], seed=spec["seed"])
    # The trials ran under the preset's precision: bf16 autocast where the CPU has it may flip a few images.
    tol = 1e-6 if resolve_autocast("auto", torch.device("cpu")) is None else 0.02
    for row in final["results"]:
        runs = row["runs"]
        assert len(runs) == row["seeds"] == spec["final_seeds"] and {r["seed"] for r in runs} == set(final["seeds"])
        for run in runs:
            assert run["test_acc"] == pytest.approx(_test_acc(run["checkpoint"], bundle), abs=tol)
            assert torch.load(run["checkpoint"], weights_only=True)["epoch"] == run["best_epoch"]
        tests = torch.tensor([r["test_acc"] for r in runs], dtype=torch.float64)
        assert row["test_acc_mean"] == pytest.approx(float(tests.mean()))
        assert row["test_acc_sd"] == pytest.approx(float(tests.std()))  # torch: ddof 1
        model, _ = load_model(runs[0]["checkpoint"])
        assert row["params"] == sum(p.numel() for p in model.parameters())
    base, kd = final["results"][0], final["results"][1]
    gain = kd["kd_gain_test"]
    assert gain["diff"] == pytest.approx(kd["test_acc_mean"] - base["test_acc_mean"])
    assert gain["method"] == "Welch's t interval" and gain["confidence"] == 0.95
    assert gain["low"] <= gain["diff"] <= gain["high"]


def test_each_distilled_config_is_paired_with_its_undistilled_twin(small_search):
    """The twin: the distilled config's architecture, recipe and seeds, CE only, no teacher;
    its gain is the paired t interval on the per-seed test differences."""
    final = _manifest(small_search)["stages"]["final"]
    rows = {r["role"]: r for r in final["results"]}
    kd, twin = rows["distilled #1"], rows["twin of distilled #1"]
    cands = {c["role"]: c["config"] for c in final["candidates"]}
    kd_cfg, twin_cfg = cands["distilled #1"], cands["twin of distilled #1"]
    assert twin["source_stage"] == "twin" and twin["twin_of"] == ["distilled #1"] and kd["twin"] == twin["role"]
    assert twin_cfg["alpha"] == 0.0 and twin_cfg["kd_method"] == "kd" and "teacher_checkpoint" not in twin_cfg
    assert kd_cfg.get("teacher_checkpoint") or kd_cfg.get("online_teacher")
    same = ("model", "depth", "width", "lr", "weight_decay", "epochs", "batch_size")
    assert {k: twin_cfg.get(k) for k in same} == {k: kd_cfg.get(k) for k in same}
    assert twin["params"] == kd["params"] and {r["seed"] for r in twin["runs"]} == set(final["seeds"])
    diffs = {r["seed"]: r["test_acc"] for r in kd["runs"]}
    diffs = [diffs[r["seed"]] - r["test_acc"] for r in twin["runs"]]
    gain = kd["kd_gain_twin"]
    assert gain["method"] == "paired t interval on per-seed differences" and gain["pairs"] == len(diffs)
    assert gain["diff"] == pytest.approx(sum(diffs) / len(diffs))
    if gain["low"] is not None:
        assert gain["low"] <= gain["diff"] <= gain["high"]


def test_summary_headline_is_the_final_stage(small_search):
    summary = (small_search / "summary.md").read_text()
    final = _manifest(small_search)["stages"]["final"]
    head = summary.index("## Final stage")
    assert head < summary.index("## Search") < summary.index("| best distilled |")
    headline = next(line for line in summary.splitlines() if line.startswith("**Final (TEST split"))
    kd = next(r for r in final["results"] if r["role"] == final["headline"])
    assert f"{100 * kd['test_acc_mean']:.2f} ± {100 * kd['test_acc_sd']:.2f}%" in headline
    gain = kd["kd_gain_test"]
    assert f"{100 * gain['diff']:+.2f} pts [{100 * gain['low']:+.2f}, {100 * gain['high']:+.2f}]" in headline
    assert "95% CI, Welch's t interval" in headline
    assert "KD gain on test over its undistilled twin" in headline and "over the best baseline" in headline
    assert "| twin of distilled #1 |" in summary and "CE only (no teacher)" in summary
