"""What a search prints: one progress line per stage instead of Ray's tables.

Each stage's Tune run gets a `StageProgress` (a Ray Tune `ProgressReporter`, which Tune calls
after every step with the list of trials). It shows

    distill  |####------| 18/52 epochs | 5/12 ended: 3 stopped early, 1 diverged | 2 running, 1 paused | best val_acc 98.61% (1a2b3c4d) | 0:41 elapsed, ~1:05 left

On a terminal the line is a tqdm bar refreshed in place; when stdout is not a terminal (CI,
`| tee`, a log file) the same text is printed as plain lines, only when a count changes or
every `PLAIN_INTERVAL_S` seconds, so a log holds a few lines per stage rather than thousands.
The bar counts trial-epochs against the stage's planned budget (`planned_epochs`), and the
time left is what that budget still needs at the rate this session has trained so far.

`quiet_mode()` / `verbose_mode()` choose between this and Ray's own output for the run (see
`console_settings`): both are read when a stage starts, so a `--resume` follows the flags of
the command that resumes, not of the one that started the experiment.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any, TextIO

import optuna
from ray.tune import ProgressReporter
from ray.tune.experiment import Trial
from tqdm import tqdm

from kdtune.trainables.reporting import METRIC

PLAIN_INTERVAL_S = 60.0  # a plain-text line at least this often while nothing changes (a heartbeat)
PLAIN_MIN_GAP_S = 5.0    # ... and when a trial ends, but no two lines closer than this
TTY_INTERVAL_S = 0.5     # redraw rate of the in-place bar


def run_header(spec, bundle) -> str:
    """The two lines a search prints before its first stage (the CLI and kdtune.run_search)."""
    return (f"kdtune: experiment {spec.experiment_dir} ({'resuming' if spec.resume else 'new'}; "
            f"dataset {spec.dataset}: {len(bundle.train)} train / {len(bundle.val)} val images)\n"
            f"kdtune: stages {' -> '.join(spec.planned_stages())}; up to {spec.max_epochs} epochs a trial, "
            f"{spec.max_concurrent} at once" + ("" if spec.verbose else "; --verbose shows Ray's own tables"))


def bar_format(text: str, left: str) -> str:
    """tqdm's layout with the trial counts in the middle (their braces escaped for str.format)."""
    counts_text = text.replace("{", "{{").replace("}", "}}")
    return "{desc} |{bar:10}| {n_fmt}/{total_fmt} epochs" + counts_text + " | {elapsed} elapsed, ~" + left + " left"


def planned_epochs(num_samples: int, max_epochs: int, milestones: list[int] | None = None,
                   caps: list[int] | None = None) -> int:
    """Trial-epochs a stage is expected to train.

    Without a scheduler every trial runs max_epochs. Under kdtune's ASHA (search/tune/capped_asha.py) all
    trials reach the first rung, and rung k passes on at most caps[k] trials to the next one, so
    the budget is N * m0 + sum_k caps[k] * (m_{k+1} - m_k) with m_last+1 = max_epochs: what
    synchronous successive halving spends. Diverged trials and early stops can only lower it.
    """
    if not milestones:
        return num_samples * max_epochs
    bounds = list(milestones) + [max_epochs]
    total = num_samples * bounds[0]
    for cap, (lo, hi) in zip(caps or [], zip(bounds, bounds[1:])):
        total += cap * (hi - lo)
    return total


def _epochs(trial: Trial) -> int:
    return int((trial.last_result or {}).get("training_iteration", 0) or 0)


def _best(trial: Trial) -> float | None:
    value = trial.metric_analysis.get(METRIC, {}).get("max")
    return None if value is None or value != value else float(value)  # NaN: diverged


def counts(trials: list[Trial], max_epochs: int) -> dict[str, int]:
    """Trials by what became of them: ended (of which stopped early / diverged / failed), running, ..."""
    out = dict.fromkeys(("ended", "stopped early", "diverged", "failed", "running", "paused", "pending"), 0)
    for trial in trials:
        if trial.status == Trial.RUNNING:
            out["running"] += 1
        elif trial.status == Trial.PAUSED:
            out["paused"] += 1
        elif trial.status == Trial.PENDING:
            out["pending"] += 1
        else:  # TERMINATED or ERROR
            out["ended"] += 1
            if trial.status == Trial.ERROR:
                out["failed"] += 1
            elif (trial.last_result or {}).get("diverged"):
                out["diverged"] += 1
            elif _epochs(trial) < max_epochs:
                out["stopped early"] += 1
    return out


