"""Reading one kdtune experiment: the manifest, each stage's Ray Tune results, tidy tables.

Every analysis script reads through this module, and this module reads trials through the
search's record layer (search/record/trials.py: the same TrialRecord the manifest, summary.md
and the final stage's choice are built from); "best epoch", "stopped early" and "reduction vs
teacher" come from trainables/trial_outcome.py, so they mean the same thing in every table,
figure and record.

    exp = Experiment.open("kdtune_results/digits-20261122-101500")
    exp.trials()             # one row per trial of every stage that has started
    exp.curves("distill")    # trial_id -> that trial's per-epoch DataFrame
    exp.stages               # stage -> status, in run order
    exp.best("distill")      # a finished stage's winner: config, best-epoch metrics, checkpoint
    exp.final_table()        # the final stage: one row per retrained config (test mean ± sd, KD gain)

(kdtune.open_experiment returns the same reader with `export`, which runs analysis/export.py.)

Stage folders are read with Ray's own `ExperimentAnalysis` (no trainable needed). A stage
that has not started, or has no Tune snapshot yet, is skipped with a note in `exp.notes`,
so the scripts also work on a search that is still running.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdtune.search.record import trials as record
from kdtune.search.record.manifest import Manifest
from kdtune.search.record.stage_names import DISTILL, FINAL, STAGES, TEACHER
from kdtune.search.record.trials import TrialRecord
from kdtune.trainables.losses import all_hyperparameters
from kdtune.trainables.checkpoint import FILENAME as CHECKPOINT_FILE
from kdtune.trainables.trial_outcome import finite, reduction_pct
from kdtune.trainables.reporting import METRIC, MODE

# The sampled (or pinned) config keys shown in every table, in this order. kd_method: the KD
# method of a trial that distils ("kd" for runs from before methods existed), None otherwise.
CONFIG_COLUMNS = ("model", "depth", "width", "kd_method", "alpha", "temperature", "lr", "weight_decay")


def method_columns() -> tuple[str, ...]:
    """Every registered KD method's declared hyperparameters not in CONFIG_COLUMNS (read from
    the registry when asked, so a method registered later gets its columns); NaN in other
    methods' rows."""
    return tuple(k for k in all_hyperparameters() if k not in CONFIG_COLUMNS)

# Metrics taken from a trial's best epoch (by METRIC), not from its last one.
BEST_EPOCH_COLUMNS = ("val_loss", "train_acc", "train_loss", "params", "flops", "agreement")


class ExperimentError(ValueError):
    """The folder is missing or holds no kdtune run; the message is one line."""


