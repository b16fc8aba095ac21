"""The search's console: one progress line per stage, plain lines when stdout is no terminal."""
import io
import json
import pickle
import re
from types import SimpleNamespace

from ray.tune.experiment import Trial

from kdtune.search.tune import progress as console
from kdtune.search.tune.capped_asha import CappedASHA

LINE = re.compile(r"^(teacher|baseline|distill|final) \|[ #0-9]{10}\| (\d+)/(\d+) epochs \| (\d+)/(\d+) ended")


def _trial(tid, status, epochs=0, best=None, diverged=False):
    result = {"training_iteration": epochs, **({"diverged": True} if diverged else {})}
    return SimpleNamespace(trial_id=tid, status=status, last_result=result, path=f"/x/{tid}", local_path=None,
                           metric_analysis={} if best is None else {"val_acc": {"max": best}})


def test_planned_epochs_is_synchronous_halvings_budget():
    # 12 trials, grace 2, eta 3, 18 epochs: all 12 reach epoch 2, 4 go on to 6, 1 to 18.
    asha = CappedASHA(metric="val_acc", mode="max", max_t=18, grace_period=2, reduction_factor=3, num_samples=12)
    assert console.planned_epochs(12, 18, asha.milestones, asha.caps) == 12 * 2 + 4 * (6 - 2) + 1 * (18 - 6)
    assert console.planned_epochs(3, 5) == 15  # no scheduler: every trial runs to the end


def test_counts_sort_trials_by_what_became_of_them():
    trials = [_trial("a", Trial.TERMINATED, 4, 0.9), _trial("b", Trial.TERMINATED, 1, 0.5),
              _trial("c", Trial.TERMINATED, 1, diverged=True), _trial("d", Trial.ERROR, 2),
              _trial("e", Trial.RUNNING, 2, 0.95), _trial("f", Trial.PAUSED, 1, 0.7), _trial("g", Trial.PENDING)]
    assert console.counts(trials, max_epochs=4) == {"ended": 4, "stopped early": 1, "diverged": 1, "failed": 1,
                                                     "running": 1, "paused": 1, "pending": 1}
    text = console.describe(trials, num_samples=8, max_epochs=4)
    assert text == (" | 4/8 ended: 1 stopped early, 1 diverged, 1 failed | 1 running, 1 paused, 1 queued"
                    " | best val_acc 95.00% (e)")


def test_plain_lines_only_when_trial_counts_change(monkeypatch):
    out = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stdout", out)
    bar = console.StageProgress("distill", num_samples=2, max_epochs=3, planned=6)
    bar.setup()
    running = [_trial("a", Trial.RUNNING, 1, 0.5), _trial("b", Trial.PENDING)]
    assert bar.should_report(running)
    bar.report(running, done=False)
    better = [_trial("a", Trial.PAUSED, 2, 0.8), _trial("b", Trial.RUNNING)]
    assert not bar.should_report(better)  # a new epoch, a new best, a pause alone: no line
    ended = [_trial("a", Trial.TERMINATED, 3, 0.9), _trial("b", Trial.RUNNING, 1, 0.6)]
    assert not bar.should_report(ended)  # a trial ended, but the last line is under 5 s old
    monkeypatch.setattr(console, "PLAIN_MIN_GAP_S", 0.0)
    assert bar.should_report(ended)
    bar.report(ended, done=False)
    bar.report(ended, done=True)  # Tune's closing report repeats the last state: not printed again
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert [LINE.match(line).groups() for line in lines] == [("distill", "1", "6", "0", "2"),
                                                            ("distill", "4", "6", "1", "2")]
    assert "best val_acc 90.00% (a)" in lines[1] and "1 running" in lines[1]


def test_reporter_pickles_without_its_session_state():
    bar = console.StageProgress("baseline", num_samples=3, max_epochs=4, planned=9)
    bar.setup()
    bar._last_draw = 123.0
    copy = pickle.loads(pickle.dumps(bar))  # as Tune stores it for Tuner.restore
    assert (copy.stage, copy.num_samples, copy.planned) == ("baseline", 3, 9)
    assert copy._start is None and copy._last_draw == 0.0


