"""The one reader of a stage's trials: what a trial on disk is, and what its epochs mean.

Every consumer of trial results reads them through here: the pipeline's record of a finished
stage (its winner, its trial rows, its Pareto set: manifest.json and summary.md), the final
stage's choice of what to retrain (search/stages/final_select.py) and every analysis table
(analysis/experiment.py). "Best epoch", "diverged" and "stopped early" come from
trainables/trial_outcome.py (the finiteness rule: the best epoch is the first of the best
FINITE METRIC values), so the same trial gives the same answers on every path.

    records = read_stage(experiment_dir / "distill")      # a stage folder on disk (Ray's snapshot)
    records = [from_result(r) for r in result_grid]       # a stage Tune just ran
    rec = from_frame("t1", config, df)                    # one trial's per-epoch rows
    rec.val_acc, rec.params, rec.best_epoch, rec.epochs, rec.diverged, rec.stopped_early
    winner(records)                                       # the stage's best trial (None: no score)
    stage_record(records, objective)                      # what manifest.json keeps of the stage
    [r for r in records if r.candidate]                   # what the final stage may retrain

A trial's per-epoch rows are Tune's result.json lines (flattened with "/", as Ray's
ExperimentAnalysis and Result.metrics_dataframe read them) or its progress.csv.

Two eligibility rules, both here: `scored` (no error and a finite best epoch) may be a stage's
winner, whose checkpoint a later stage loads (a trial that diverged after a good epoch keeps
that epoch's checkpoint); `candidate` (scored and never diverged) may be retrained by the
final stage or sit on the stage's Pareto set.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kdtune.search.record.stage_names import STAGES
from kdtune.search.stages.sweep import VARIANT, merge
from kdtune.trainables.reporting import METRIC, MODE
from kdtune.trainables.trial_outcome import best_epoch, diverged, epoch_number, epochs_trained, finite, stopped_early

# The config keys a manifest trial row keeps (with every registered KD method's hyperparameters).
SUMMARY_KEYS = ("model", "depth", "width", "kd_method", "lr", "weight_decay", "model_kwargs", "seed")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the record reads it. The first five fields are what the final stage's
    choice needs; `from_frame` fills every field from the trial's per-epoch rows."""
    trial_id: str
    config: dict[str, Any]          # the config it ran (a sweep's variant merged in)
    val_acc: float | None           # its best epoch's METRIC (None: no finite value)
    params: float | None            # model size (its best epoch's report, else its last; None: not finite)
    epochs: int                     # epochs it trained (ASHA may have stopped it)
    best_epoch: int | None = None   # 1-based epoch of val_acc
    best: dict[str, Any] = field(default_factory=dict)  # every metric of that epoch
    diverged: bool = False          # an epoch reported a non-finite loss
    error: str | None = None        # its error's first line (Tune's status ERROR)
    ended: bool = True              # its last result carries Tune's `done`, no error
    planned_epochs: int | None = None
    status: str | None = None       # Tune's status, where the source knows it
    path: str | None = None
    checkpoint: str | None = None   # its best epoch's checkpoint file, where the source knows it
    stage: str | None = None
    epochs_run: int = 0             # Tune's training_iteration of the last result

    @property
    def scored(self) -> bool:
        """May be the stage's winner: no error and a finite best epoch."""
        return self.error is None and self.val_acc is not None

    @property
    def candidate(self) -> bool:
        """May be retrained or on a Pareto set: scored and never diverged."""
        return self.scored and not self.diverged

    @property
    def stopped_early(self) -> bool:
        return stopped_early(epochs=self.epochs, planned=self.planned_epochs, diverged=self.diverged,
                             ended=self.ended)

    @property
    def key(self) -> str:
        """Identity of the config (the seed and run bookkeeping are the same for every trial)."""
        return json.dumps(self.config, sort_keys=True, default=str)

    def value(self, metric: str) -> float | None:
        """A metric of the best epoch as a finite float (METRIC and params: the fields)."""
        if metric == METRIC:
            return self.val_acc
        if metric == "params":
            return self.params
        return finite(self.best.get(metric))

    def manifest_row(self) -> dict[str, Any]:
        """The compact row manifest.json keeps per trial (summary.md's tables read it)."""
        keys = summary_keys()
        return {"trial_id": self.trial_id, "val_acc": self.val_acc, "params": self.params, "epochs": self.epochs,
                "stopped_early": self.stopped_early, "diverged": self.diverged, "error": self.error,
                **{k: v for k, v in self.config.items() if k in keys}}

    def winner_record(self) -> dict[str, Any]:
        """A stage winner as the manifest records it: config, its best epoch's metrics, checkpoint."""
        return {"trial_id": self.trial_id, "trial_path": self.path, "config": dict(self.config),
                "metrics": dict(self.best), "best_checkpoint": self.checkpoint, "epochs_run": self.epochs_run}

    def member_record(self) -> dict[str, Any]:
        """A Pareto-set member as the manifest records it (what to retrain and what it reached)."""
        return {"trial_id": self.trial_id, "config": dict(self.config), "val_acc": self.val_acc,
                "params": self.params, "epochs": self.epochs, "best_checkpoint": self.checkpoint}


def summary_keys() -> tuple[str, ...]:
    """SUMMARY_KEYS and every registered KD method's hyperparameters (the registry's, when asked)."""
    from kdtune.trainables.losses import all_hyperparameters

    return SUMMARY_KEYS + tuple(all_hyperparameters())


def effective_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config the trainable ran: a sweep's variant merged in (see search/stages/sweep.py)."""
    variant = config.get(VARIANT)
    base = {k: v for k, v in config.items() if k != VARIANT}
    return merge(base, variant) if variant else base


