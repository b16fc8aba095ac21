"""analysis/ scripts on a real (small) finished search, checked against Tune's own files.

They run on the session's small finished search (conftest.small_search: the real CLI, ASHA
with rungs to cut at, gradient-norm tracking on); every number the scripts print is then
recomputed here independently from the trials' result.json files or the checkpoints.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdtune.analysis import best_trials, final_report, importance, learning_curves, tradeoffs
from kdtune.search.tune.nondominated import pareto_mask

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = (best_trials, tradeoffs, final_report, importance, learning_curves)


def _results(stage_dir: Path) -> dict[str, list[dict]]:
    """trial_id -> its result.json rows, read without Ray."""
    out = {}
    for path in sorted(stage_dir.glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    assert out, f"no trial results in {stage_dir}"  # a loop over them must not pass empty
    return out


def _best(rows: list[dict]) -> dict:
    return max((r for r in rows if r.get("val_acc") is not None), key=lambda r: r["val_acc"])


def _copy_run(exp: Path, dest: Path, stages: tuple[str, ...], edit) -> Path:
    """A copy of `exp` holding only `stages`' folders, its manifest's stages changed by `edit`."""
    dest.mkdir()
    for stage in stages:
        shutil.copytree(exp / stage, dest / stage)
    manifest = json.loads((exp / "manifest.json").read_text())
    edit(manifest["stages"])
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _png_ok(path: Path) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 5_000, f"{path} looks empty"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def exp(small_search) -> Path:
    """The shared small search (conftest.small_search), gradient norms tracked."""
    return small_search


@pytest.fixture(scope="module")
def max_epochs(exp) -> int:
    return json.loads((exp / "manifest.json").read_text())["spec"]["max_epochs"]


@pytest.fixture(scope="module")
def teacher_params(exp) -> int:
    (rows,) = _results(exp / "teacher").values()
    return rows[-1]["params"]


def test_best_trials_match_tune_results(exp, teacher_params, max_epochs, capsys):
    assert best_trials.main([str(exp), "--top", "3"]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(exp / "analysis" / "best_trials.csv", dtype={"trial_id": str})
    assert (exp / "analysis" / "best_trials.md").read_text().strip() in out
    for stage in ("teacher", "baseline", "distill"):
        assert f"## {stage}" in out
        results = _results(exp / stage)
        rows = table[table["stage"] == stage].sort_values("rank")
        assert len(rows) == len(results)
        # The top row is the true best val_acc over every epoch of every trial of the stage.
        best_id, best_rows = max(results.items(), key=lambda kv: _best(kv[1])["val_acc"])
        top = rows.iloc[0]
        assert top["trial_id"] == best_id
        assert top["val_acc"] == pytest.approx(_best(best_rows)["val_acc"], abs=1e-9)
        assert rows["val_acc"].is_monotonic_decreasing
        for _, row in rows.iterrows():
            trial = results[row["trial_id"]]
            best = _best(trial)
            assert row["val_loss"] == pytest.approx(best["val_loss"])  # metrics of the best epoch
            assert row["params"] == best["params"]
            epochs = max(r["epoch"] for r in trial)
            assert row["epochs"] == epochs
            if stage != "teacher":
                assert row["reduction_pct"] == pytest.approx(100 * (1 - best["params"] / teacher_params))
                diverged = any(r.get("diverged") for r in trial)
                assert bool(row["stopped_early"]) == (epochs < max_epochs and not diverged)
    assert table[table["stage"] == "distill"]["stopped_early"].any(), "ASHA should have cut a trial"


def test_pareto_mask_on_known_points():
    acc = [0.9, 0.8, 0.85, 0.9, 0.7, float("nan")]
    cost = [100, 10, 50, 100, 10, 1]
    # 0 and 3 tie (both kept), 4 is dominated by 1, NaN never on the front.
    assert pareto_mask(acc, cost).tolist() == [True, True, True, True, False, False]


def test_tradeoffs_front_is_non_dominated_and_complete(exp, teacher_params, capsys):
    assert tradeoffs.main([str(exp)]) == 0
    assert tradeoffs.main([str(exp), "--color", "temperature", "--out", str(exp / "analysis_T")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out
    df = pd.read_csv(exp / "analysis" / "tradeoffs.csv", dtype={"trial_id": str})
    expected = {**_results(exp / "baseline"), **_results(exp / "distill")}
    assert sorted(df["trial_id"]) == sorted(expected)
    for tid, rows in expected.items():
        assert df.set_index("trial_id").at[tid, "val_acc"] == pytest.approx(_best(rows)["val_acc"])
    assert df["reduction_pct"].tolist() == pytest.approx([100 * (1 - p / teacher_params) for p in df["params"]])
    for cost in ("params", "flops"):
        on = df[df[f"on_front_{cost}"]]
        assert df.loc[df["val_acc"].idxmax(), f"on_front_{cost}"]  # the most accurate student
        for _, p in df.iterrows():
            dominated = ((df["val_acc"] >= p["val_acc"]) & (df[cost] <= p[cost])
                         & ((df["val_acc"] > p["val_acc"]) | (df[cost] < p[cost]))).any()
            assert p[f"on_front_{cost}"] == (not dominated)
        assert len(on) >= 1
    for folder in ("analysis", "analysis_T"):
        _png_ok(exp / folder / "tradeoffs_params.png")
        _png_ok(exp / folder / "tradeoffs_flops.png")


def test_final_report_teacher_matches_an_independent_test_evaluation(search_only, teacher_params):
    from kdtune import datasets
    from kdtune.trainables.checkpoint import load_model

    exp = search_only
    assert final_report.main([str(exp), "--repeats", "3"]) == 0
    table = pd.read_csv(exp / "analysis" / "final_report.csv").set_index("role")
    assert list(table.index) == ["teacher", "student baseline", "student distilled"]

    manifest = json.loads((exp / "manifest.json").read_text())
    spec = manifest["spec"]
    bundle = datasets.create_dataset(spec["dataset"], spec["data_dir"], val_fraction=spec["val_fraction"],
                                     seed=spec["seed"], subset=spec["subset"])
    model, _ = load_model(manifest["stages"]["teacher"]["best_checkpoint"])
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model.eval()((bundle.test.images.float() / 255 - mean) / std)
    acc = (logits.argmax(1) == bundle.test.labels).float().mean().item()
    assert table.at["teacher", "test_acc"] == pytest.approx(acc, abs=1e-6)
    assert table.at["teacher", "test_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, bundle.test.labels).item(), rel=1e-4)
    assert table.at["teacher", "params"] == teacher_params
    for role in ("student baseline", "student distilled"):
        assert table.at[role, "reduction_pct"] == pytest.approx(100 * (1 - table.at[role, "params"] / teacher_params))
        assert table.at[role, "cpu_ms"] > 0
    gain = 100 * (table.at["student distilled", "test_acc"] - table.at["student baseline", "test_acc"])
    assert table.at["student distilled", "kd_gain_pts"] == pytest.approx(gain)
    # The students evaluated are the stage winners the manifest recorded (chosen on val).
    assert table.at["student distilled", "trial"] == manifest["stages"]["distill"]["trial_id"]
    per_class = pd.read_csv(exp / "analysis" / "classification_report.csv").set_index("class")
    assert per_class.at["accuracy", "f1-score"] == pytest.approx(table.at["student distilled", "test_acc"])
    assert per_class.loc[[str(c) for c in bundle.class_names], "support"].sum() == len(bundle.test)
    _png_ok(exp / "analysis" / "confusion_matrix.png")


def test_final_report_reads_the_final_stage(exp):
    assert final_report.main([str(exp), "--repeats", "3"]) == 0
    final = json.loads((exp / "manifest.json").read_text())["stages"]["final"]
    table = pd.read_csv(exp / "analysis" / "final_report.csv").set_index("role")
    runs = {f"{r['role']} seed {run['seed']}": run for r in final["results"] for run in r["runs"]}
    assert list(table.index) == ["teacher", *runs]  # every retrained model, not the search's winners
    for role, run in runs.items():
        # Recomputed here from the checkpoint the stage tested (fp32) vs the stage's own in-trial number.
        assert table.at[role, "test_acc"] == pytest.approx(run["test_acc"], abs=0.02)
        assert table.at[role, "val_acc"] == pytest.approx(run["val_acc"])
    configs = pd.read_csv(exp / "analysis" / "final_seeds.csv").set_index("config")
    assert list(configs.index) == [r["role"] for r in final["results"]]
    for row in final["results"]:
        tests = table.loc[[f"{row['role']} seed {s}" for s in final["seeds"]], "test_acc"]
        assert configs.at[row["role"], "test_acc_mean"] == pytest.approx(tests.mean())
        assert configs.at[row["role"], "test_acc_sd"] == pytest.approx(tests.std())  # pandas: ddof 1
        assert configs.at[row["role"], "seeds"] == len(final["seeds"])
    base, kd = configs.loc["baseline"], configs.loc["distilled #1"]
    assert kd["kd_gain_pts"] == pytest.approx(100 * (kd["test_acc_mean"] - base["test_acc_mean"]))
    assert kd["ci_low_pts"] <= kd["kd_gain_pts"] <= kd["ci_high_pts"]
    assert "## Final stage: each config over 2 seeds" in (exp / "analysis" / "final_report.md").read_text()
    per_class = pd.read_csv(exp / "analysis" / "classification_report.csv").set_index("class")
    # Pooled over the headline config's seeds: equal-sized test sets, so the mean accuracy.
    assert per_class.at["accuracy", "f1-score"] == pytest.approx(configs.at[final["headline"], "test_acc_mean"])
    _png_ok(exp / "analysis" / "confusion_matrix.png")


def test_importance_covers_the_sampled_params(exp, capsys):
    from optuna.trial import TrialState

    from kdtune.search.tune.optuna_study import load_study

    assert importance.main([str(exp)]) == 0
    table = pd.read_csv(exp / "analysis" / "importance.csv")
    # fANOVA runs on the distill study's COMPLETE trials: the params that varied among those.
    complete = load_study(exp / "distill", "distill").get_trials(states=(TrialState.COMPLETE,))
    if len(complete) < importance.MIN_TRIALS:
        pytest.skip(f"only {len(complete)} COMPLETE trials: tests/test_study.py checks the note")
    varied = {k for k in importance.PARAMS if len({t.params.get(k) for t in complete}) > 1}
    assert {"alpha", "temperature", "lr", "width"} <= varied  # sampled by this search
    scored = table[table["varied"]]
    assert set(scored["param"]) == varied
    assert scored["importance"].sum() == pytest.approx(1.0, abs=1e-6)
    assert (scored["importance"] >= 0).all()
    _png_ok(exp / "analysis" / "importance.png")
    _png_ok(exp / "analysis" / "importance_alpha_T.png")


def test_learning_curves_and_gradient_norms(exp):
    assert learning_curves.main([str(exp)]) == 0
    curves = pd.read_csv(exp / "analysis" / "learning_curves.csv", dtype={"trial_id": str})
    for stage in ("teacher", "baseline", "distill"):
        for tid, rows in _results(exp / stage).items():
            got = curves[(curves["stage"] == stage) & (curves["trial_id"] == tid)]
            assert got["val_acc"].tolist() == pytest.approx([r["val_acc"] for r in rows])
    grads = pd.read_csv(exp / "analysis" / "grad_norms.csv", dtype={"trial_id": str})
    tid, rows = next(iter(_results(exp / "distill").items()))
    layers = [k for k in rows[0] if k.startswith("grad_norm/")]
    mine = grads[grads["trial_id"] == tid].sort_values("layer_index")
    assert mine["layer"].tolist() == [k.split("/", 1)[1] for k in layers]  # input -> output order
    assert mine["mean_grad_norm"].tolist() == pytest.approx([sum(r[k] for r in rows) / len(rows) for k in layers])
    _png_ok(exp / "analysis" / "learning_curves.png")
    _png_ok(exp / "analysis" / "grad_norms.png")


def test_scripts_work_on_a_search_still_running(exp, tmp_path, capsys):
    """Only teacher + baseline on disk, distill pending: distill is skipped with a note."""
    def pending(stages):
        stages["distill"] = {"status": "pending"}
        stages["final"] = {"status": "pending"}

    partial = _copy_run(exp, tmp_path / "running", ("teacher", "baseline"), pending)
    for script in SCRIPTS:
        assert script.main([str(partial), "--repeats", "2"] if script is final_report else [str(partial)]) == 0
    out = capsys.readouterr().out
    assert "stage distill: skipped, not started" in out
    table = pd.read_csv(partial / "analysis" / "final_report.csv")
    assert list(table["role"]) == ["teacher", "student baseline"]
    _png_ok(partial / "analysis" / "confusion_matrix.png")  # best student = the baseline here


def test_an_adopted_teacher_is_noted_as_adopted_not_as_unstarted(exp, tmp_path, capsys):
    """A --teacher-checkpoint run has no teacher folder by design: the note says so."""
    def adopt(stages):
        stages["teacher"] = {"status": "done", "source": "--teacher-checkpoint",
                             "best_checkpoint": stages["teacher"]["best_checkpoint"]}
        stages.pop("final", None)

    adopted = _copy_run(exp, tmp_path / "adopted", ("baseline", "distill"), adopt)
    assert final_report.main([str(adopted), "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "stage teacher: adopted from --teacher-checkpoint" in out
    assert "stage teacher: skipped" not in out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__.split(".")[-1])
def test_help_and_missing_experiment_dir(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0
    assert "experiment_dir" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        script.main([str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and err[0].startswith(script.__name__.split(".")[-1] + ".py")


def test_runs_as_a_plain_script(tmp_path):
    """`python analysis/<script>.py` from a checkout: no package install or PYTHONPATH needed."""
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "best_trials.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"best_trials.py: error: {tmp_path} holds no kdtune run "
                                                 f"(no manifest.json)"]
