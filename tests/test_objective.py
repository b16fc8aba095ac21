"""The search objective as one object (search/tune/objective.py): what the searcher, the
scheduler, the study and the final stage read instead of comparing names."""
import optuna
import pytest

from kdtune.search.stages.tune_stage import asha, optuna_search
from kdtune.search.tune.objective import OBJECTIVES, objective
from kdtune.search.tune.optuna_study import study_directions


def test_accuracy_and_pareto_declare_metrics_modes_and_directions():
    acc, par = objective("accuracy"), objective("pareto")
    assert (acc.metrics, acc.modes, acc.multi, acc.size_metric) == (("val_acc",), ("max",), False, None)
    assert (par.metrics, par.modes, par.multi, par.size_metric) == (("val_acc", "params"), ("max", "min"), True, "params")
    up, down = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    assert study_directions("accuracy") == [up] and study_directions(par) == [up, down]
    assert objective(par) is par and list(OBJECTIVES) == ["accuracy", "pareto"]
    with pytest.raises(ValueError, match="unknown objective 'paretto'; known: accuracy, pareto"):
        objective("paretto")


def test_the_searcher_and_scheduler_follow_the_objective():
    space = lambda trial: trial.suggest_float("lr", 0.01, 0.1)  # noqa: E731
    single = optuna_search(space, seed=0, objective="accuracy", max_concurrent=1, max_epochs=2).searcher
    multi = optuna_search(space, seed=0, objective="pareto", max_concurrent=1, max_epochs=2).searcher
    assert single.metric == "val_acc" and multi.metric == ["val_acc", "params"] and multi.mode == ["max", "min"]
    assert asha(4, 1, 2, 4, objective="pareto")._size == "params"  # ranks rungs by Pareto rank
    assert asha(4, 1, 2, 4, objective="accuracy")._size is None
