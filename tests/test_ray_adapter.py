"""search/tune/ray_adapter.py: one test per Ray internal kdtune relies on (numbered as in its
docstring). Each runs against Ray's own classes, without a cluster, so a Ray upgrade that
moves one of them fails here rather than inside a search."""
import inspect
import json

import optuna
from optuna.trial import TrialState
from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
from ray.tune.experiment import Trial
from ray.tune.logger import LoggerCallback
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.search_generator import SearchGenerator

from kdtune.search.tune import ray_adapter as ra
from kdtune.search.tune.optuna_searcher import FidelityOptunaSearch


class _Plain(Searcher):
    def __init__(self):
        super().__init__(metric="val_acc", mode="max")

    def suggest(self, trial_id):
        return {"x": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def test_1_stage_searcher_is_the_searcher_behind_the_search_generator():
    limiter = ConcurrencyLimiter(_Plain(), max_concurrent=1)
    wrapper = TrialRunnerWrapper(type("Controller", (), {"search_alg": SearchGenerator(limiter)})(),
                                 trial_executor=None, runner_whitelist_attr={"search_alg"})
    assert ra.stage_searcher(wrapper) is limiter
    assert ra.stage_searcher(object()) is None


def test_2_release_and_retake_a_slot_of_rays_concurrency_limiter():
    limiter = ConcurrencyLimiter(_Plain(), max_concurrent=1)
    assert limiter.suggest("a") is not None and limiter.suggest("b") is None  # full
    assert ra.release_slot(limiter, "a") and not ra.release_slot(limiter, "a")
    assert limiter.suggest("b") is not None  # the freed slot is used
    ra.retake_slot(limiter, "a")
    limiter.on_trial_complete("b")
    assert limiter.suggest("c") is None  # a counts again


def test_3_a_pending_trial_can_be_set_paused_before_tune_files_it():
    trial = Trial("__fake", stub=True)
    assert trial.status == Trial.PENDING
    ra.repause_restored_trial(trial)
    assert trial.status == Trial.PAUSED


def test_4_stopping_a_paused_trial_marks_its_serialised_last_result_done():
    trial = Trial("__fake", stub=True)
    trial.run_metadata.last_result = {"training_iteration": 2, "val_acc": 0.5}
    assert "done" not in json.loads(trial.run_metadata.get_json_state())["last_result"]  # cached now
    calls = []

    class Controller:  # what TuneController does on these calls, recorded
        def stop_trial(self, t):
            calls.append(("stop", t))

        def _mark_trial_to_checkpoint(self, t):
            calls.append(("mark", t))

    wrapper = TrialRunnerWrapper(Controller(), trial_executor=None, runner_whitelist_attr={"stop_trial"})
    ra.stop_paused_trial(wrapper, trial)
    assert json.loads(trial.run_metadata.get_json_state())["last_result"]["done"] is True
    assert calls == [("stop", trial), ("mark", trial)]
    # ... and the real controller still has both, and the wrapper still keeps it as _tune_controller.
    assert callable(TuneController.stop_trial) and callable(TuneController._mark_trial_to_checkpoint)
    assert "_tune_controller" in inspect.getsource(TrialRunnerWrapper.__init__)


def test_5_logger_hooks_and_the_checkpoint_flag():
    for cls in ra.RAY_LOGGERS:
        assert issubclass(cls, LoggerCallback)
    params = lambda name: list(inspect.signature(getattr(LoggerCallback, name)).parameters)  # noqa: E731
    assert params("on_trial_result")[:5] == ["self", "iteration", "trials", "trial", "result"]
    assert params("on_checkpoint")[:5] == ["self", "iteration", "trials", "trial", "checkpoint"]
    for hook in ("on_trial_recover", "on_trial_error", "on_trial_complete"):
        assert params(hook)[:4] == ["self", "iteration", "trials", "trial"]
    assert ra.carries_checkpoint({"should_checkpoint": True}) and not ra.carries_checkpoint({})


def test_6_optuna_search_state_round_trips_through_its_searcher_state_file(tmp_path):
    searcher = FidelityOptunaSearch(space=space, metric="val_acc", mode="max", max_epochs=1,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.suggest("a")
    assert isinstance(ra.optuna_trial(searcher, "a"), optuna.Trial)
    assert not ra.already_told(searcher, "a")
    searcher.on_trial_complete("a", result={"training_iteration": 1, "val_acc": 0.7})
    assert ra.already_told(searcher, "a")
    searcher.save_to_dir(str(tmp_path), session_str="2026-01-01")  # what Tune writes per stage
    study = ra.load_study(tmp_path)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 0.7)]
    assert study is not ra.optuna_study(searcher)  # read back from the file


def test_7_tune_hands_a_stopping_result_to_the_searcher_only_at_completion():
    # TuneController._process_trial_result calls search_alg.on_trial_result only when the
    # scheduler's decision is not STOP; search/tune/optuna_searcher.py records that result on completion.
    source = inspect.getsource(TuneController._process_trial_result)
    stop_branch = source.index("if decision == TrialScheduler.STOP")
    assert "_search_alg.on_trial_result" in source[stop_branch:]
    assert source.index("else:", stop_branch) < source.index("_search_alg.on_trial_result")
