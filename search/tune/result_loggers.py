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

A retried trial also keeps the rows it wrote. Ray's loggers copy the storage folder's file
over the driver's own when a checkpointed trial starts again (`_restore_from_remote`); but
within one driver session the storage file is only a periodic sync of the driver's, so the
copy threw away every row written since the last sync (and all of them when it met a sync
in flight: the SIGKILL test saw a trial's first epoch vanish). The driver's file, when it
exists, is kept; only a driver that lacks it (Tuner.restore in a new session) copies it.

    tune.RunConfig(callbacks=checkpoint_consistent_loggers())
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kdtune.search.tune.ray_adapter import RAY_LOGGERS, carries_checkpoint

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

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if Path(trial.local_path, file_name).exists():  # this session wrote it: newer than storage's copy
            return
        super()._restore_from_remote(file_name, trial)

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
