"""One Ray Tune experiment per stage: build (or restore) the Tuner, run it, read the winner.

Stages differ only in their trainable, their search algorithm and their scheduler; the run
configuration (storage, checkpoints, failure retries) and the completeness check are shared.
What a finished stage's trials reached (its winner, trial rows, Pareto set) is read by the
record layer (search/record/trials.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from ray import tune
from ray.tune import ResultGrid

from kdtune.search.tune.capped_asha import CappedASHA, PauseAwareLimiter
from kdtune.search.tune.optuna_searcher import FidelityOptunaSearch
from kdtune.search.tune.result_loggers import checkpoint_consistent_loggers
from kdtune.search.tune.objective import objective as as_objective
from kdtune.trainables.reporting import METRIC, MODE


@dataclass
class Stage:
    """Everything needed to start or restore one stage's Tune experiment."""
    name: str                     # teacher | baseline | distill
    experiment_dir: Path          # <storage>/<experiment name>; the stage lives in <dir>/<name>
    trainable: Callable[..., Any]  # tune.with_parameters(...) already applied
    num_samples: int
    cpus: float
    gpus: float
    max_failures: int
    param_space: dict[str, Any] | None = None  # fixed config (teacher); None when searched
    search_alg: Any = None
    scheduler: Any = None
    progress: Any = None  # the stage's progress line (search/tune/progress.py StageProgress)
    callbacks: list = field(default_factory=list)  # extra Tune callbacks (experiment trackers)
    max_concurrent: int | None = None  # trials at once (a searched stage caps it in its searcher)
    workers: int = 1  # DDP workers per trial (trainables/distributed.py): cpus/gpus are per worker

    @property
    def path(self) -> Path:
        return self.experiment_dir / self.name


def optuna_search(define_by_run: Callable, seed: int, objective: str, max_concurrent: int,
                  max_epochs: int, storage: optuna.storages.BaseStorage | None = None,
                  study_name: str | None = None) -> PauseAwareLimiter:
    """Seeded TPE over a define-by-run space; `pareto` makes it multi-objective. Trials shorter
    than max_epochs reach Optuna as PRUNED (search/tune/optuna_searcher.py).

    `storage` / `study_name`: where the study lives (search/tune/optuna_study.py: SQLite in the stage folder).

    No metric goes into TuneConfig: with one there, Ray silently makes the study single-objective
    (docs/architecture.md, Ray touch points). Multi-objective studies use Optuna's default multi-objective TPE.
    """
    sampler = optuna.samplers.TPESampler(seed=seed)
    searcher = FidelityOptunaSearch(space=define_by_run, sampler=sampler, max_epochs=max_epochs, storage=storage,
                                    study_name=study_name, **as_objective(objective).searcher_args())
    return PauseAwareLimiter(searcher, max_concurrent=max_concurrent)


def asha(max_epochs: int, grace_period: int, reduction_factor: int, num_samples: int,
         objective: str = "accuracy") -> CappedASHA:
    """ASHA on val_acc (`pareto`: Pareto rank on val_acc and params), one rung unit per reported
    epoch (training_iteration); search/tune/capped_asha.py."""
    return CappedASHA(metric=METRIC, mode=MODE, time_attr="training_iteration", max_t=max_epochs,
                      grace_period=grace_period, reduction_factor=reduction_factor, num_samples=num_samples,
                      size_metric=as_objective(objective).size_metric)


def trial_dirname(trial) -> str:
    """Short trial folder names: Ray's default folds every config key into the path."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def worker_resources(cpus: float, gpus: float) -> dict[str, float]:
    """What each DDP worker of a multi-worker trial asks (a one-process trial's resources)."""
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def _trainable(stage: Stage):
    if stage.workers > 1:
        # The trial is only the driver of its Ray Train workers, which ask their own resources
        # (worker_resources); a driver holding a CPU would keep N workers x 1 CPU from ever
        # fitting on an N-CPU machine. Tune refuses an all-zero request, hence 1 byte of memory.
        return tune.with_resources(stage.trainable, tune.PlacementGroupFactory([{"memory": 1}]))
    return tune.with_resources(stage.trainable, {"cpu": stage.cpus, "gpu": stage.gpus})


def run_stage(stage: Stage, resume: bool) -> ResultGrid:
    """Fit the stage, restoring it from its folder when it was interrupted before."""
    if resume and tune.Tuner.can_restore(str(stage.path)):
        tuner = tune.Tuner.restore(str(stage.path), trainable=_trainable(stage), resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            _trainable(stage),
            param_space=stage.param_space or {},
            tune_config=tune.TuneConfig(search_alg=stage.search_alg, scheduler=stage.scheduler,
                                        num_samples=stage.num_samples, reuse_actors=True,
                                        max_concurrent_trials=stage.max_concurrent,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=stage.name, storage_path=str(stage.experiment_dir),
                # verbose 1 with a reporter: the stage's progress line, or Ray's own tables
                # under --verbose (search/tune/progress.py console_settings chooses per session).
                verbose=1, progress_reporter=stage.progress,
                # Result files never run ahead of the checkpoint a resume continues from.
                callbacks=checkpoint_consistent_loggers() + list(stage.callbacks),
                failure_config=tune.FailureConfig(max_failures=stage.max_failures),
                # Keep the best epoch's checkpoint; Ray always keeps the latest too (for resume).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                        checkpoint_score_order=MODE)),
        )
    return tuner.fit()


def stage_finished(results: ResultGrid, expected: int) -> bool:
    """True when every trial ended (done, early-stopped, diverged or out of retries).

    After Ctrl-C, Ray returns from fit() with unfinished trials marked TERMINATED, so the status
    cannot tell; the last report's `done` flag and the trial count can.
    """
    if len(results) < expected:
        return False
    return all(r.error is not None or bool((r.metrics or {}).get("done")) for r in results)
