"""Ray's OptunaSearch telling Optuna each trial's fidelity: only full-length trials COMPLETE.

Ray's OptunaSearch tells a trial COMPLETE whenever `on_trial_complete` brings a result, so a
trial ASHA stops on its rung result became COMPLETE with its 1- or 2-epoch val_acc (which
TPE then ranked beside full-length values), and one stopped while paused became PRUNED.
`FidelityOptunaSearch` decides the state from the epochs a trial ran instead:

  ran max_epochs                     COMPLETE, value = val_acc of its best epoch, the one the
                                     stage keeps and every table reports (pareto: [val_acc, params])
  stopped before (ASHA, at a rung    PRUNED, intermediate values = val_acc per epoch
  or while paused)                   (step = epoch)
  diverged (non-finite loss)         PRUNED, the epochs before the divergence as intermediate
                                     values (never the 0.0 the trainable reports for it)
  raised an error, out of retries    FAIL

Every trial carries the user attrs `trial_id` (Ray's), `epochs` (the last epoch reported)
and `stop_reason` ("max_epochs", "early_stopped", the trainable's "diverged at epoch ...",
"error").

Why a diverged trial is PRUNED, not FAIL: TPE ignores FAIL trials, so it would propose the
learning rate that diverged again; a PRUNED trial with fewer epochs sorts below every trial
that got further (TPE ranks pruned trials by their last step, then value), so TPE learns
the region is bad. An error is FAIL: it says nothing about the configuration.

Multi-objective studies (`--objective pareto`): Optuna refuses intermediate values there
(Trial.report raises NotImplementedError) and keeps no value for a PRUNED trial. Stopped
trials are still told PRUNED, so the study's Pareto front (`study.best_trials`) holds
full-length trials only, and their per-epoch val_acc is kept in the user attr
`val_acc_by_epoch` ({epoch: value}). What it costs: Optuna's multi-objective TPE sees no
value on a pruned trial, so past the COMPLETE ones it treats pruned trials as equal; the
promotion decisions themselves are the scheduler's (search/tune/capped_asha.py, Pareto rank).

The Ray internals used here (the Optuna trial and study behind a Tune trial, the set of
trials already told) are reached through search/tune/ray_adapter.py.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.air.constants import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from kdtune.search.tune.ray_adapter import already_told, mark_told, optuna_study, optuna_trial

logger = logging.getLogger(__name__)

EPOCH = "epoch"  # what the trainables report per epoch; Tune's training_iteration otherwise


class FidelityOptunaSearch(OptunaSearch):
    """OptunaSearch (same arguments) plus `max_epochs`: the length of a full trial."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, not {max_epochs}")
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        # trial_id -> {epoch: val_acc}, for the multi-objective user attr and the epoch count
        # (pickled with the searcher's state, so a resumed stage keeps it).
        self._curves: dict[str, dict[int, float]] = {}

    @property
    def _multi_objective(self) -> bool:
        return isinstance(self.metric, list)

    @property
    def _objective(self) -> str:
        return self.metric[0] if self._multi_objective else self.metric

    def _record(self, trial_id: str, result: dict) -> None:
        """Keep (and report to Optuna) one epoch's val_acc; a diverged epoch's 0.0 is no value."""
        if result.get("diverged") or self._objective not in result:
            return
        value = float(result[self._objective])
        if not math.isfinite(value):
            return
        step = int(result.get(EPOCH, result[TRAINING_ITERATION]))
        curve = self._curves.setdefault(trial_id, {})
        if step in curve:
            return  # a retried trial reporting an epoch again
        curve[step] = value
        if not self._multi_objective:
            optuna_trial(self, trial_id).report(value, step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if already_told(self, trial_id):
            return
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if already_told(self, trial_id):
            return
        # Tune passes the result it stopped a trial on here, not to on_trial_result.
        if result and not error:
            self._record(trial_id, result)
        curve = self._curves.get(trial_id, {})
        epochs = max(curve, default=0)
        diverged = bool(result and result.get("diverged"))
        if diverged:
            epochs = int(result.get(EPOCH, result.get(TRAINING_ITERATION, epochs)))
        ot_trial = optuna_trial(self, trial_id)
        ot_trial.set_user_attr("trial_id", trial_id)
        ot_trial.set_user_attr("epochs", epochs)
        values = None
        if error:
            state, reason = TrialState.FAIL, "error"
        elif diverged:
            state, reason = TrialState.PRUNED, str(result.get("stop_reason") or "diverged")
        elif epochs >= self._max_epochs:
            state, reason = TrialState.COMPLETE, "max_epochs"
            values = self._final_values(trial_id, result, curve)
        else:
            state, reason = TrialState.PRUNED, "early_stopped"
        if values is None and state == TrialState.COMPLETE:
            state, reason = TrialState.FAIL, "no final value"
        ot_trial.set_user_attr("stop_reason", reason)
        if self._multi_objective and state != TrialState.COMPLETE and curve:
            ot_trial.set_user_attr("val_acc_by_epoch", {str(e): v for e, v in sorted(curve.items())})
        try:
            optuna_study(self).tell(ot_trial, values, state=state)
        except ValueError as exc:  # e.g. a non-finite objective value: Optuna refuses it
            logger.warning("trial %s: Optuna refused %s %s (%s); told FAIL", trial_id, state.name, values, exc)
            optuna_study(self).tell(ot_trial, None, state=TrialState.FAIL)
        mark_told(self, trial_id)

    def _final_values(self, trial_id: str, result: dict | None, curve: dict[int, float]):
        """The best epoch's val_acc (and, for pareto, the other objectives from the result).

        The curve holds finite values only (`_record`), the rule of trial_outcome.best_epoch."""
        mode = self.mode[0] if isinstance(self.mode, list) else self.mode
        best = max(curve.values()) if mode == "max" else min(curve.values())
        if not self._multi_objective:
            return best
        others = [(result or {}).get(m) for m in self.metric[1:]]
        if any(v is None for v in others):
            logger.warning("trial %s: its final result lacks %s", trial_id, self.metric[1:])
            return None
        return [best, *[float(v) for v in others]]


def study_trials_by_ray_id(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """{Ray trial id: Optuna trial} of a study this searcher told."""
    return {t.user_attrs["trial_id"]: t for t in study.trials if "trial_id" in t.user_attrs}
