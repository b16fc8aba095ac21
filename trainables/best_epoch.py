"""The best-validation epoch of a trial, kept and evaluated once on the TEST split.

A retraining run (the final stage) must report the model it would ship: the weights of the
epoch with the best val_acc, never the epoch that happens to score best on test. This keeps
a copy of those weights while the trial trains, stores them in every epoch's checkpoint
directory (`best_epoch/checkpoint.pt`, a kdtune checkpoint of its own, so a resumed trial
still knows them and analysis can load them), and after the last epoch evaluates them on the
test split exactly once:

    test_acc, test_loss   the best-val epoch's weights on the test split (plain CE, like val)
    best_epoch            the epoch those weights come from (1-based)
    best_val_acc          that epoch's val_acc

Ties in val_acc keep the earlier epoch. A trial that diverges is evaluated on the weights of
its best epoch before the divergence (when it had one).
"""
from __future__ import annotations

import copy
import os

from torch import nn

from kdtune.trainables import checkpoint
from kdtune.trainables.loop import evaluate
from kdtune.trainables.runtime import Runtime

SUBDIR = "best_epoch"  # inside each epoch's checkpoint directory


class BestEpochTest:
    """Tracks the best-val epoch's weights; `after_epoch` adds the test metrics at the end."""

    def __init__(self, model: nn.Module, test_loader, rt: Runtime, epochs: int):
        self.model = model
        self.test_loader = test_loader
        self.rt = rt
        self.epochs = epochs
        self.best_model: nn.Module | None = None  # a copy, so training never touches it
        self.best_metrics: dict = {}

    @property
    def best_epoch(self) -> int | None:
        return self.best_metrics.get("epoch")

    def _observe(self, metrics: dict) -> None:
        if metrics.get("diverged"):
            return
        if self.best_model is None or metrics["val_acc"] > self.best_metrics["val_acc"]:
            if self.best_model is None:
                self.best_model = copy.deepcopy(self.model)
            else:
                self.best_model.load_state_dict(self.model.state_dict())
            self.best_metrics = dict(metrics)

    def after_epoch(self, metrics: dict) -> dict:
        """Record this epoch; on the last one (or a divergence) the test metrics to report."""
        self._observe(metrics)
        if not (metrics.get("diverged") or metrics["epoch"] >= self.epochs) or self.best_model is None:
            return {}
        test = evaluate(self.best_model, self.test_loader, self.rt)  # the one test evaluation
        return {"test_acc": test["val_acc"], "test_loss": test["val_loss"],
                "best_epoch": int(self.best_metrics["epoch"]), "best_val_acc": float(self.best_metrics["val_acc"])}

    def save(self, directory: str, config: dict, dataset_meta: dict) -> None:
        """Write the best epoch's weights beside this epoch's checkpoint (resume, analysis)."""
        if self.best_model is not None:
            checkpoint.save_checkpoint(os.path.join(directory, SUBDIR), model=self.best_model, config=config,
                                       dataset_meta=dataset_meta, epoch=self.best_metrics["epoch"],
                                       metrics=self.best_metrics)

    def restore(self, directory: str) -> None:
        """Take the best epoch back from a checkpoint directory written by `save`."""
        path = os.path.join(directory, SUBDIR)
        if not os.path.isfile(checkpoint.checkpoint_file(path)):
            return  # no epoch had finished cleanly before this checkpoint
        payload = checkpoint.load_payload(path, map_location="cpu")
        self.best_model = copy.deepcopy(self.model)
        self.best_model.load_state_dict(payload["state_dict"])
        self.best_metrics = dict(payload["metrics"])


def best_epoch_file(checkpoint_dir: str | os.PathLike) -> str:
    """The best-val epoch's checkpoint file inside an epoch's checkpoint directory."""
    return os.path.join(os.fspath(checkpoint_dir), SUBDIR, checkpoint.FILENAME)


def test_loader_for(data, rt: Runtime, batch_size: int, seed: int):
    """The test split as evaluation batches (no augmentation, fixed order)."""
    from kdtune.datasets import DeviceLoader

    return DeviceLoader(data.test, batch_size=batch_size, device=rt.device, mean=data.mean, std=data.std,
                        augment="none", shuffle=False, drop_last=False, seed=seed,
                        channels_last=rt.channels_last)