def describe(trials: list[Trial], num_samples: int, max_epochs: int) -> str:
    """The part of the line after the epoch counter: trial counts and the best trial so far."""
    c = counts(trials, max_epochs)
    ended = ", ".join(f"{c[k]} {k}" for k in ("stopped early", "diverged", "failed") if c[k])
    parts = [f"{c['ended']}/{num_samples} ended" + (f": {ended}" if ended else ""),
             ", ".join(f"{c[k]} {k}" for k in ("running", "paused") if c[k]) or "none running"]
    if c["pending"] and c["ended"] < num_samples:
        parts[-1] += f", {c['pending']} queued"
    scored = [(b, t) for t in trials if (b := _best(t)) is not None]
    if scored:
        value, trial = max(scored, key=lambda item: item[0])
        parts.append(f"best {METRIC} {100 * value:.2f}% ({trial.trial_id})")
    return " | " + " | ".join(parts)


class StageProgress(ProgressReporter):
    """One stage's progress line (tqdm on a terminal, throttled plain lines elsewhere).

    Pickled with the run configuration (Tune stores it for `Tuner.restore`): the live bar and
    clocks are per session and left out, so a restored stage starts its own line.
    """

    def __init__(self, stage: str, num_samples: int, max_epochs: int, planned: int):
        self.stage, self.num_samples, self.max_epochs, self.planned = stage, num_samples, max_epochs, planned
        self._reset()

    def _reset(self) -> None:
        self._bar: tqdm | None = None
        self._start: float | None = None
        self._initial = 0          # epochs trained before this session (a resumed stage)
        self._last_draw = 0.0
        self._last_counts: dict[str, int] = {}
        self._last_shown: tuple[int, int, str] | None = None
        self._first: tuple[float, int] | None = None  # (time, epochs) at the first epoch seen
        self._reported_errors: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_bar", "_start", "_initial", "_last_draw", "_last_counts", "_last_shown", "_first",
                    "_reported_errors"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def _out(self) -> TextIO:
        return sys.stdout

    def _tty(self) -> bool:
        return bool(getattr(self._out, "isatty", lambda: False)())

    # ---- Ray's reporter interface -----------------------------------------------------
    def setup(self, start_time: float | None = None, total_samples: int | None = None, **kwargs) -> None:
        self._start = time.time()

    def should_report(self, trials: list[Trial], done: bool = False) -> bool:
        if done:
            return True
        now = time.time()
        if self._tty():
            return now - self._last_draw >= TTY_INTERVAL_S
        # A plain line when a trial ended (ASHA pauses and resumes trials all the time: those,
        # new epochs and new bests alone print nothing), at most every PLAIN_MIN_GAP_S.
        since = now - self._last_draw
        ended = counts(trials, self.max_epochs)["ended"] != self._last_counts.get("ended")
        return since >= PLAIN_INTERVAL_S or (ended and since >= PLAIN_MIN_GAP_S)

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        if self._start is None:
            self._start = time.time()
        epochs = sum(_epochs(t) for t in trials)
        if self._last_draw == 0.0:  # first report of this session: what a resumed stage had
            self._initial = epochs
        text = describe(trials, self.num_samples, self.max_epochs)
        self._report_errors(trials)
        # The plan is an estimate: the bar ends full when the stage did (diverged trials and
        # a cap not reached spend less; retried epochs more).
        total = epochs if done and counts(trials, self.max_epochs)["ended"] == len(trials) else \
            max(self.planned, epochs)
        if done and not self._tty() and (epochs, total, text) == self._last_shown:
            return  # Tune's closing report after the last step: nothing new to say
        self._last_shown = (epochs, total, text)
        fmt = bar_format(text, self._time_left(epochs, total))
        if self._tty():
            self._draw_bar(epochs, total, fmt, done)
        else:
            line = tqdm.format_meter(epochs, total, time.time() - self._start, prefix=self.stage,
                                     bar_format=fmt, initial=self._initial, ascii=True)
            print(line, file=self._out, flush=True)
        self._last_counts, self._last_draw = counts(trials, self.max_epochs), time.time()

    def _time_left(self, epochs: int, total: int) -> str:
        """The budget still to train at this session's rate, measured from its first epoch on
        (the actors' start-up before it is no guide to the rest): "?" until two epochs more."""
        now = time.time()
        if total <= epochs:
            return tqdm.format_interval(0)
        if self._first is None:
            if epochs > self._initial:
                self._first = (now, epochs)
            return "?"
        t0, n0 = self._first
        if epochs - n0 < 2 or now <= t0:
            return "?"
        return tqdm.format_interval((total - epochs) * (now - t0) / (epochs - n0))

    def _draw_bar(self, epochs: int, total: int, fmt: str, done: bool) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, initial=epochs, desc=self.stage, bar_format=fmt, file=self._out,
                             dynamic_ncols=True, leave=True, ascii=True, mininterval=TTY_INTERVAL_S)
        self._bar.total = total
        self._bar.bar_format = fmt
        self._bar.update(epochs - self._bar.n)
        self._bar.refresh()
        if done:
            self._bar.close()
            self._bar = None

    def _report_errors(self, trials: list[Trial]) -> None:
        """A failed trial gets a line of its own (Ray's traceback is logged above it)."""
        for trial in trials:
            if trial.status == Trial.ERROR and trial.trial_id not in self._reported_errors:
                self._reported_errors.add(trial.trial_id)
                where = trial.path or trial.local_path
                message = f"{self.stage}: trial {trial.trial_id} failed; its error.txt is in {where}"
                (self._bar.write if self._bar is not None else print)(message)


