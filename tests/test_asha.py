"""search/tune/capped_asha.py: the promotion-capped, pause-based ASHA, driven without Ray.

A small event loop plays Tune's part (the searcher is asked for trials while the limiter
allows, the scheduler chooses what to start, each running trial reports one epoch per step
and the scheduler's CONTINUE / PAUSE / STOP is carried out), so whole searches run in
milliseconds and every decision can be checked. The Ray end of it (pause -> checkpoint ->
resume, Tuner.restore) runs in test_search_e2e.py and test_reliability.py.
"""
import json

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from kdtune.search.tune.capped_asha import CappedASHA, PauseAwareLimiter, rung_milestones


class FakeTrial:
    """What the scheduler reads of a Ray Trial."""

    def __init__(self, trial_id, quality, folder=None, params=None):
        self.trial_id, self.quality, self.status = trial_id, quality, Trial.PENDING
        self.params = params  # reported as "params" when given (Pareto ranking)
        self.epochs, self.local_path, self.path = 0, folder, folder
        self.run_metadata = type("RunMetadata", (), {"last_result": {}, "invalidate_cache": lambda self: None})()

    @property
    def last_result(self):
        return self.run_metadata.last_result

    @property
    def has_reported_at_least_once(self):
        return bool(self.run_metadata.last_result)

    def set_status(self, status):
        self.status = status

    def val_acc(self, epoch):
        # Learning curves that rise towards the trial's quality and never cross.
        return self.quality * (1 - 0.5 ** epoch)


class RecordingSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="val_acc", mode="max")
        self.completed = {}

    def suggest(self, trial_id):
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed[trial_id] = result


class FakeTune:
    """Tune's loop, reduced: suggest, choose, start, one epoch per running trial, decide."""

    def __init__(self, scheduler, qualities, workers=2, trials=None, limiter=None):
        self.scheduler, self.qualities, self.workers = scheduler, list(qualities), workers
        self.inner = limiter.searcher if limiter else RecordingSearcher()
        self.limiter = limiter or PauseAwareLimiter(self.inner, max_concurrent=workers)
        self.search_alg = type("SearchGenerator", (), {"searcher": self.limiter})()
        self.trials = trials or []
        self.epochs_run = 0
        self.decisions = []  # (trial_id, epoch, decision)

    def get_trials(self):
        return list(self.trials)

    def stop_trial(self, trial):
        self.scheduler.on_trial_remove(self, trial)
        self.limiter.on_trial_complete(trial.trial_id)
        trial.status = Trial.TERMINATED

    def _end(self, trial, result):
        trial.status = Trial.TERMINATED
        self.scheduler.on_trial_complete(self, trial, result)
        self.limiter.on_trial_complete(trial.trial_id, result=result)

    def step(self):
        while len(self.trials) < len(self.qualities):
            tid = f"t{len(self.trials):02d}"
            if self.limiter.suggest(tid) is None:
                break
            quality = self.qualities[len(self.trials)]  # a value, or (value, params)
            trial = FakeTrial(tid, quality[0], params=quality[1]) if isinstance(quality, tuple) \
                else FakeTrial(tid, quality)
            self.trials.append(trial)
            self.scheduler.on_trial_add(self, trial)
        running = [t for t in self.trials if t.status == Trial.RUNNING]
        while len(running) < self.workers:
            chosen = self.scheduler.choose_trial_to_run(self)
            if chosen is None:
                break
            chosen.status = Trial.RUNNING
            running.append(chosen)
        for trial in running:
            trial.epochs += 1
            self.epochs_run += 1
            result = {"training_iteration": trial.epochs, "val_acc": trial.val_acc(trial.epochs)}
            if trial.params is not None:
                result["params"] = trial.params
            trial.run_metadata.last_result = result
            decision = self.scheduler.on_trial_result(self, trial, result)
            self.decisions.append((trial.trial_id, trial.epochs, decision))
            if decision == TrialScheduler.STOP:
                self._end(trial, {**result, "done": True})
            elif decision == TrialScheduler.PAUSE:
                trial.status = Trial.PAUSED

    def run(self, max_steps=10_000):
        for _ in range(max_steps):
            if len(self.trials) == len(self.qualities) and \
                    all(t.status == Trial.TERMINATED for t in self.trials):
                return self
            self.step()
        raise AssertionError(f"search did not end: {[(t.trial_id, t.status) for t in self.trials]}")


