"""`--tracker mlflow|wandb`: every trial also logged to an experiment tracker.

Through Ray Tune's own callbacks, one tracker run per trial, its sampled config as params and
every epoch's metrics (val_acc, train_loss, ...) at step = epoch:

  mlflow  MLflowLoggerCallback; MLflow experiment "<experiment>/<stage>", runs named by trial.
          Tracking URI: $MLFLOW_TRACKING_URI, else a local SQLite store, <experiment>/mlflow.db
          (`mlflow ui --backend-store-uri sqlite:///<experiment>/mlflow.db`; MLflow 3 refuses
          new plain-file stores).
  wandb   WandbLoggerCallback; project $WANDB_PROJECT (default "kdtune"), group
          "<experiment>/<stage>". Run files in <experiment>/wandb; with WANDB_MODE=offline
          nothing leaves the machine (`wandb sync <experiment>/wandb/offline-run-*` later).

Both are optional extras (`pip install -e .[mlflow]`, `.[wandb]`); `check_tracker` turns a
missing one into a one-line usage error before Ray starts.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TRACKERS = ("mlflow", "wandb")


def check_tracker(tracker: str | None) -> None:
    """ValueError (one line) when the tracker is unknown, not installed, or cannot log in."""
    if tracker is None:
        return
    if tracker not in TRACKERS:
        raise ValueError(f"--tracker must be one of {', '.join(TRACKERS)}, got {tracker!r}")
    if importlib.util.find_spec(tracker) is None:
        raise ValueError(f"--tracker {tracker} needs the {tracker} package: pip install -e '.[{tracker}]'")
    if tracker == "wandb" and os.environ.get("WANDB_MODE") not in ("offline", "disabled") \
            and not os.environ.get("WANDB_API_KEY"):
        import wandb

        if not wandb.api.api_key:  # no `wandb login` either: Ray would fail inside the first stage
            raise ValueError("--tracker wandb: no W&B login; run `wandb login`, set WANDB_API_KEY, "
                             "or WANDB_MODE=offline to keep the runs on disk")


def mlflow_uri(experiment_dir: Path) -> str:
    return f"sqlite:///{(Path(experiment_dir) / 'mlflow.db').resolve()}"


def tracker_callbacks(tracker: str | None, experiment_dir: Path, stage: str) -> list:
    """The Tune callbacks of one stage for `tracker` (none without one)."""
    if tracker is None:
        return []
    group = f"{Path(experiment_dir).name}/{stage}"
    if tracker == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow_uri(experiment_dir)
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=group, save_artifact=False,
                                     tags={"kdtune_stage": stage})]
    from ray.air.integrations.wandb import WandbLoggerCallback

    # wandb.init(dir=D) writes D/wandb/<run>; the mode goes to wandb.init itself because Ray runs
    # each trial's W&B logger in an actor, whose environment may predate this process's.
    mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
    return [WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "kdtune"), group=group,
                                dir=str(Path(experiment_dir).resolve()), **mode)]
