"""One Ray Tune experiment per stage: build (or restore) the Tuner, run it, read the winner.

Stages differ only in their trainable, their search algorithm and their scheduler; the run
configuration (storage, checkpoints, failure retries) and the completeness check are shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from ray import tune
from ray.tune import ResultGrid
from ray.tune.search.optuna import OptunaSearch

from search.asha import CappedASHA, PauseAwareLimiter
from search.result_logging import checkpoint_consistent_loggers
from search.sweep import VARIANT, merge
from trainables.checkpoint import FILENAME as CHECKPOINT_FILE
from trainables.reporting import METRIC, MODE


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
    max_concurrent: int | None = None  # trials at once (a searched stage caps it in its searcher)

    @property
    def path(self) -> Path:
        return self.experiment_dir / self.name


def optuna_search(define_by_run: Callable, seed: int, objective: str, max_concurrent: int) -> PauseAwareLimiter:
    """Seeded TPE over a define-by-run space; `pareto` makes it multi-objective.

    No metric goes into TuneConfig: with one there, Ray silently makes the study single-objective
    (STACK_NOTES). Multi-objective studies use Optuna's default multi-objective TPE.
    """
    sampler = optuna.samplers.TPESampler(seed=seed)
    if objective == "pareto":
        searcher = OptunaSearch(space=define_by_run, metric=[METRIC, "params"], mode=[MODE, "min"],
                                sampler=sampler)
    else:
        searcher = OptunaSearch(space=define_by_run, metric=METRIC, mode=MODE, sampler=sampler)
    return PauseAwareLimiter(searcher, max_concurrent=max_concurrent)


def asha(max_epochs: int, grace_period: int, reduction_factor: int, num_samples: int) -> CappedASHA:
    """ASHA on val_acc, one rung unit per reported epoch (training_iteration); search/asha.py."""
    return CappedASHA(metric=METRIC, mode=MODE, time_attr="training_iteration", max_t=max_epochs,
                      grace_period=grace_period, reduction_factor=reduction_factor, num_samples=num_samples)


def trial_dirname(trial) -> str:
    """Short trial folder names: Ray's default folds every config key into the path."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _trainable(stage: Stage):
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
                name=stage.name, storage_path=str(stage.experiment_dir), verbose=1,
                # Result files never run ahead of the checkpoint a resume continues from.
                callbacks=checkpoint_consistent_loggers(),
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


def best_of(results: ResultGrid) -> dict[str, Any] | None:
    """The best trial by its best epoch: config, metrics of that epoch, checkpoint file."""
    rows = []
    for result in results:
        df = result.metrics_dataframe
        if result.error is not None or df is None or METRIC not in df or df[METRIC].isna().all():
            continue
        best_row = df.loc[df[METRIC].idxmax()]
        rows.append((float(best_row[METRIC]), result, best_row))
    if not rows:
        return None
    _score, result, row = max(rows, key=lambda item: item[0])
    # A trial that diverged in its first epoch reported no checkpoint, and Ray's
    # Result.get_best_checkpoint raises on a trial without any instead of returning None.
    checkpoint = (result.get_best_checkpoint(METRIC, MODE) if result.best_checkpoints else None) \
        or result.checkpoint
    metrics = {k: _plain(v) for k, v in row.items() if not str(k).startswith("config/")}
    return {
        "trial_id": result.metrics.get("trial_id"),
        "trial_path": result.path,
        "config": {k: _plain(v) for k, v in effective_config(result.config).items()},
        "metrics": metrics,
        "best_checkpoint": str(Path(checkpoint.path) / CHECKPOINT_FILE) if checkpoint else None,
        "epochs_run": int(result.metrics.get("training_iteration", 0)),
    }


SUMMARY_KEYS = ("model", "depth", "width", "alpha", "temperature", "lr", "weight_decay", "model_kwargs", "seed")


def effective_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config the trainable ran: a sweep's variant merged in (see search/sweep.py)."""
    variant = config.get(VARIANT)
    base = {k: v for k, v in config.items() if k != VARIANT}
    return merge(base, variant) if variant else base


def trial_rows(results: ResultGrid, max_epochs: int | None = None) -> list[dict[str, Any]]:
    """One compact row per trial (best val_acc, size, sampled config) for summaries."""
    rows = []
    for result in results:
        df = result.metrics_dataframe
        last = result.metrics or {}
        best = float(df[METRIC].max()) if df is not None and METRIC in df and not df[METRIC].isna().all() else None
        epochs = int(last.get("training_iteration", 0) or 0)
        rows.append({
            "trial_id": last.get("trial_id"),
            "val_acc": best,
            "params": _plain(last.get("params")),
            "epochs": epochs,
            "stopped_early": bool(max_epochs and epochs < max_epochs and not last.get("diverged")),
            "diverged": bool(last.get("diverged")),
            "error": None if result.error is None else str(result.error).splitlines()[0][:200],
            **{k: _plain(v) for k, v in effective_config(result.config).items() if k in SUMMARY_KEYS},
        })
    return rows


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, so the manifest stays plain JSON."""
    return value.item() if hasattr(value, "item") else value
