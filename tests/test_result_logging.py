"""The result loggers write a checkpointed row only once Ray registered its checkpoint."""
from types import SimpleNamespace

from search.result_logging import CSVLogger, JsonLogger, TBXLogger, _RowAfterCheckpoint


class _Recorder:
    """Stands in for a Ray LoggerCallback: records what it was asked to write."""

    def __init__(self):
        self.rows = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.rows.append((trial.trial_id, result["training_iteration"]))

    def on_checkpoint(self, *args, **info):
        pass

    on_trial_recover = on_trial_error = on_trial_complete = on_checkpoint


class _Logger(_RowAfterCheckpoint, _Recorder):
    pass


A, B = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")


def _result(epoch, checkpoint=True):
    return {"training_iteration": epoch, "should_checkpoint": checkpoint}


def test_a_checkpointed_row_waits_for_its_checkpoint():
    log = _Logger()
    log.on_trial_result(1, [], A, _result(1))
    assert log.rows == []
    log.on_checkpoint(1, [], A, checkpoint=None)
    assert log.rows == [("a", 1)]


def test_a_row_without_checkpoint_is_written_at_once():
    log = _Logger()
    log.on_trial_result(1, [], A, _result(1, checkpoint=False))  # e.g. a diverged epoch
    assert log.rows == [("a", 1)]


def test_an_interrupt_before_registration_leaves_no_row_ahead_of_the_checkpoint():
    log = _Logger()
    for epoch in (1, 2):
        log.on_trial_result(epoch, [], A, _result(epoch))
        log.on_checkpoint(epoch, [], A, checkpoint=None)
    log.on_trial_result(3, [], A, _result(3))  # fit() returns before the save answers
    assert log.rows == [("a", 1), ("a", 2)]


def test_a_retried_trial_drops_its_held_row_and_a_finished_one_writes_it():
    log = _Logger()
    log.on_trial_result(1, [], A, _result(1))
    log.on_trial_recover(1, [], A)  # the retry re-runs epoch 1 from the last checkpoint
    log.on_trial_result(2, [], B, _result(1))
    log.on_trial_error(2, [], B)  # out of retries: nobody reports that epoch again
    assert log.rows == [("b", 1)]


def test_the_three_ray_loggers_are_replaced():
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    assert issubclass(CSVLogger, CSVLoggerCallback) and issubclass(JsonLogger, JsonLoggerCallback)
    assert issubclass(TBXLogger, TBXLoggerCallback)
