"""Ray Tune's result loggers (CSV, JSON, TensorBoard), writing a row only once it is safe.

Ray writes a trial's result row in `on_trial_result` and registers the checkpoint reported
with it a moment later, when the trial actor's `save` task answers. A Ctrl-C / SIGTERM in
between ends `fit()` without waiting for that answer: the experiment state then records the
previous checkpoint while result.json, progress.csv and the event file already hold the
newer epoch. `Tuner.restore` resumes from the registered checkpoint, the trial re-runs that
epoch, and every file gets the epoch twice (the resume test hit it in 3 runs of 3).

These loggers hold a row that carries a checkpoint until Ray registers the checkpoint
(`on_checkpoint`), so the files never run ahead of what a resume continues from. A trial
that fails and is retried (`on_trial_recover`) re-runs from its registered checkpoint: its
held row is dropped and written again by the retry. A trial that errors for good or ends
writes its held row: nothing will report that epoch again.

    tune.RunConfig(callbacks=checkpoint_consistent_loggers())
"""
from __future__ import annotations

from typing import Any

from search.ray_adapter import RAY_LOGGERS, carries_checkpoint

CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback = RAY_LOGGERS  # the hooks used: ray_adapter.py


class _RowAfterCheckpoint:
    """Mixin for a Ray LoggerCallback: a checkpointed result is logged when its checkpoint is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[str, tuple[int, dict]] = {}  # trial_id -> (iteration, result)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if carries_checkpoint(result):
            self._held[trial.trial_id] = (iteration, dict(result))
            return
        super().on_trial_result(iteration, trials, trial, result, **info)

    def _write_held(self, trials, trial) -> None:
        held = self._held.pop(trial.trial_id, None)
        if held is not None:
            iteration, result = held
            super().on_trial_result(iteration, trials, trial, result)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._write_held(trials, trial)
        super().on_checkpoint(iteration, trials, trial, checkpoint, **info)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._held.pop(trial.trial_id, None)  # the retry reports this epoch again
        super().on_trial_recover(iteration, trials, trial, **info)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write_held(trials, trial)
        super().on_trial_error(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write_held(trials, trial)
        super().on_trial_complete(iteration, trials, trial, **info)

    def __getstate__(self) -> dict:
        # Tuner.restore unpickles the run config: held rows belong to the finished session.
        return {**self.__dict__, "_held": {}}


class CSVLogger(_RowAfterCheckpoint, CSVLoggerCallback):
    """progress.csv"""


class JsonLogger(_RowAfterCheckpoint, JsonLoggerCallback):
    """result.json, params.json"""


class TBXLogger(_RowAfterCheckpoint, TBXLoggerCallback):
    """events.out.tfevents.* (TensorBoard)"""


def checkpoint_consistent_loggers() -> list:
    """The three loggers Ray would add by default, in their checkpoint-consistent form."""
    return [CSVLogger(), JsonLogger(), TBXLogger()]