@dataclass
class Experiment:
    path: Path
    manifest: dict[str, Any]
    out: Path
    notes: list[str] = field(default_factory=list)
    _analyses: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path, out: str | Path | None = None) -> "Experiment":
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ExperimentError(f"{path}: no such experiment folder")
        try:
            manifest = Manifest.load(path)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        path = path.resolve()
        _load_imports(manifest.data.get("spec", {}).get("imports") or [])
        return cls(path, manifest.data, Path(out) if out is not None else path / "analysis")

    # ---- manifest --------------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.get("spec", {})

    @property
    def dataset(self) -> dict[str, Any]:
        return self.manifest.get("dataset", {})

    @property
    def title(self) -> str:
        """Short label for figure titles: dataset and experiment name."""
        return f"{self.dataset.get('name', '?')} / {self.path.name}"

    def stage_info(self, name: str) -> dict[str, Any]:
        return self.manifest.get("stages", {}).get(name, {})

    def status(self, name: str) -> str:
        return self.stage_info(name).get("status", "pending")

    def output(self, filename: str) -> Path:
        """A path in the output folder (created on first use)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / filename

    @property
    def stages(self) -> dict[str, str]:
        """Stage name -> status (pending, running, interrupted, failed, done), in run order."""
        return {name: info.get("status", "pending") for name, info in self.manifest.get("stages", {}).items()}

    def best(self, name: str = DISTILL) -> dict[str, Any]:
        """A finished stage's winner as the search recorded it: trial_id, config, metrics (of its
        best epoch; the final stage's: means over seeds, test_acc included), best_checkpoint."""
        info = self.stage_info(name)
        if info.get("status") != "done":
            raise ExperimentError(f"stage {name} of {self.path.name} is {self.status(name)}, not done "
                                  f"(stages: {', '.join(f'{k} {v}' for k, v in self.stages.items())})")
        return {k: info.get(k) for k in ("trial_id", "config", "metrics", "best_checkpoint", "epochs_run")}

    def final_table(self) -> pd.DataFrame:
        """The final stage, one row per retrained config: role, source stage and trial, model and
        size, seeds tested, val/test accuracy mean and sd over seeds (fractions), and for distilled
        configs two KD gains on test with their 95% intervals (fractions): over the undistilled
        twin (same architecture, recipe and seeds; paired t: kd_gain_twin*) and over the
        retrained best baseline config (Welch: kd_gain*)."""
        info = self.stage_info(FINAL)
        if info.get("status") != "done":
            raise ExperimentError(f"the final stage of {self.path.name} is {self.status(FINAL)}, not done")
        rows = []
        for row in info.get("results", []):
            gain, twin = row.get("kd_gain_test") or {}, row.get("kd_gain_twin") or {}
            rows.append({**{k: v for k, v in row.items() if k not in ("runs", "kd_gain_test", "kd_gain_twin")},
                         "kd_gain_twin": twin.get("diff"), "kd_gain_twin_low": twin.get("low"),
                         "kd_gain_twin_high": twin.get("high"),
                         "kd_gain": gain.get("diff"), "kd_gain_low": gain.get("low"), "kd_gain_high": gain.get("high")})
        return pd.DataFrame(rows)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    # ---- Tune results ----------------------------------------------------------------------
    def analysis(self, name: str):
        """Ray's ExperimentAnalysis of one stage, or None (with a note) when there is none yet."""
        if name in self._analyses:
            return self._analyses[name]
        # The stage lives beside the manifest; the manifest's absolute path may come from
        # another machine (a copied or shared results folder), so it is not trusted.
        folder = self.path / name
        result = None
        if not folder.is_dir():
            stage = self.manifest.get("stages", {}).get(name)
            if stage is not None and stage.get("source"):  # adopted (--teacher-checkpoint): no trials by design
                self.note(f"stage {name}: adopted from {stage['source']}, so it has no trials of this run")
            elif stage is not None:  # planned for this run, not begun yet
                self.note(f"stage {name}: skipped, not started (status {self.status(name)})")
        else:
            try:
                result = record.open_stage(folder)
            except (ValueError, OSError) as exc:  # no experiment_state-*.json written yet
                self.note(f"stage {name}: skipped, no Tune snapshot yet ({str(exc).splitlines()[0][:120]})")
            if result is not None and not result.trials:
                self.note(f"stage {name}: skipped, no trials yet")
                result = None
            if result is not None and self.status(name) != "done":
                self.note(f"stage {name}: {self.status(name)}; tables show the trials so far")
        self._analyses[name] = result
        return result

    def curves(self, name: str) -> dict[str, pd.DataFrame]:
        """trial_id -> per-epoch metrics (result.json rows) of every trial of a stage."""
        ea = self.analysis(name)
        if ea is None:
            return {}
        return {tid: df for tid, df in ea.trial_dataframes.items() if df is not None and not df.empty}

    def records(self, name: str) -> list[TrialRecord]:
        """Every trial of a stage as the record layer reads it ([] before the stage has trials)."""
        key = f"_records/{name}"
        if key not in self._analyses:
            ea = self.analysis(name)
            self._analyses[key] = [] if ea is None else record.records_of(ea, name)
        return self._analyses[key]

    def trials(self, stages: tuple[str, ...] = STAGES) -> pd.DataFrame:
        """One row per trial: stage, config, best-epoch metrics, epochs, early stop, reduction."""
        frame = self._rows(stages)
        teacher = self.teacher_params()
        frame["reduction_pct"] = [reduction_pct(p, teacher) for p in frame["params"]]
        return frame

    def _rows(self, stages: tuple[str, ...]) -> pd.DataFrame:
        rows = [_trial_row(rec) for name in stages for rec in self.records(name)]
        return pd.DataFrame(rows, columns=list(row_columns()))

    def best_checkpoint(self, name: str, trial_id: str) -> str | None:
        """File of a trial's best checkpoint (by METRIC), else its latest one."""
        ea = self.analysis(name)
        trial = next((t for t in ea.trials if t.trial_id == trial_id), None) if ea else None
        if trial is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = ea.get_best_checkpoint(trial, METRIC, MODE) or ea.get_last_checkpoint(trial)
        return str(Path(ckpt.path) / CHECKPOINT_FILE) if ckpt is not None else None

    # ---- teacher ---------------------------------------------------------------------------
    def teacher_metrics(self) -> dict[str, Any]:
        """The teacher's best-epoch metrics: manifest first, else its Tune trial."""
        metrics = dict(self.stage_info(TEACHER).get("metrics") or {})
        if metrics.get("params") is None and (self.path / TEACHER).is_dir():
            best = record.winner(self.records(TEACHER))
            if best is not None:
                metrics.update({METRIC: best.val_acc, "val_loss": best.best.get("val_loss"), "params": best.params,
                                "flops": best.best.get("flops")})
        if metrics.get("params") is None and self.stage_info(TEACHER).get("best_checkpoint"):
            # An adopted --teacher-checkpoint has no Tune trial: count its weights.
            metrics["params"] = _checkpoint_params(self.stage_info(TEACHER)["best_checkpoint"])
        return metrics

    def teacher_params(self) -> float | None:
        if "_teacher_params" not in self._analyses:
            self._analyses["_teacher_params"] = finite(self.teacher_metrics().get("params"))
        return self._analyses["_teacher_params"]


