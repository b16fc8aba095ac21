"""The teacher row of a run that adopted --teacher-checkpoint instead of training its teacher.

Such a teacher has no trial of this run behind it, so its stage would carry a checkpoint path
only and the summary could show neither its model, its size (hence no "reduction vs teacher")
nor its accuracy. This fills them in from what the run already has:
- model, depth, width and params from the checkpoint itself (what train_teacher saved);
- val_acc on THIS run's validation split, from the teacher-logit cache's validation part (the
  very logits every trial's `agreement` uses). The accuracy the checkpoint recorded is not
  used: it was measured on the split of the run that trained it, which may differ.
"""
from __future__ import annotations

from typing import Any

from kdtune.datasets import DatasetBundle
from kdtune.search.record.manifest import Manifest
from kdtune.trainables.checkpoint import load_payload
from kdtune.trainables.logit_cache import LogitCache, MappedLogitCache, SharedLogitCache
from kdtune.search.record.stage_names import TEACHER

SHOWN = ("model", "depth", "width")


def describe(manifest: Manifest, bundle: DatasetBundle, logits: SharedLogitCache | LogitCache | None) -> None:
    """Add `config` and `metrics` to the teacher stage of a --teacher-checkpoint run (once)."""
    stage = manifest.data["stages"].get(TEACHER) or {}  # not .stage(): that adds a pending one
    if not stage.get("source") or "metrics" in stage:
        return
    payload = load_payload(stage["best_checkpoint"])
    saved_config, saved_metrics = payload.get("config") or {}, payload.get("metrics") or {}
    config = {k: saved_config[k] for k in SHOWN if saved_config.get(k) is not None}
    metrics: dict[str, Any] = {}
    if saved_metrics.get("params") is not None:
        metrics["params"] = int(saved_metrics["params"])
    val = logits.resolve(val_only=True) if isinstance(logits, (SharedLogitCache, MappedLogitCache)) else logits
    if val is not None and val.val is not None:
        predicted = val.val_logits("cpu").argmax(dim=1)  # decodes a bf16 cache's int16 bits
        metrics["val_acc"] = float((predicted == bundle.val.labels).float().mean())
    stage.update(config=config, metrics=metrics)
    manifest.save()

