"""search/tune/optuna_searcher.py: Optuna hears PRUNED for every trial shorter than max_epochs.

The searcher is driven the way Tune drives it (on_trial_result for results the scheduler let
go on, on_trial_complete with the stopping result or none), then a finished search's study,
read back from its searcher state, is checked against every trial's result.json.
"""
import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from kdtune.search.tune.optuna_searcher import FidelityOptunaSearch, study_trials_by_ray_id
from kdtune.search.tune.ray_adapter import load_study, optuna_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)


def _row(epoch, acc, **extra):
    return {"training_iteration": epoch, "epoch": epoch, "val_acc": acc, "params": 1000, **extra}


def _drive(searcher):
    """Five trials as Tune would end them, with max_epochs 4."""
    for tid in "abcde":
        searcher.suggest(tid)
    # a: promoted at epoch 1 and 3, stopped by the scheduler at max_t (epoch 4).
    for e, acc in ((1, 0.5), (2, 0.6), (3, 0.7)):
        searcher.on_trial_result("a", _row(e, acc))
    searcher.on_trial_complete("a", result=_row(4, 0.8, done=True))
    # b: stopped on its epoch-1 result (that result goes to on_trial_complete only).
    searcher.on_trial_complete("b", result=_row(1, 0.3, done=True))
    # c: paused at epoch 1, later stopped while paused: no result with the completion.
    searcher.on_trial_result("c", _row(1, 0.4))
    searcher.on_trial_complete("c")
    # d: diverged in epoch 2 (the trainable reports val_acc 0.0 with diverged=1).
    searcher.on_trial_result("d", _row(1, 0.45))
    searcher.on_trial_complete("d", result=_row(2, 0.0, diverged=1, stop_reason="diverged at epoch 2: nan loss"))
    # e: raised an error (out of retries).
    searcher.on_trial_complete("e", error=True)
    return study_trials_by_ray_id(optuna_study(searcher))


def test_states_follow_epochs_run_single_objective():
    searcher = FidelityOptunaSearch(space=space, metric="val_acc", mode="max", max_epochs=4,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    t = _drive(searcher)
    assert {k: v.state for k, v in t.items()} == {
        "a": TrialState.COMPLETE, "b": TrialState.PRUNED, "c": TrialState.PRUNED,
        "d": TrialState.PRUNED, "e": TrialState.FAIL}
    assert t["a"].value == 0.8 and t["a"].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}
    assert t["b"].intermediate_values == {1: 0.3} and t["c"].intermediate_values == {1: 0.4}
    assert t["d"].intermediate_values == {1: 0.45}  # the diverged epoch's 0.0 is no value
    assert [t[k].user_attrs["epochs"] for k in "abcde"] == [4, 1, 1, 2, 0]
    assert [t[k].user_attrs["stop_reason"] for k in "abce"] == ["max_epochs", "early_stopped",
                                                                 "early_stopped", "error"]
    assert t["d"].user_attrs["stop_reason"] == "diverged at epoch 2: nan loss"
    # Told once: a second completion (Tune after a pause, say) changes nothing.
    searcher.on_trial_complete("b", result=_row(4, 0.99))
    assert optuna_study(searcher).trials[1].state == TrialState.PRUNED


@pytest.mark.parametrize("metric", ["val_acc", ["val_acc", "params"]])
def test_a_complete_trial_tells_optuna_its_best_epoch_as_everywhere_else(metric):
    """The value Optuna ranks is the best epoch's val_acc, the one the manifest, the final
    stage's choice and the analysis use (trial_outcome.best_epoch), not the last epoch's."""
    mode = "max" if metric == "val_acc" else ["max", "min"]
    searcher = FidelityOptunaSearch(space=space, metric=metric, mode=mode, max_epochs=4,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.suggest("a")
    for e, acc in ((1, 0.5), (2, 0.8), (3, 0.7)):
        searcher.on_trial_result("a", _row(e, acc))
    searcher.on_trial_complete("a", result=_row(4, 0.6, done=True))
    (trial,) = optuna_study(searcher).trials
    assert trial.state == TrialState.COMPLETE and trial.values[0] == 0.8


def test_multi_objective_prunes_without_values_and_keeps_the_curve():
    searcher = FidelityOptunaSearch(space=space, metric=["val_acc", "params"], mode=["max", "min"],
                                    max_epochs=4, sampler=optuna.samplers.RandomSampler(seed=0))
    t = _drive(searcher)
    assert [t[k].state for k in "abcde"] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 3 + [TrialState.FAIL]
    assert t["a"].values == [0.8, 1000.0]
    assert t["b"].values is None and t["b"].user_attrs["val_acc_by_epoch"] == {"1": 0.3}
    assert t["d"].user_attrs["val_acc_by_epoch"] == {"1": 0.45}
    assert [b.user_attrs["trial_id"] for b in optuna_study(searcher).best_trials] == ["a"]


def test_max_epochs_is_required_positive():
    with pytest.raises(ValueError, match="max_epochs"):
        FidelityOptunaSearch(space=space, metric="val_acc", mode="max", max_epochs=0)


def _result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stage", ["baseline", "distill"])
def test_finished_stage_study_matches_every_trials_epochs(small_search, stage):
    manifest = json.loads((small_search / "manifest.json").read_text())
    max_epochs = manifest["spec"]["max_epochs"]
    stage_dir = small_search / stage
    by_id = study_trials_by_ray_id(load_study(stage_dir))
    trial_dirs = [p for p in stage_dir.iterdir() if (p / "result.json").is_file()]
    assert trial_dirs and len(by_id) == len(trial_dirs) == len(optuna_study_trials(stage_dir))
    states = set()
    for trial_dir in trial_dirs:
        rows = _result_rows(trial_dir)
        ot = by_id[rows[-1]["trial_id"]]
        epochs = max(r["training_iteration"] for r in rows)
        states.add(ot.state)
        assert ot.user_attrs["epochs"] == epochs
        if rows[-1].get("diverged"):
            assert ot.state == TrialState.PRUNED and "diverged" in ot.user_attrs["stop_reason"]
            continue
        assert ot.state == (TrialState.COMPLETE if epochs == max_epochs else TrialState.PRUNED), trial_dir.name
        curve = {r["training_iteration"]: r["val_acc"] for r in rows}
        assert ot.intermediate_values.keys() == curve.keys()
        assert all(math.isclose(ot.intermediate_values[e], v) for e, v in curve.items())
        if ot.state == TrialState.COMPLETE:
            assert math.isclose(ot.value, max(curve.values()))  # the best epoch's, as the manifest
    # ASHA (grace 1, rf 3, 4 epochs) cut this stage: both states occur.
    assert states >= {TrialState.COMPLETE, TrialState.PRUNED}


def optuna_study_trials(stage_dir: Path):
    return load_study(stage_dir).trials