def row_columns() -> tuple[str, ...]:
    return ("stage", "trial_id", "status", *CONFIG_COLUMNS, *method_columns(), "residual", "val_acc",
            *BEST_EPOCH_COLUMNS, "best_epoch", "epochs", "planned_epochs", "stopped_early",
            "diverged", "error", "path")


def _trial_row(rec: TrialRecord) -> dict[str, Any]:
    """One table row of a trial record: config columns, its best epoch's metrics, its outcome."""
    cfg = rec.config
    row: dict[str, Any] = {"stage": rec.stage, "trial_id": rec.trial_id, "status": rec.status,
                           **{k: cfg.get(k) for k in (*CONFIG_COLUMNS, *method_columns())},
                           "kd_method": kd_method(cfg), "residual": is_residual(cfg), "path": rec.path}
    if rec.val_acc is not None:  # the epoch the stage's checkpoint keeps
        row[METRIC] = rec.val_acc
        row.update({k: rec.best.get(k) for k in BEST_EPOCH_COLUMNS}, params=rec.params)
        row["best_epoch"] = rec.best_epoch
    row.update(epochs=rec.epochs, planned_epochs=rec.planned_epochs, diverged=rec.diverged,
               stopped_early=rec.stopped_early, error=rec.error)
    return row


def kd_method(cfg: dict[str, Any]) -> str | None:
    """The trial's KD method: its config's, "kd" when it distils without naming one (runs
    from before methods existed), None when it has no teacher (teacher, baseline)."""
    if cfg.get("kd_method"):
        return str(cfg["kd_method"])
    return "kd" if cfg.get("teacher_checkpoint") or cfg.get("online_teacher") else None


def distils(cfg: dict[str, Any]) -> bool:
    """Did this trial train a soft term? (kd, mse: alpha > 0; dkd, dist: nonzero weights)"""
    from kdtune.trainables.config import DistillConfig

    known = set(DistillConfig.keys())
    try:
        return not DistillConfig.from_dict({k: v for k, v in cfg.items() if k in known}).is_baseline
    except ValueError:  # a config this tree cannot build: fall back on the Hinton weight
        return bool(cfg.get("alpha"))


def is_residual(cfg: dict[str, Any]) -> bool | None:
    """model_kwargs.residual, else the model's own default (cifar_resnet True, mlp False)."""
    kwargs = cfg.get("model_kwargs") or {}
    if isinstance(kwargs, (list, tuple)):  # a frozen config stores sorted (key, value) pairs
        kwargs = dict(kwargs)
    if "residual" in kwargs:
        return bool(kwargs["residual"])
    try:
        from kdtune import models  # lazy: the registry imports every architecture (and torch)

        return models.registry.model_kwargs(cfg.get("model")).get("residual")
    except (ValueError, TypeError):
        return None


def _checkpoint_params(path: str) -> int | None:
    from kdtune.trainables.checkpoint import CheckpointError, load_model

    try:
        from kdtune import models

        return models.count_params(load_model(path)[0])
    except (CheckpointError, OSError):
        return None


def _load_imports(entries: list[str]) -> None:
    """The run's --import modules: its checkpoints may name their models and losses."""
    from kdtune.search.input import user_imports
    from kdtune.search.input.errors import UsageError

    try:
        user_imports.load(entries)
    except UsageError as exc:
        raise ExperimentError(f"this experiment imports user code that cannot be loaded here: {exc}") from None