def plain(value: Any) -> Any:
    """numpy scalars -> Python, so the manifest stays plain JSON."""
    return value.item() if hasattr(value, "item") else value


def from_frame(trial_id: str, config: dict[str, Any], frame: Any, *, last: dict[str, Any] | None = None,
               error: str | None = None, max_epochs: int | None = None, **source: Any) -> TrialRecord:
    """A trial's record from its per-epoch rows (`frame`, a DataFrame or None) and its last
    result (`last`, default the frame's last row). `error`: its error's first line, when it
    errored. `max_epochs`: the planned length of a trial whose config does not say (`epochs`).
    `source`: status, path, checkpoint, stage as the source knows them."""
    config = {k: plain(v) for k, v in effective_config(dict(config or {})).items()}
    if last is None:
        last = {} if frame is None or len(frame) == 0 else frame.iloc[-1].to_dict()
    row = best_epoch(frame)
    best = {} if row is None else {str(k): plain(v) for k, v in row.items() if not str(k).startswith("config/")}
    params = _number(best.get("params")) if row is not None else None
    if params is None:
        params = _number(last.get("params"))
    return TrialRecord(
        trial_id=str(trial_id), config=config,
        val_acc=None if row is None else float(row[METRIC]), params=params, epochs=epochs_trained(frame),
        best_epoch=None if row is None else epoch_number(row), best=best, diverged=diverged(frame),
        error=error, ended=bool(last.get("done")) and error is None,
        planned_epochs=config.get("epochs", max_epochs), epochs_run=int(last.get("training_iteration") or 0),
        **source)


def from_result(result: Any, stage: str | None = None, max_epochs: int | None = None) -> TrialRecord:
    """A trial of a ResultGrid (ray.tune.Result) a stage's fit just returned."""
    last = dict(result.metrics or {})
    error = None if result.error is None else str(result.error).splitlines()[0][:200]
    return from_frame(last.get("trial_id"), result.config, result.metrics_dataframe, last=last, error=error,
                      max_epochs=max_epochs, path=getattr(result, "path", None), checkpoint=_best_checkpoint_file(result), stage=stage)


def from_tune_trial(trial: Any, frame: Any, stage: str | None = None) -> TrialRecord:
    """A trial of Ray's ExperimentAnalysis (a stage folder's snapshot) and its per-epoch rows."""
    errored = trial.status == "ERROR"
    return from_frame(trial.trial_id, dict(trial.config or {}), frame, last=dict(trial.last_result or {}),
                      error="error" if errored else None, status=trial.status,
                      path=str(trial.path), stage=stage)


def open_stage(stage_dir: str | Path):
    """Ray's ExperimentAnalysis of a stage folder (no trainable needed). Raises ValueError or
    OSError when the folder holds no Tune snapshot yet."""
    from ray.tune import ExperimentAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ExperimentAnalysis(str(stage_dir), default_metric=METRIC, default_mode=MODE)


def records_of(analysis: Any, stage: str | None = None) -> list[TrialRecord]:
    """Every trial of an opened stage (open_stage), in Tune's order."""
    frames = analysis.trial_dataframes
    return [from_tune_trial(t, frames.get(t.trial_id), stage) for t in analysis.trials]


def read_stage(stage_dir: str | Path) -> list[TrialRecord]:
    """Every trial of a stage folder; [] when it has no Tune snapshot (or does not exist)."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    try:
        analysis = open_stage(stage_dir)
    except (ValueError, OSError):
        return []
    name = stage_dir.name if stage_dir.name in STAGES else None
    return records_of(analysis, name)


def winner(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The stage's best trial: the scored trial with the best val_acc under MODE (the first of ties)."""
    scored = [r for r in records if r.scored]
    if not scored:
        return None
    pick = max if MODE == "max" else min
    return pick(scored, key=lambda r: r.val_acc)


def stage_record(records: list[TrialRecord], objective: Any = None) -> dict[str, Any] | None:
    """What manifest.json keeps of a finished stage: its winner (winner_record), one row per
    trial (`trials`) and, when `objective` (search/tune/objective.Objective) has several
    metrics, its Pareto set (`pareto_set`, objective.front). None when no trial scored."""
    best = winner(records)
    if best is None:
        return None
    out = {**best.winner_record(), "trials": [r.manifest_row() for r in records]}
    if objective is not None and objective.multi:
        out["pareto_set"] = [m.member_record() for m in objective.front(records)]
    return out


def ranked_distinct(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The candidates best first by (epochs trained, val_acc), one trial per distinct config.

    Epochs first: ASHA's rungs compare trials at equal fidelity, so a trial promoted to a
    higher rung was judged better than those left behind."""
    sign = -1 if MODE == "max" else 1
    seen: set[str] = set()
    out = []
    for rec in sorted((r for r in records if r.candidate), key=lambda r: (-r.epochs, sign * r.val_acc, r.trial_id)):
        if rec.key not in seen:
            seen.add(rec.key)
            out.append(rec)
    return out


def _number(value: Any) -> int | float | None:
    """A finite number as it was reported (an int stays an int), else None."""
    return None if finite(value) is None else plain(value)


def _best_checkpoint_file(result: Any) -> str | None:
    # A trial that diverged in its first epoch reported no checkpoint, and Ray's
    # Result.get_best_checkpoint raises on a trial without any instead of returning None.
    from kdtune.trainables.checkpoint import FILENAME

    checkpoint = (result.get_best_checkpoint(METRIC, MODE) if getattr(result, "best_checkpoints", None) else None) \
        or getattr(result, "checkpoint", None)
    return str(Path(checkpoint.path) / FILENAME) if checkpoint else None
