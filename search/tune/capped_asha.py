"""Promotion-capped, pause-based ASHA (Li et al. 2020) for a search of a known number of trials.

Why not Ray's `ASHAScheduler`: it decides a trial's fate the moment the trial reaches a rung,
from the values recorded there *before* it. The first trial to reach a rung always goes on
(no cutoff yet), and nothing caps how many trials a rung passes on. On digits, with TPE
proposing ever better configs, it ran 0.50x the epochs of full-length random search (a
chance-level first trial ran all 18 epochs; benchmarks/bench_search_efficiency.py) where successive halving would run ~0.25x.

This scheduler keeps the paper's rule instead: a rung holding n trials promotes at most
floor(n / eta) of them, the best ones, and a trial that cannot be promoted yet is PAUSED
(checkpointed, its CPU/GPU share freed for the next trial) rather than judged on too little.
As more trials reach the rung, the best paused ones are resumed from their checkpoints. With
the search's size N known, a trial is STOPPED as soon as it can never be promoted: rung 0 can
promote at most floor(N / eta) trials, rung 1 at most floor(floor(N / eta) / eta), ... (never
fewer than one, so the best trial always trains to max_t), so a trial with that many better
trials already recorded is out. When no trial runs or waits to start and all N trials exist,
the rungs are complete: a rung still short of its cap promotes its best paused trial, and
once none is left every trial still paused is stopped. The epochs spent then match
synchronous successive halving; the rungs fill asynchronously, so no worker waits for a full
rung while trials are left to start. A trial that pausing would resume at once (nothing else
could take its slot: the search's tail, a stage of one trial) is promoted without the pause.

Under `--objective pareto` a rung ranks by non-dominated rank on (val_acc, params), ties by
crowding distance (`size_metric`), so a small-but-good student is not cut for being small.

The Ray internals it relies on are reached through search/tune/ray_adapter.py. Two details of Ray
it works with:
  - Tune's ConcurrencyLimiter counts a paused trial as running, so with every slot paused
    it would never suggest another trial. `PauseAwareLimiter` frees the slot while a trial is
    paused (the scheduler tells it, as Ray's BOHB does).
  - Tune does not save a scheduler's state, and `Tuner.restore` brings paused trials back as
    PENDING. `on_trial_add` rebuilds the rungs from each restored trial's result.json (rows
    are written only once checkpointed: search/tune/result_loggers.py), and puts a trial that had
    stopped at a rung without being promoted back to PAUSED, so a resume neither runs it on
    unpromoted nor loses it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from kdtune.search.tune.ray_adapter import release_slot, repause_restored_trial, retake_slot, stage_searcher, stop_paused_trial
from kdtune.search.tune.nondominated import dominator_counts, pareto_order
from kdtune.search.tune.rungs import rung_caps, rung_milestones

logger = logging.getLogger(__name__)


class PauseAwareLimiter(ConcurrencyLimiter):
    """ConcurrencyLimiter whose limit counts running and pending trials, not paused ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused_trials: set[str] = set()

    def on_pause(self, trial_id: str) -> None:
        if release_slot(self, trial_id):
            self.paused_trials.add(trial_id)
        # (ConcurrencyLimiter.on_pause would forward to the searcher; OptunaSearch has none.)

    def on_unpause(self, trial_id: str) -> None:
        if trial_id in self.paused_trials:
            self.paused_trials.remove(trial_id)
            retake_slot(self, trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # A paused trial that is stopped must still reach the searcher (Optuna: PRUNED).
        self.on_unpause(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)


class CappedASHA(FIFOScheduler):
    """Asynchronous successive halving with promotions capped at floor(n/eta) per rung.

    metric/mode: what to compare at a rung; time_attr: the rung clock (epochs);
    num_samples: the number of trials the search will create (bounds every rung's promotions);
    size_metric: when given (`--objective pareto`: "params"), a rung ranks its trials by
    non-dominated rank on (metric in its mode, size_metric minimised), ties within a front by
    crowding distance, larger first (NSGA-II; search/tune/nondominated.py), then by arrival.
    """

    def __init__(self, *, metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: int,
                 num_samples: int, time_attr: str = "training_iteration", size_metric: str | None = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        if not (0 < grace_period <= max_t) or reduction_factor < 2 or num_samples < 1:
            raise ValueError("need 0 < grace_period <= max_t, reduction_factor >= 2, num_samples >= 1")
        super().__init__()
        self._metric, self._mode, self._time_attr, self._size = metric, mode, time_attr, size_metric
        self._sign = 1.0 if mode == "max" else -1.0
        self._max_t, self._eta, self._num_samples = max_t, reduction_factor, num_samples
        self.milestones = rung_milestones(grace_period, reduction_factor, max_t)
        # The most trials each rung can ever promote (search/tune/rungs.py).
        self.caps = rung_caps(num_samples, reduction_factor, len(self.milestones))
        # trial -> score, larger is better: (metric,) or, ranking by Pareto, (metric, -size)
        self.rungs: dict[int, dict[str, tuple[float, ...]]] = {m: {} for m in self.milestones}
        self.promoted: dict[int, set[str]] = {m: set() for m in self.milestones}
        self.waiting: dict[str, int] = {}  # paused trial -> the milestone it waits at
        self._trials: dict[str, Trial] = {}

    # ---- rung bookkeeping -------------------------------------------------------------

    def _ranking(self, m: int) -> list[str]:
        """Trials recorded at milestone m, best first; ties go to the earlier arrival."""
        recorded = self.rungs[m]
        tids = list(recorded)  # in arrival order
        if self._size is not None:
            return [tids[i] for i in pareto_order([recorded[t] for t in tids])]
        order = {tid: i for i, tid in enumerate(tids)}
        return sorted(tids, key=lambda tid: (-recorded[tid][0], order[tid]))

    def _surely_ahead(self, tid: str, m: int) -> int:
        """How many trials rank ahead of tid at m whatever arrives later. One objective: its
        rank (a later arrival never passes an equal value). Pareto: the trials that dominate
        it (front and crowding reshuffle as trials arrive; a dominator always stays ahead)."""
        if self._size is None:
            return self._ranking(m).index(tid)
        points = self.rungs[m]
        return dominator_counts([points[tid], *(p for t, p in points.items() if t != tid)])[0]

    def _to_promote(self, m: int) -> list[str]:
        """Waiting trials at m to promote now: the best of the top floor(n/eta), within the cap."""
        k = len(self.rungs[m]) // self._eta
        slots = k - len(self.promoted[m])
        if slots <= 0:
            return []
        top = self._ranking(m)[:k]
        return [tid for tid in top if tid not in self.promoted[m] and self.waiting.get(tid) == m][:slots]

    def _out(self, tid: str, m: int) -> bool:
        """True when the trial can never be promoted from milestone m."""
        cap = self.caps[self.milestones.index(m)]
        return len(self.promoted[m]) >= cap or self._surely_ahead(tid, m) >= cap

    def _score(self, result: dict) -> tuple[float, ...]:
        if result.get("diverged"):  # its metric is a stand-in (val_acc 0.0): worst on every axis
            return (float("-inf"),) * (1 if self._size is None else 2)
        score = self._sign * float(result[self._metric])
        if self._size is None:
            return (score,)
        size = result.get(self._size)
        return score, -float(size) if size is not None else float("-inf")  # no size: the largest

    def _record(self, tid: str, m: int, result: dict) -> None:
        self.rungs[m].setdefault(tid, self._score(result))

    # ---- Ray's scheduler interface ----------------------------------------------------

    def set_search_properties(self, metric, mode, **spec) -> bool:
        # Metric and mode are fixed at construction; TuneConfig may carry none (pareto runs).
        return not (metric and metric != self._metric) and not (mode and mode != self._mode)

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if self._trials.get(trial.trial_id) is trial:
            return  # a failed trial requeued for a retry: Ray already filed it as PENDING
        self._trials[trial.trial_id] = trial
        history = _reported_history(trial, self._time_attr, self._metric, self._size)
        if history:
            self._rebuild(tune_controller, trial, history)

    def _rebuild(self, tune_controller, trial: Trial, history: dict[int, dict]) -> None:
        """A restored trial: put its rung values and promotions back, re-pause it if it waited."""
        tid, last = trial.trial_id, max(history)
        for m in self.milestones:
            if m in history:
                self._record(tid, m, history[m])
                if last > m:
                    self.promoted[m].add(tid)
        if last in self.rungs and trial.status == Trial.PENDING:
            # It stopped at a rung undecided (paused, or interrupted at the decision): it
            # waits for a promotion again instead of running on (search/tune/ray_adapter.py).
            repause_restored_trial(trial)
            self.waiting[tid] = last
            _searcher(tune_controller).on_pause(tid)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        t = result[self._time_attr]
        if t >= self._max_t:
            return TrialScheduler.STOP
        if t not in self.rungs:
            return TrialScheduler.CONTINUE
        tid = trial.trial_id
        if tid in self.promoted[t]:  # a retried trial reporting this rung again
            return TrialScheduler.CONTINUE
        self._record(tid, t, result)
        self.waiting[tid] = t
        if tid in self._to_promote(t):
            self._promote(tid, t)
            return TrialScheduler.CONTINUE
        if self._out(tid, t):
            del self.waiting[tid]
            return TrialScheduler.STOP
        if self._resumed_at_once(tune_controller, trial):
            # Paused, it would be resumed at once (nothing else can run: the search's tail,
            # or a stage of one trial). A pause and resume costs a checkpoint round trip and
            # a trainable restart, 5-10 s of wall time a time on a 2-core machine, for the
            # same decision: promote it now instead.
            self._promote(tid, t)
            return TrialScheduler.CONTINUE
        _searcher(tune_controller).on_pause(tid)
        return TrialScheduler.PAUSE

    def _promote(self, tid: str, m: int) -> None:
        self.promoted[m].add(tid)
        del self.waiting[tid]

    def _resume(self, tune_controller, tid: str, m: int) -> Trial:
        """Promote a paused trial: Tune restarts it from its checkpoint once it is returned."""
        self._promote(tid, m)
        _searcher(tune_controller).on_unpause(tid)
        return self._trials[tid]

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        # A trial told to PAUSE stays RUNNING until its checkpoint is saved; until then it is
        # neither resumed nor stopped here (a later call finds it PAUSED).
        # 1. Promotions first (the paper's get_job), from the highest rung down.
        promotion = self._promotion()
        if promotion is not None:
            return self._resume(tune_controller, *promotion)
        # 2. Paused trials that can no longer be promoted end now (Optuna learns of them).
        for tid, m in list(self.waiting.items()):
            if self._out(tid, m):
                self._stop_waiting(tune_controller, tid)
        # 3. New trials, in order.
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        # 4. Nothing runs, nothing is queued and no trial is left to create: the rungs are
        #    complete. The lowest rung short of its cap promotes its best waiting trial; when
        #    none is left, whoever still waits is done.
        if not self._rungs_complete(trials):
            return None
        promotion = self._completing_promotion()
        if promotion is not None:
            return self._resume(tune_controller, *promotion)
        for tid in list(self.waiting):
            self._stop_waiting(tune_controller, tid)
        return None

    def _resumed_at_once(self, tune_controller, trial: Trial) -> bool:
        """Whether choose_trial_to_run, called with `trial` paused where it waits, would pick
        it to resume (rule 1, else rule 4, which a queued new trial, rule 3, keeps from running)."""
        promotion = self._promotion(paused=trial)
        if promotion is None and self._rungs_complete(tune_controller.get_trials(), paused=trial):
            promotion = self._completing_promotion(paused=trial)
        return promotion is not None and promotion[0] == trial.trial_id

    def _is_paused(self, tid: str, paused: Trial | None) -> bool:
        trial = self._trials[tid]
        return trial is paused or trial.status == Trial.PAUSED

    def _promotion(self, paused: Trial | None = None) -> tuple[str, int] | None:
        """Rule 1: the paused trial to promote now and its milestone, from the highest rung
        down. `paused`: a running trial to count as paused (see _resumed_at_once)."""
        for m in reversed(self.milestones):
            for tid in self._to_promote(m):
                if self._is_paused(tid, paused):
                    return tid, m
        return None

    def _rungs_complete(self, trials: list[Trial], paused: Trial | None = None) -> bool:
        """Something waits, every trial exists, and nothing (but `paused`) runs or is queued."""
        return bool(self.waiting) and len(self._trials) >= self._num_samples and not any(
            t.status in (Trial.RUNNING, Trial.PENDING) and t is not paused for t in trials)

    def _completing_promotion(self, paused: Trial | None = None) -> tuple[str, int] | None:
        """Rule 4, once the rungs are complete (the caller checks): the best waiting trial of
        the lowest rung short of its cap (a rung of fewer than eta trials promotes its best
        one), or None."""
        for m, cap in zip(self.milestones, self.caps):
            if len(self.promoted[m]) < cap:
                best = [tid for tid in self._ranking(m) if self.waiting.get(tid) == m]
                if best and self._is_paused(best[0], paused):
                    return best[0], m
        return None

    def _stop_waiting(self, tune_controller, tid: str) -> None:
        trial = self._trials[tid]
        if trial.status != Trial.PAUSED:
            return  # still saving its pause checkpoint: it stays waiting, to be stopped later
        del self.waiting[tid]
        stop_paused_trial(tune_controller, trial)  # marked done, the stop saved to disk

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.waiting.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.waiting.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.waiting.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {m}: {len(self.rungs[m])} in, {len(self.promoted[m])}/{cap} promoted"
                          for m, cap in zip(self.milestones, self.caps))
        return f"CappedASHA (eta {self._eta}): {rungs}; {len(self.waiting)} paused"


def _searcher(tune_controller):
    """The stage's PauseAwareLimiter, or a no-op stand-in for any other searcher (Ray's own
    ConcurrencyLimiter.on_pause forwards to OptunaSearch, which has no such method)."""
    searcher = stage_searcher(tune_controller)
    return searcher if isinstance(searcher, PauseAwareLimiter) else _NoSearcher()


class _NoSearcher:
    def on_pause(self, trial_id: str) -> None: ...

    def on_unpause(self, trial_id: str) -> None: ...


def _reported_history(trial: Trial, time_attr: str, metric: str, size_metric: str | None) -> dict[int, dict]:
    """{epoch: {metric, size_metric}} from a restored trial's result.json; empty for a new trial."""
    if not trial.has_reported_at_least_once:
        return {}
    for folder in (trial.local_path, trial.path):
        path = Path(folder) / "result.json" if folder else None
        if path is not None and path.is_file():
            history = {}
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a row cut short by a hard kill
                    continue
                if time_attr in row and row.get(metric) is not None:
                    history[int(row[time_attr])] = {k: row[k] for k in (metric, size_metric, "diverged")
                                                    if k and k in row}
            return history
    logger.warning("trial %s: no result.json to rebuild its ASHA rungs from", trial.trial_id)
    return {}