def _scheduler(num_samples, grace=2, eta=3, max_t=18):
    return CappedASHA(metric="val_acc", mode="max", max_t=max_t, grace_period=grace,
                      reduction_factor=eta, num_samples=num_samples)


# Trial qualities in the order the searcher proposes them; t05 is the best, t00 the worst.
QUALITIES = [0.50, 0.90, 0.70, 0.60, 0.80, 0.99, 0.65, 0.75, 0.85, 0.55, 0.95, 0.72]


def test_rungs_follow_grace_period_times_eta_powers_below_max_t():
    assert rung_milestones(2, 3, 18) == [2, 6]
    assert rung_milestones(1, 3, 4) == [1, 3]
    assert rung_milestones(1, 2, 9) == [1, 2, 4, 8]
    assert _scheduler(12).caps == [4, 1]
    assert _scheduler(6, grace=1, max_t=4).caps == [2, 1]  # never below one


def test_search_spends_exactly_synchronous_halvings_budget_and_trains_the_best_fully():
    tune = FakeTune(_scheduler(12), QUALITIES).run()
    epochs = {t.trial_id: t.epochs for t in tune.trials}
    # 12 trials x 2 epochs, the best 4 on to epoch 6, the best of those to 18 (vs 216 at full length).
    assert tune.epochs_run == 12 * 2 + 4 * 4 + 1 * 12 == 52
    assert sorted(epochs.values()) == [2] * 8 + [6] * 3 + [18]
    assert epochs["t05"] == 18
    assert set(tune.inner.completed) == {t.trial_id for t in tune.trials}  # Optuna hears of every trial


def test_first_trial_at_a_rung_waits_instead_of_running_on():
    tune = FakeTune(_scheduler(12), QUALITIES)
    tune.step(), tune.step()  # t00, t01 reach epoch 2 together
    assert [d for d in tune.decisions if d[1] == 2] == [("t00", 2, TrialScheduler.PAUSE),
                                                         ("t01", 2, TrialScheduler.PAUSE)]
    # Their slots are free: the limiter lets two more trials start.
    tune.step()
    assert [t.status for t in tune.trials] == [Trial.PAUSED, Trial.PAUSED, Trial.RUNNING, Trial.RUNNING]


def test_trial_that_can_never_be_promoted_stops_at_once_and_reaches_the_searcher():
    # Best trials first: once 4 better ones sit at epoch 2 (rung 0's cap for 12 trials),
    # a worse trial arriving there is stopped on its own result, not paused.
    tune = FakeTune(_scheduler(12), sorted(QUALITIES, reverse=True)).run()
    stops_at_2 = [tid for tid, epoch, d in tune.decisions if epoch == 2 and d == TrialScheduler.STOP]
    assert stops_at_2 == [f"t{i:02d}" for i in range(4, 12)]
    assert tune.inner.completed["t11"]["done"] is True  # stopped with its result
    assert tune.epochs_run == 52


def test_small_search_still_trains_its_best_trial_to_max_t():
    tune = FakeTune(_scheduler(6, grace=1, max_t=4), QUALITIES[:6]).run()
    epochs = {t.trial_id: t.epochs for t in tune.trials}
    assert epochs["t05"] == 4 and max(epochs.values()) == 4
    assert tune.epochs_run == 6 * 1 + 2 * 2 + 1 * 1


