"""Reading one kdtune experiment: the manifest, each stage's Ray Tune results, tidy tables.

Every analysis script reads through this module; "best epoch", "stopped early" and
"reduction vs teacher" come from trainables/trial_outcome.py, as in the search's own manifest and
summary.md, so they mean the same thing in every table and figure.

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

from kdtune.search.record.manifest import STAGES, Manifest
from kdtune.trainables.losses import all_hyperparameters
from kdtune.trainables.checkpoint import FILENAME as CHECKPOINT_FILE
from kdtune.trainables.trial_outcome import best_epoch, epoch_number, epochs_trained, finite, reduction_pct, stopped_early
from kdtune.trainables.trial_outcome import diverged as trial_diverged
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

    def best(self, name: str = "distill") -> dict[str, Any]:
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
        info = self.stage_info("final")
        if info.get("status") != "done":
            raise ExperimentError(f"the final stage of {self.path.name} is {self.status('final')}, not done")
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
            from ray.tune import ExperimentAnalysis

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = ExperimentAnalysis(str(folder), default_metric=METRIC, default_mode=MODE)
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

    def trials(self, stages: tuple[str, ...] = STAGES) -> pd.DataFrame:
        """One row per trial: stage, config, best-epoch metrics, epochs, early stop, reduction."""
        frame = self._rows(stages)
        teacher = self.teacher_params()
        frame["reduction_pct"] = [reduction_pct(p, teacher) for p in frame["params"]]
        return frame

    def _rows(self, stages: tuple[str, ...]) -> pd.DataFrame:
        rows = []
        for name in stages:
            ea = self.analysis(name)
            if ea is None:
                continue
            for trial in ea.trials:
                rows.append(_trial_row(name, trial, ea.trial_dataframes.get(trial.trial_id)))
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
        metrics = dict(self.stage_info("teacher").get("metrics") or {})
        if metrics.get("params") is None and (self.path / "teacher").is_dir():
            rows = self._rows(("teacher",))
            if rows["val_acc"].notna().any():
                best = rows.loc[rows["val_acc"].idxmax()]
                metrics.update({k: best[k] for k in ("val_acc", "val_loss", "params", "flops")})
        if metrics.get("params") is None and self.stage_info("teacher").get("best_checkpoint"):
            # An adopted --teacher-checkpoint has no Tune trial: count its weights.
            metrics["params"] = _checkpoint_params(self.stage_info("teacher")["best_checkpoint"])
        return metrics

    def teacher_params(self) -> float | None:
        if "_teacher_params" not in self._analyses:
            self._analyses["_teacher_params"] = finite(self.teacher_metrics().get("params"))
        return self._analyses["_teacher_params"]


def row_columns() -> tuple[str, ...]:
    return ("stage", "trial_id", "status", *CONFIG_COLUMNS, *method_columns(), "residual", "val_acc",
            *BEST_EPOCH_COLUMNS, "best_epoch", "epochs", "planned_epochs", "stopped_early",
            "diverged", "error", "path")


def _trial_row(stage: str, trial, df: pd.DataFrame | None) -> dict[str, Any]:
    cfg = dict(trial.config or {})
    last = dict(trial.last_result or {})
    row: dict[str, Any] = {"stage": stage, "trial_id": trial.trial_id, "status": trial.status,
                           **{k: cfg.get(k) for k in (*CONFIG_COLUMNS, *method_columns())},
                           "kd_method": kd_method(cfg), "residual": is_residual(cfg),
                           "path": str(trial.path)}
    best = best_epoch(df)  # the epoch the stage's checkpoint keeps
    if best is not None:
        row[METRIC] = float(best[METRIC])
        row.update({k: best.get(k) for k in BEST_EPOCH_COLUMNS})
        row["best_epoch"] = epoch_number(best)
    epochs = epochs_trained(df)
    diverged = trial_diverged(df)
    planned = cfg.get("epochs")
    # `done` is set on the last result when a trial ends, ASHA's stop included.
    ended = bool(last.get("done")) and trial.status != "ERROR"
    row.update(epochs=epochs, planned_epochs=planned, diverged=diverged,
               stopped_early=stopped_early(epochs=epochs, planned=planned, diverged=diverged, ended=ended),
               error=None if trial.status != "ERROR" else "error")
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
