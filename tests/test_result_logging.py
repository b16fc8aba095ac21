"""The result loggers write a checkpointed row only once Ray registered its checkpoint."""
from types import SimpleNamespace

from kdtune.search.tune.result_loggers import CSVLogger, JsonLogger, TBXLogger, _RowAfterCheckpoint


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


class _Trial(SimpleNamespace):
    __hash__ = object.__hash__  # the loggers key their open files by trial, as Ray's Trial allows


def _trial(tmp_path, name="t"):
    """What Ray's JSON/CSV loggers read of a checkpointed trial: the driver's folder and storage's."""
    import pyarrow.fs

    local, remote = tmp_path / "driver" / name, tmp_path / "storage" / name
    local.mkdir(parents=True), remote.mkdir(parents=True)
    return _Trial(trial_id=name, config={}, checkpoint=object(), local_path=str(local),
                  init_local_path=lambda: None,
                  storage=SimpleNamespace(trial_fs_path=str(remote),
                                          storage_filesystem=pyarrow.fs.LocalFileSystem()))


def _rows(path):
    import json

    return [json.loads(line)["training_iteration"] for line in path.read_text().splitlines()]


def test_a_retried_trial_keeps_the_rows_the_driver_wrote_since_the_last_sync(tmp_path):
    import json
    from pathlib import Path

    trial = _trial(tmp_path)
    local, remote = Path(trial.local_path, "result.json"), Path(trial.storage.trial_fs_path, "result.json")
    log = JsonLogger()
    for epoch in (1, 2):
        log.log_trial_result(epoch, trial, {"training_iteration": epoch})
    remote.write_text(json.dumps({"training_iteration": 1}) + "\n")  # the last sync saw epoch 1 only
    log.log_trial_start(trial)  # the worker died after epoch 2's checkpoint; Ray restarts the trial
    log.log_trial_result(3, trial, {"training_iteration": 3})
    assert _rows(local) == [1, 2, 3]  # Ray's own logger copied storage's file over it: [1, 3]
    csv_log = CSVLogger()
    for epoch in (1, 2):
        csv_log.log_trial_result(epoch, trial, {"training_iteration": epoch})
    Path(trial.storage.trial_fs_path, "progress.csv").write_text("training_iteration\n1\n")
    csv_log.log_trial_start(trial)
    csv_log.log_trial_result(3, trial, {"training_iteration": 3})
    assert Path(trial.local_path, "progress.csv").read_text().split() == ["training_iteration", "1", "2", "3"]


def test_a_driver_without_the_file_takes_storages_copy(tmp_path):
    import json
    from pathlib import Path

    trial = _trial(tmp_path)  # Tuner.restore in a new session: a fresh, empty driver folder
    Path(trial.storage.trial_fs_path, "result.json").write_text(
        "".join(json.dumps({"training_iteration": e}) + "\n" for e in (1, 2)))
    log = JsonLogger()
    log.log_trial_start(trial)
    log.log_trial_result(3, trial, {"training_iteration": 3})
    assert _rows(Path(trial.local_path, "result.json")) == [1, 2, 3]