class EventTune(FakeTune):
    """FakeTune that logs ("start", trial) and ("result", trial, decision) in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []
        scheduler = self.scheduler
        choose, decide = scheduler.choose_trial_to_run, scheduler.on_trial_result

        def logged_choose(tune):
            chosen = choose(tune)
            if chosen is not None:
                self.events.append(("start", chosen.trial_id))
            return chosen

        def logged_result(tune, trial, result):
            decision = decide(tune, trial, result)
            self.events.append(("result", trial.trial_id, decision))
            return decision

        scheduler.choose_trial_to_run, scheduler.on_trial_result = logged_choose, logged_result


@pytest.mark.parametrize("num_samples, workers", [(12, 2), (12, 1), (6, 2), (3, 2), (1, 1)])
def test_no_trial_is_paused_only_to_be_resumed_next(num_samples, workers):
    # A pause costs a checkpoint round trip and a trainable restart (seconds in Ray): a trial
    # that nothing else could replace (the search's tail, a stage of one trial) goes on instead.
    tune = EventTune(_scheduler(num_samples, grace=1, max_t=9), QUALITIES[:num_samples], workers=workers).run()
    for before, after in zip(tune.events, tune.events[1:]):
        assert not (before[0] == "result" and before[2] == TrialScheduler.PAUSE and after == ("start", before[1])), \
            f"{before[1]} paused and resumed with nothing in between: {tune.events}"
    # The budget is synchronous successive halving's, as when it paused: rungs 1, 3, 9.
    caps = tune.scheduler.caps
    assert tune.epochs_run == num_samples * 1 + caps[0] * 2 + caps[1] * 6
    best = max(tune.trials, key=lambda t: t.quality)
    assert best.epochs == 9


def test_a_lone_trial_is_never_paused():
    tune = FakeTune(_scheduler(1, grace=1, max_t=9), [0.5], workers=2).run()
    assert [d for _, _, d in tune.decisions] == [TrialScheduler.CONTINUE] * 8 + [TrialScheduler.STOP]


def test_the_last_running_trial_pauses_when_a_queued_trial_can_take_its_place():
    # 3 trials, 1 worker: t00 reaches rung 1 alone while t01 and t02 are still to start, so it
    # pauses (its slot goes to t01); t02, the last, is then resumed only as the rungs complete.
    tune = EventTune(_scheduler(3, grace=1, max_t=9), [0.9, 0.5, 0.7], workers=1).run()
    assert ("result", "t00", TrialScheduler.PAUSE) in tune.events
    assert tune.epochs_run == 3 + 1 * 2 + 1 * 6


def test_paused_trial_stopped_at_the_end_is_marked_done():
    tune = FakeTune(_scheduler(12), QUALITIES).run()
    paused_then_stopped = [t for t in tune.trials if t.trial_id in tune.inner.completed
                           and tune.inner.completed[t.trial_id] is None]
    assert paused_then_stopped, "some trial should have waited at a rung and been stopped there"
    assert all(t.last_result["done"] for t in paused_then_stopped)


def test_trial_still_saving_its_pause_is_stopped_once_paused_not_forgotten():
    scheduler = _scheduler(3, grace=1, max_t=3)  # one rung (epoch 1), cap 1
    tune = FakeTune(scheduler, [0.9, 0.95, 0.5])
    a, b = FakeTrial("a", 0.9), FakeTrial("b", 0.95)
    for trial in (a, b):
        tune.trials.append(trial)
        scheduler.on_trial_add(tune, trial)
        trial.status = Trial.RUNNING
        trial.run_metadata.last_result = {"training_iteration": 1, "val_acc": trial.quality}
        assert scheduler.on_trial_result(tune, trial, trial.last_result) == TrialScheduler.PAUSE
    # b's arrival leaves a no way up, while a's pause checkpoint is still being saved.
    scheduler.choose_trial_to_run(tune)
    assert a.status == Trial.RUNNING and scheduler.waiting == {"a": 1, "b": 1}
    a.status = b.status = Trial.PAUSED  # Tune files both as PAUSED once saved
    scheduler.choose_trial_to_run(tune)
    assert a.status == Trial.TERMINATED and a.last_result["done"] is True
    assert scheduler.waiting == {"b": 1}


def test_limiter_frees_a_paused_trials_slot_and_forwards_its_completion():
    inner = RecordingSearcher()
    limiter = PauseAwareLimiter(inner, max_concurrent=1)
    assert limiter.suggest("a") is not None and limiter.suggest("b") is None
    limiter.on_pause("a")
    assert limiter.suggest("b") is not None and limiter.suggest("c") is None
    limiter.on_unpause("a")
    assert limiter.live_trials == {"a", "b"}
    limiter.on_pause("a")
    limiter.on_trial_complete("a")  # stopped while paused
    assert "a" in inner.completed and limiter.live_trials == {"b"}


def _restored(first: FakeTune, scheduler: CappedASHA, folder) -> FakeTune:
    """What Tuner.restore hands a fresh scheduler after `first` stops: new Trial objects,
    unfinished ones PENDING, their checkpointed rows in result.json."""
    restored = []
    for old in first.trials:
        trial_dir = folder / old.trial_id
        trial_dir.mkdir(parents=True)
        (trial_dir / "result.json").write_text("".join(
            json.dumps({"training_iteration": e, "val_acc": old.val_acc(e)}) + "\n"
            for e in range(1, old.epochs + 1)))
        trial = FakeTrial(old.trial_id, old.quality, str(trial_dir))
        trial.epochs, trial.run_metadata.last_result = old.epochs, dict(old.last_result)
        trial.status = Trial.TERMINATED if old.status == Trial.TERMINATED else Trial.PENDING
        restored.append(trial)
    limiter = PauseAwareLimiter(RecordingSearcher(), max_concurrent=first.workers)
    for trial in restored:
        if trial.status != Trial.TERMINATED:
            limiter.live_trials.add(trial.trial_id)
    second = FakeTune(scheduler, first.qualities, workers=first.workers, trials=restored, limiter=limiter)
    for trial in restored:
        second.scheduler.on_trial_add(second, trial)
    return second


@pytest.mark.parametrize("interrupt_at_step", [3, 7, 12])
def test_restore_rebuilds_rungs_from_result_json_and_ends_like_an_uninterrupted_run(tmp_path, interrupt_at_step):
    reference = FakeTune(_scheduler(12), QUALITIES).run()
    first = FakeTune(_scheduler(12), QUALITIES)
    for _ in range(interrupt_at_step):
        first.step()
    second = _restored(first, _scheduler(12), tmp_path)
    waiting = {t.trial_id for t in second.trials if t.status == Trial.PAUSED}
    # Every paused trial waits again (a trial promoted at the very epoch of the interrupt,
    # with no epoch past its rung checkpointed, is decided again: it waits too).
    assert {t.trial_id for t in first.trials if t.status == Trial.PAUSED} <= waiting
    assert all(t.epochs in (2, 6) for t in second.trials if t.trial_id in waiting)
    second.run()
    assert first.epochs_run + second.epochs_run == reference.epochs_run == 52
    assert {t.trial_id: t.epochs for t in second.trials}["t05"] == 18


@pytest.mark.parametrize("num_samples, workers", [(6, 2), (3, 2), (1, 1)])
def test_a_search_interrupted_at_any_step_of_its_tail_resumes_to_the_same_budget(tmp_path, num_samples, workers):
    # The tail is where a trial goes on at its rung without a pause (nothing else could run);
    # interrupted there, its rung is decided again on restore and comes out the same.
    def scheduler():
        return _scheduler(num_samples, grace=1, max_t=9)

    qualities = QUALITIES[:num_samples]
    reference = FakeTune(scheduler(), qualities, workers=workers)
    steps = 0
    while not (len(reference.trials) == num_samples and all(t.status == Trial.TERMINATED for t in reference.trials)):
        reference.step()
        steps += 1
    for interrupt_at_step in range(1, steps):
        first = FakeTune(scheduler(), qualities, workers=workers)
        for _ in range(interrupt_at_step):
            first.step()
        second = _restored(first, scheduler(), tmp_path / f"step{interrupt_at_step}")
        second.run()
        assert first.epochs_run + second.epochs_run == reference.epochs_run, interrupt_at_step
        best = max(second.trials, key=lambda t: t.quality)
        assert best.epochs == 9, interrupt_at_step


def test_min_mode_promotes_the_lowest_values():
    scheduler = CappedASHA(metric="loss", mode="min", max_t=4, grace_period=1, reduction_factor=2,
                           num_samples=4)
    tune = FakeTune(scheduler, [0.9, 0.1, 0.5, 0.3])
    for trial_id, loss in (("a", 0.9), ("b", 0.1)):
        trial = FakeTrial(trial_id, loss)
        tune.trials.append(trial)
        scheduler.on_trial_add(tune, trial)
        trial.status = Trial.RUNNING
    assert scheduler.on_trial_result(tune, tune.trials[0], {"training_iteration": 1, "loss": 0.9}) \
        == TrialScheduler.PAUSE
    assert scheduler.on_trial_result(tune, tune.trials[1], {"training_iteration": 1, "loss": 0.1}) \
        == TrialScheduler.CONTINUE


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        _scheduler(12, grace=20)
    with pytest.raises(ValueError):
        CappedASHA(metric="val_acc", mode="best", max_t=4, grace_period=1, reduction_factor=2, num_samples=2)


# ---- --objective pareto: a rung ranks by non-dominated rank on (val_acc, params) -----------

# Six students (quality, params): three large accurate ones (each larger one slightly worse:
# dominated by t00), one small good one (t03), two poor mid-sized ones. Rung 0 (epoch 1) of a
# 6-trial search with eta 3 promotes 2.
PARETO_TRIALS = [(0.90, 1_000_000), (0.88, 1_100_000), (0.86, 1_200_000), (0.80, 10_000),
                 (0.50, 500_000), (0.55, 600_000)]


def _survivors(size_metric):
    scheduler = CappedASHA(metric="val_acc", mode="max", max_t=3, grace_period=1, reduction_factor=3,
                           num_samples=6, size_metric=size_metric)
    tune = FakeTune(scheduler, PARETO_TRIALS).run()
    return {t.trial_id for t in tune.trials if t.epochs > 1}, tune


def test_pareto_rung_keeps_the_small_good_student_that_accuracy_ranking_cuts():
    by_accuracy, _ = _survivors(None)
    assert by_accuracy == {"t00", "t01"}  # the two most accurate, both large
    by_pareto, tune = _survivors("params")
    assert by_pareto == {"t00", "t03"}  # the front: most accurate and small-but-good
    assert {t.trial_id: t.epochs for t in tune.trials}["t03"] == 3
    assert tune.epochs_run == 6 * 1 + 2 * 2  # the same budget as ranking by accuracy


def test_pareto_ties_within_a_front_go_to_the_larger_crowding_distance():
    # Four points on one front and one behind it, recorded at rung 1 directly: the front's two
    # extremes (infinite crowding) first in arrival order, then the interior by crowding distance.
    scheduler = CappedASHA(metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3,
                           num_samples=9, size_metric="params")
    points = {"a": (0.9, 100), "b": (0.85, 80), "c": (0.8, 50), "d": (0.7, 10), "e": (0.6, 60)}
    for tid, (acc, params) in points.items():
        scheduler._record(tid, 1, {"val_acc": acc, "params": params})
    # crowding (hand-computed): b = 0.1/0.2 + 50/90 = 1.06, c = 0.15/0.2 + 70/90 = 1.53; e is dominated.
    assert scheduler._ranking(1) == ["a", "d", "c", "b", "e"]
    # e is dominated by c and d: with a cap of 3 it can never be promoted, whatever comes.
    assert scheduler._surely_ahead("e", 1) == 2


def test_a_diverged_trial_ranks_last_even_when_smallest():
    scheduler = CappedASHA(metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3,
                           num_samples=9, size_metric="params")
    scheduler._record("tiny", 1, {"val_acc": 0.0, "params": 10, "diverged": 1})
    scheduler._record("big", 1, {"val_acc": 0.5, "params": 10_000, "diverged": 0})
    assert scheduler._ranking(1) == ["big", "tiny"]