def test_search_console_is_short_and_ends_with_the_summary(small_search):
    """What the shared small search printed on a captured (non-terminal) stdout."""
    lines = (small_search.parent / "small.console.txt").read_text().splitlines()
    spec = json.loads((small_search / "manifest.json").read_text())["spec"]
    assert lines[0].startswith(f"kdtune: experiment {small_search} (new; dataset digits")
    progress = [m for m in map(LINE.match, lines) if m]
    # Short: before the summary, besides the progress lines, a fixed few (experiment, stages,
    # the teacher-logit cache); then summary.md itself, nothing else. Progress lines per stage
    # within the reporter's rule (the first, one per ended trial at most, a heartbeat every
    # PLAIN_INTERVAL_S, the closing one), however slow the machine.
    summary = lines.index(f"# kdtune run `{small_search.name}`")
    others = [line for line in lines[:summary] if not LINE.match(line)]
    assert len(others) <= 6, "\n".join(others)
    assert "\n".join(lines[summary:]).strip() == (small_search / "summary.md").read_text().strip()
    for stage in {m.group(1) for m in progress}:
        mine = [m for m in progress if m.group(1) == stage]
        minutes, seconds = re.search(r"(\d+):(\d+) elapsed", mine[-1].string).groups()
        heartbeats = (60 * int(minutes) + int(seconds)) / console.PLAIN_INTERVAL_S
        assert len(mine) <= 2 + int(mine[-1].group(5)) + heartbeats, "\n".join(m.string for m in mine)
    assert {m.group(1) for m in progress} == {"teacher", "baseline", "distill", "final"}
    last = {m.group(1): m for m in progress}  # each stage's final line: every trial ended
    assert last["distill"].group(4, 5) == (str(spec["num_samples"]),) * 2
    assert last["baseline"].group(4, 5) == (str(spec["baseline_samples"]),) * 2
    assert "best val_acc" in last["distill"].string
    assert summary > lines.index(last["distill"].string)  # the summary table comes last
    assert any(line.startswith("| best distilled |") for line in lines[summary:])
    text = "\n".join(lines)
    for noise in ("To visualize your results with TensorBoard", "Trial status:", "started with configuration",
                  "/tmp/ray/session_", "╭"):
        assert noise not in text


def test_the_never_started_trials_warning_of_a_resume_is_dropped_and_other_failures_kept():
    """After an interrupt, Ray's ExperimentAnalysis warns about each queued trial that has no
    result files yet; that warning goes, any other failure to read a trial stays."""
    import logging

    console.console_settings(verbose=False)
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        missing = ("- distill_student_a: FileNotFoundError('Could not fetch metrics for distill_student_a: both "
                   "result.json and progress.csv were not found at /x/distill_student_a')")
        logger.warning(f"Failed to fetch metrics for 1 trial(s):\n{missing}")
        other = "- distill_student_b: ValueError('Expected object or value')"
        logger.warning(f"Failed to fetch metrics for 2 trial(s):\n{missing}\n{other}")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert seen == [f"Failed to fetch metrics for 2 trial(s):\n{missing}\n{other}", "something else"]
    console.console_settings(verbose=False)  # installing twice adds no second filter
    assert sum(isinstance(f, console._DropNeverStartedTrials) for f in logger.filters) == 1


def test_the_staging_temp_file_race_of_a_state_save_is_dropped_and_other_save_failures_kept():
    """Ray's experiment-state upload can list the searcher state's temp file just before it is
    renamed (a FileNotFoundError naming `.<uuid>-tmp-searcher-state-...pkl`): harmless, the next
    save uploads it all. Any other failed save, or the same message for another file, stays."""
    import logging

    console.console_settings(verbose=False)
    logger = logging.getLogger("ray.tune.execution.experiment_state")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.getMessage(), type(record.exc_info[1]).__name__ if record.exc_info else None))

    def failed_save(error):
        try:
            raise error
        except Exception:
            logger.error("Saving experiment state to storage at '/x/distill' failed with exception: ", exc_info=True)

    handler = Keep()
    logger.addHandler(handler)
    try:
        failed_save(FileNotFoundError(2, "Failed to open local file '/tmp/ray/session_1/artifacts/d/distill/"
                                         "driver_artifacts/.de2f692d-4d32-tmp-searcher-state-2026.pkl'"))
        failed_save(FileNotFoundError(2, "Failed to open local file '/x/distill/experiment_state.json'"))
        failed_save(PermissionError(13, "Permission denied: '/x/.ab-tmp-searcher-state.pkl'"))
        logger.error("something else")
    finally:
        logger.removeHandler(handler)
    saving = "Saving experiment state to storage at '/x/distill' failed with exception: "
    assert seen == [(saving, "FileNotFoundError"), (saving, "PermissionError"), ("something else", None)]
    console.console_settings(verbose=False)
    assert sum(isinstance(f, console._DropStagingTempFileRace) for f in logger.filters) == 1
