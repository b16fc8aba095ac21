"""trainables/trial_outcome.py: the one definition of best epoch, "stopped early" and reduction vs
teacher, and that the search's summary and the analysis tables both use it."""
import math
from pathlib import Path

import pandas as pd
import pytest

from kdtune.trainables.trial_outcome import best_epoch, diverged, epoch_number, epochs_trained, reduction_pct, stopped_early


def _df(val_acc, **extra):
    n = len(val_acc)
    return pd.DataFrame({"epoch": range(1, n + 1), "training_iteration": range(1, n + 1),
                         "val_acc": val_acc, "params": [100 + i for i in range(n)], **extra})


def test_best_epoch_is_the_first_maximum_and_skips_missing_values():
    row = best_epoch(_df([0.2, float("nan"), 0.7, 0.7, 0.5]))
    assert epoch_number(row) == 3 and row["params"] == 102


def test_best_epoch_is_none_without_a_finite_metric():
    assert best_epoch(None) is None
    assert best_epoch(pd.DataFrame({"epoch": [1]})) is None
    assert best_epoch(_df([float("nan"), float("nan")])) is None


def test_epochs_trained_prefers_the_loops_counter():
    # A function trainable's return value adds one Tune iteration but no epoch.
    df = pd.DataFrame({"epoch": [1, 2, None], "training_iteration": [1, 2, 3]})
    assert epochs_trained(df) == 2
    assert epochs_trained(pd.DataFrame({"training_iteration": [1, 2, 3]})) == 3
    assert epochs_trained(None) == 0


def test_diverged_is_any_epoch_flagged():
    assert diverged(pd.DataFrame({"diverged": [0, None, 1]}))
    assert not diverged(pd.DataFrame({"diverged": [0, 0]}))
    assert not diverged(pd.DataFrame({"epoch": [1]})) and not diverged(None)


@pytest.mark.parametrize("epochs, planned, diverged, ended, expected", [
    (2, 4, False, True, True),     # ASHA cut a healthy trial
    (4, 4, False, True, False),    # ran its full length
    (2, 4, True, True, False),     # diverged: it stopped itself
    (2, 4, False, False, False),   # Ctrl-C or an error: unfinished, not stopped early
    (2, None, False, True, False),  # no planned length known
])
def test_stopped_early(epochs, planned, diverged, ended, expected):
    assert stopped_early(epochs=epochs, planned=planned, diverged=diverged, ended=ended) is expected


def test_reduction_pct():
    assert reduction_pct(8_710, 301_066) == pytest.approx(100 * (1 - 8_710 / 301_066))
    assert reduction_pct(300, 100) == pytest.approx(-200.0)  # a student larger than its teacher
    for params, teacher in ((None, 100), (10, None), (10, 0), ("n/a", 100), (float("inf"), 100)):
        assert math.isnan(reduction_pct(params, teacher))


def test_summary_prints_the_shared_reduction():
    from kdtune.search.record.manifest import Manifest
    from kdtune.search.record.summary import render

    stages = {"teacher": {"config": {"model": "mlp"}, "metrics": {"val_acc": 0.99, "params": 301_066}},
              "distill": {"config": {"model": "mlp"}, "metrics": {"val_acc": 0.98, "params": 8_710}}}
    text = render(Manifest(Path("x"), {"dataset": {"name": "digits"}, "spec": {}, "stages": stages}))
    assert f"| {reduction_pct(8_710, 301_066):.1f}% |" in text  # 97.1%


def test_summary_lists_the_pareto_set_of_a_pareto_search():
    from kdtune.search.record.manifest import Manifest
    from kdtune.search.record.summary import render

    members = [{"trial_id": "a1", "config": {"model": "mlp", "depth": 2, "width": 64, "kd_method": "dist"},
                "val_acc": 0.985, "params": 30_000, "epochs": 18},
               {"trial_id": "b2", "config": {"model": "mlp", "depth": 1, "width": 8},
                "val_acc": 0.95, "params": 600, "epochs": 6}]
    stages = {"teacher": {"config": {"model": "mlp"}, "metrics": {"val_acc": 0.99, "params": 301_066}},
              "distill": {"config": {"model": "mlp"}, "metrics": {"val_acc": 0.985, "params": 30_000},
                          "pareto_set": members}}
    text = render(Manifest(Path("x"), {"dataset": {"name": "digits"}, "spec": {}, "stages": stages}))
    rows = text[text.index("## Pareto set"):].splitlines()[4:6]
    assert rows[0] == f"| a1 | mlp depth=2 width=64 | dist | 98.50% | 30,000 | {reduction_pct(30_000, 301_066):.1f}% | 18 |"
    assert rows[1].startswith("| b2 | mlp depth=1 width=8 | kd | 95.00% | 600 |")
    stages["distill"].pop("pareto_set")  # an accuracy search has no such table
    assert "Pareto set" not in render(Manifest(Path("x"), {"dataset": {"name": "digits"}, "spec": {}, "stages": stages}))


def test_manifest_times_the_attempt_that_finished_a_stage(tmp_path, monkeypatch):
    from kdtune.search.record import manifest as manifest_module
    from kdtune.search.record.manifest import Manifest

    clock = iter([100.0, 160.5, 200.0, 200.0])
    monkeypatch.setattr(manifest_module.time, "time", lambda: next(clock))
    m = Manifest(tmp_path, {"stages": {}})
    m.mark("distill", "running")
    m.mark("distill", "done")
    assert m.stage("distill")["wall_s"] == 60.5 and m.stage("distill")["started_at"] == 100.0
    m.mark("teacher", "done", source="--teacher-checkpoint")  # adopted, never ran: no time
    assert "wall_s" not in m.stage("teacher")