# ---- run-wide settings --------------------------------------------------------------------
class _DropIgnoredReporterWarning(logging.Filter):
    """Ray's new output engine (--verbose) says it ignores the passed-in reporter: expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignoring passed-in ProgressReporter" not in record.getMessage()


class _DropNeverStartedTrials(logging.Filter):
    """Ray's ExperimentAnalysis warns "Failed to fetch metrics for N trial(s)" for every trial
    without result.json / progress.csv: after an interrupt, the trials a stage had queued but
    not started. Expected on --resume (the record layer reads them as trials with no rows);
    kept when any listed failure is something else."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().splitlines()
        if not lines or not lines[0].startswith("Failed to fetch metrics for"):
            return True
        return not all("both result.json and progress.csv were not found" in line for line in lines[1:])


class _DropStagingTempFileRace(logging.Filter):
    """Ray Tune's experiment-state save writes the searcher's state into the driver's staging
    folder (a `.<uuid>-tmp-...` file renamed into place) before it waits for the previous
    upload of that folder, so an upload still listing the folder can miss the renamed temp
    file: "Saving experiment state to storage ... failed" with a FileNotFoundError naming it
    (Ray 2.60, experiment_state.sync_up_experiment_state). The next save uploads the whole
    state again (a stage ends with a forced one), so nothing is lost; seen at the end of a
    stage, a 25-line traceback. Dropped only for that temp file; any other failure stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Saving experiment state to storage"):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, FileNotFoundError) and "-tmp-" in str(error))


def _add_once(logger: str, kind: type[logging.Filter]) -> None:
    target = logging.getLogger(logger)
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind())


def console_settings(verbose: bool) -> None:
    """Choose the output of the stages that follow: kdtune's lines, or Ray's own tables.

    Quiet (default): Ray Tune's legacy output engine (`RAY_AIR_NEW_OUTPUT=0`), which calls the
    stage's `StageProgress` and prints nothing else at verbosity 1 (the new engine would ignore
    the reporter and print its tables, a configuration box per trial start and a TensorBoard
    hint naming Ray's temporary session folder). Ray's and Optuna's INFO lines go too; their
    warnings and errors (a failed trial's traceback) stay.
    Verbose: Ray's new engine with its tables, INFO lines back.
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"
    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray.tune", "ray.train", "mlflow", "alembic"):  # (the last two: --tracker mlflow)
        logging.getLogger(name).setLevel(level)
    _add_once("ray.tune.tune", _DropIgnoredReporterWarning)
    _add_once("ray.tune.analysis.experiment_analysis", _DropNeverStartedTrials)
    _add_once("ray.tune.execution.experiment_state", _DropStagingTempFileRace)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:
        # Ray times the define-by-run space (kdtune's only samples; the time is the study's
        # SQLite writes on a busy machine) and warns past 1 s: nothing a user could change.
        warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
