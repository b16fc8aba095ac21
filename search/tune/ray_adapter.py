"""Every place kdtune relies on Ray Tune (2.60) internals, behind one small module.

The scheduler (search/tune/capped_asha.py), the result loggers (search/tune/result_loggers.py) and the
Optuna searcher (search/tune/optuna_searcher.py) reach past Ray's public API in the places below. Each
has a test in tests/test_ray_adapter.py that fails when Ray changes it. After a Ray upgrade,
re-check (and re-run that file and tests/test_reliability.py):

 1. `stage_searcher`: the controller Tune hands a scheduler exposes `search_alg`, whose
    `.searcher` is the searcher given to TuneConfig (our PauseAwareLimiter).
 2. `release_slot` / `retake_slot`: ConcurrencyLimiter counts running trials in
    `live_trials` and `num_unfinished_live_trials` (a paused trial still counts in Ray's).
 3. `repause_restored_trial`: in `on_trial_add` a restored trial's status may still be set:
    Tune files a trial under its status only after that hook (`add_trial`).
 4. `stop_paused_trial`: (a) a trial's last result lives in `trial.run_metadata.last_result`
    and is serialised through a cached JSON state (`invalidate_cache`); (b) the controller
    behind the scheduler's wrapper (`_tune_controller`) re-serialises a stopped trial that
    had no actor only when asked (`_mark_trial_to_checkpoint`).
 5. `carries_checkpoint` / `RAY_LOGGERS`: a result with a checkpoint carries
    `SHOULD_CHECKPOINT`, Ray's CSV/JSON/TensorBoard LoggerCallbacks write it in
    `on_trial_result(iteration, trials, trial, result)`, and `on_checkpoint`,
    `on_trial_recover`, `on_trial_error`, `on_trial_complete` are the hooks that follow it;
    the CSV and JSON loggers copy storage's file over the driver's with
    `_restore_from_remote(file_name, trial)` when a checkpointed trial starts again.
 6. OptunaSearch's state: the Optuna trial of a Tune trial is `_ot_trials[trial_id]`, the
    study `_ot_study`, the trials already told `_completed_trials`; `save()` pickles the
    searcher's `__dict__` into `<stage>/searcher-state-<session>.pkl` (`load_study`).
 7. The controller calls a searcher's `on_trial_result` only for results the scheduler
    did not STOP on: the stopping result reaches it through `on_trial_complete(result=...)`
    (search/tune/optuna_searcher.py reports it there).
"""
from __future__ import annotations

import glob
import os
import pickle
from pathlib import Path
from typing import Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.result import SHOULD_CHECKPOINT
from ray.tune.search import ConcurrencyLimiter, Searcher

# ---- 1-4: what search/tune/capped_asha.py does to Tune's trials and controller -------------------------


def stage_searcher(tune_controller) -> Any:
    """The searcher behind the stage's SearchGenerator (None when there is none)."""
    return getattr(getattr(tune_controller, "search_alg", None), "searcher", None)


def release_slot(limiter: ConcurrencyLimiter, trial_id: str) -> bool:
    """Stop counting a (paused) trial against the limit; False if it was not counted."""
    if trial_id not in limiter.live_trials:
        return False
    limiter.live_trials.remove(trial_id)
    limiter.num_unfinished_live_trials -= 1
    return True


def retake_slot(limiter: ConcurrencyLimiter, trial_id: str) -> None:
    """Count a resumed trial against the limit again."""
    limiter.live_trials.add(trial_id)
    limiter.num_unfinished_live_trials += 1


def repause_restored_trial(trial: Trial) -> None:
    """Mark a restored (PENDING) trial PAUSED from `on_trial_add`, before Tune files it."""
    trial.set_status(Trial.PAUSED)


def stop_paused_trial(tune_controller, trial: Trial) -> None:
    """Stop a PAUSED trial for good, its last result marked done, the stop saved to disk.

    Ray marks done=True on the result of a STOP decision; a paused trial has no new result,
    so its last one is marked (the pipeline's completeness check and analysis' "stopped
    early" read it). Ray 2.60 re-serialises a stopped trial into the experiment state only
    when it had an actor; a paused one has none, so the state file would keep it PAUSED (and
    a resume would run it again): it is marked for the next save. The wrapper Tune hands
    schedulers does not list that method; the controller behind it has it. (A stand-in
    controller without it, as in the unit tests, skips the mark.)
    """
    trial.run_metadata.last_result = {**trial.last_result, "done": True}
    trial.run_metadata.invalidate_cache()
    tune_controller.stop_trial(trial)
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    mark = getattr(controller, "_mark_trial_to_checkpoint", None)
    if mark is not None:
        mark(trial)


# ---- 5: the result loggers' hooks (search/tune/result_loggers.py) -------------------------------

RAY_LOGGERS = (CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback)  # Tune's defaults


def carries_checkpoint(result: dict) -> bool:
    """True for a result reported together with a checkpoint (registered a moment later)."""
    return bool(result.get(SHOULD_CHECKPOINT))


# ---- 6: OptunaSearch's state (search/tune/optuna_searcher.py, tests, analysis) ------------------------


def optuna_trial(searcher: Searcher, trial_id: str) -> optuna.Trial:
    """The running Optuna trial behind a Tune trial of an OptunaSearch."""
    return searcher._ot_trials[trial_id]


def optuna_study(searcher: Searcher) -> optuna.Study:
    return searcher._ot_study


def already_told(searcher: Searcher, trial_id: str) -> bool:
    return trial_id in searcher._completed_trials


def mark_told(searcher: Searcher, trial_id: str) -> None:
    searcher._completed_trials.add(trial_id)


def load_study(stage_dir: str | Path) -> optuna.Study:
    """The Optuna study of a stage, from its newest searcher-state-*.pkl.

    Raises FileNotFoundError when the stage has no searcher state (no Optuna search ran).
    """
    pattern = os.path.join(str(stage_dir), Searcher.CKPT_FILE_TMPL.format("*"))
    paths = glob.glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no searcher state ({Searcher.CKPT_FILE_TMPL.format('*')}) in {stage_dir}")
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        state = pickle.load(f)
    return state["_ot_study"]
