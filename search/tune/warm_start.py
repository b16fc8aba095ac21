"""`--warm-start <experiment>`: a new search's samplers start from a finished search's trials.

Each search stage (baseline, distill, ...) of the new run is seeded from the same stage of the
old one: its COMPLETE and PRUNED trials are copied into the new study with
`study.add_trial(FrozenTrial)` (params, their distributions, values and intermediate values),
before the first trial is asked for. TPE then models them as if they were its own history and
treats them as its start-up trials, so the search samples near what worked from trial one.

Why add_trial and not OptunaSearch's `points_to_evaluate` + `evaluated_rewards`: Ray builds
those with the space's distributions, which a define-by-run space (kdtune's, whose depth range
depends on the sampled model) does not have, and refuses them (TypeError); `points_to_evaluate`
alone would re-run the old trials instead of learning from their results. The copies are not
Ray trials: they cost no training, and carry the user attribute `warm_start_from`.

"Same space" is checked per old trial, with Optuna itself: the new stage's define-by-run
function is asked for that trial's params, and must ask for exactly the same distributions.
A different range, family, pinned dimension or objective is refused before Ray starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from kdtune.search.tune.optuna_study import load_study

COPIED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished_trials(source_dir: Path, stage: str) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
    """The source stage's study and its copyable trials (ValueError when there are none)."""
    study = load_study(Path(source_dir) / stage, stage)
    trials = study.get_trials(deepcopy=False, states=COPIED)
    if not trials:
        raise ValueError(f"{source_dir} stage {stage}: its study has no complete or pruned trial to start from")
    return study, trials


def asked_distributions(define_by_run: Callable, params: dict) -> dict:
    """The distributions `define_by_run` asks for when it is handed these params."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the probe's "study created" / range notes
    try:
        probe = optuna.create_study()
        probe.enqueue_trial(params, skip_if_exists=False)
        trial = probe.ask()
        define_by_run(trial)
        return dict(trial.distributions)
    finally:
        optuna.logging.set_verbosity(level)


def check_same_space(source_dir: Path, stage: str, define_by_run: Callable, directions: list) -> int:
    """ValueError naming the first difference; returns how many trials would be copied."""
    study, trials = finished_trials(source_dir, stage)
    if list(study.directions) != list(directions):
        raise ValueError(f"--warm-start {source_dir}: stage {stage} optimised {_names(study.directions)}, "
                         f"this search {_names(directions)}")
    for trial in trials:
        asked = asked_distributions(define_by_run, trial.params)
        if asked != trial.distributions:
            diff = sorted(set(asked) ^ set(trial.distributions)) or \
                [k for k in asked if asked[k] != trial.distributions[k]]
            name = diff[0]
            raise ValueError(f"--warm-start {source_dir}: stage {stage} searched a different space "
                             f"({name}: {trial.distributions.get(name, 'not searched')} there, "
                             f"{asked.get(name, 'not searched')} here)")
    return len(trials)


def seed_study(study: optuna.Study, source_dir: Path, stage: str) -> int:
    """Copy the source stage's finished trials into `study` (a new, empty one); returns the count."""
    _source, trials = finished_trials(source_dir, stage)
    copies = []
    for trial in trials:
        copies.append(optuna.trial.create_trial(
            state=trial.state, values=trial.values,  # (a pruned trial's: its last intermediate value)
            params=trial.params, distributions=trial.distributions,
            intermediate_values=trial.intermediate_values,
            user_attrs={**trial.user_attrs, "warm_start_from": f"{Path(source_dir).name}/{stage}#{trial.number}"}))
    study.add_trials(copies)
    return len(copies)


def _names(directions) -> str:
    return ", ".join(d.name.lower() for d in directions)
