"""kdtune checkpoints: one `checkpoint.pt` per checkpoint directory, loadable weights-only.

The payload holds everything needed to rebuild and resume, as tensors and primitive
containers only (so `torch.load(..., weights_only=True)` reads it, and a file from an
untrusted run cannot execute code):

    format "kdtune-checkpoint", version 1, model_spec (models' kdtune_spec), dataset (meta),
    config (flat dict), state_dict, optimizer, scheduler, epoch (completed), rng, metrics,
    and, only in online-distillation trials, teacher_state (the online teacher's model_spec,
    state_dict, optimizer, scheduler). model_spec/state_dict are always the student's.
    split: the record of the data split the model trained on (dataset, pool size, seed,
    val_fraction, subset, digest of the validation indices: DatasetBundle.split), so a run
    can refuse a teacher that saw its validation images; None when the caller's dataset
    meta carries none (and in checkpoints written before it was recorded).

A model is rebuilt from `model_spec` (never from the path's name):

    model, payload = load_model("results/teacher/checkpoint_000009")
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from typing import Any

import torch
from torch import nn

FORMAT = "kdtune-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, not kdtune's, or made for other data."""


def checkpoint_file(path: str | os.PathLike) -> str:
    """`path` itself if it is a file, else `path/checkpoint.pt`."""
    path = os.fspath(path)
    return os.path.join(path, FILENAME) if os.path.isdir(path) else path


def rng_state() -> dict[str, Any]:
    """The RNG streams a trial consumes: torch CPU (dropout, init), CUDA, Python's random."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # lists after a round trip
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | os.PathLike, *, model: nn.Module, config: dict,
                    dataset_meta: dict, epoch: int, metrics: dict,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler_state: dict | None = None, teacher_state: dict | None = None,
                    connectors: dict | None = None) -> str:
    """Write `directory/checkpoint.pt` atomically; returns the file's path.

    `teacher_state`: a teacher source's resumable state (OnlineTeacher.state_dict()),
    tensors and primitive containers only; omitted from the payload when None.
    `connectors`: a feature method's loss state_dict (regressors, embeddings, memory banks),
    kept apart from the student's `state_dict`; omitted when None."""
    spec = getattr(model, "kdtune_spec", None)
    if spec is None:
        raise CheckpointError("model has no kdtune_spec: build it with models.create_model")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": spec,
        "dataset": dict(dataset_meta),
        "config": dict(config),
        # contiguous(): channels_last weights are saved in the default layout
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": scheduler_state,
        "epoch": int(epoch),
        "rng": rng_state(),
        "metrics": dict(metrics),
        "split": split_record(dataset_meta),
    }
    if teacher_state is not None:  # optional key: version-1 readers ignore it
        payload["teacher_state"] = teacher_state
    if connectors is not None:  # a feature method's connectors (optional key, not the student's)
        payload["connectors"] = {k: v.detach().cpu() for k, v in connectors.items()}
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), FILENAME)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint.pt
    return path


def split_record(dataset_meta: dict) -> dict | None:
    """The split record of `dataset_meta` (DatasetBundle.meta()), or None without one."""
    split = dataset_meta.get("split")
    return dict(split) if split is not None else None


def load_payload(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a checkpoint file (or a directory holding checkpoint.pt); an exported
    teacher (.onnx, .pt2: trainables/exported_teacher.py) gives its checkpoint-like record."""
    from kdtune.trainables import exported_teacher

    if exported_teacher.is_exported(path):
        try:
            return exported_teacher.payload(path)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: {str(e).splitlines()[0]}") from e
    file = checkpoint_file(path)
    if not os.path.isfile(file):
        raise CheckpointError(f"no checkpoint at {file}")
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{file} is not a kdtune checkpoint (it holds objects that a "
                              f"weights-only load refuses): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{file} is corrupt or unreadable: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a kdtune checkpoint (no {FORMAT!r} format tag)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{file} has checkpoint version {payload.get('version')!r}; "
                              f"this kdtune reads version {VERSION}")
    required = ("model_spec", "dataset", "config", "state_dict", "epoch")
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{file} is missing {missing}")
    return payload


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Rebuild the model from the spec stored in the checkpoint and load its weights."""
    from kdtune import models  # lazy: importing the registry imports every architecture
    from kdtune.trainables import exported_teacher

    if exported_teacher.is_exported(path):
        try:
            return exported_teacher.load(path)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: {str(e).splitlines()[0]}") from e
    payload = load_payload(path, map_location)
    try:
        model = models.create_from_spec(payload["model_spec"])
        model.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot rebuild the model of {checkpoint_file(path)}: {e}") from e
    return model.to(map_location), payload


# How far an exported teacher's input normalisation (mean / std, pixel units 0..1) may be from
# this run's. The statistics are measured on the training split, so the same data under another
# seed or val_fraction moves them by ~1e-3 (digits: mean 0.30536 under seed 0, 0.30502 under seed
# 1): that is the same preprocessing, and whether such a teacher saw this run's validation images
# is the split check's question (search/input/validate.py). Other preprocessing differs by far
# more (ImageNet's mean 0.485 against MNIST's 0.131).
NORMALISATION_TOLERANCE = 5e-3


def check_compatible(payload: dict, dataset_meta: dict) -> None:
    """Fail unless the checkpoint was made for this dataset, class count and input shape."""
    spec, made_for = payload["model_spec"], payload.get("dataset", {})
    problems = []
    if made_for.get("name") is not None and made_for.get("name") != dataset_meta.get("name"):
        problems.append(f"dataset {made_for.get('name')!r} != {dataset_meta.get('name')!r}")
    if int(spec["num_classes"]) != int(dataset_meta["num_classes"]):
        problems.append(f"num_classes {spec['num_classes']} != {dataset_meta['num_classes']}")
    if tuple(spec["in_shape"]) != tuple(dataset_meta["in_shape"]):
        problems.append(f"in_shape {tuple(spec['in_shape'])} != {tuple(dataset_meta['in_shape'])}")
    norm = payload.get("normalisation") or {}
    for key in ("mean", "std"):  # an exported teacher's card: what its inputs were normalised with
        theirs, ours = norm.get(key), dataset_meta.get(key)
        if theirs is not None and ours is not None and (
                len(theirs) != len(ours) or any(abs(float(a) - float(b)) > NORMALISATION_TOLERANCE
                                                for a, b in zip(theirs, ours))):
            problems.append(f"input normalisation {key} {list(theirs)} != {list(ours)}")
    if problems:
        raise CheckpointError("checkpoint was made for other data: " + "; ".join(problems))
