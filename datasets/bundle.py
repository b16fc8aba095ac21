"""The decoded, in-memory form of a dataset: `Split`, `DatasetBundle` and `DatasetError`.

Every dataset in kdtune is decoded once (in the Ray driver) into these plain tensors, then
shipped to trials through Ray's object store; nothing downstream reads image files again.
A large image folder's splits instead hold `MappedImages`: row numbers into its decoded
on-disk store (datasets/store.py), which pickle without pixels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .augment import resolve_pixels
from .store import MappedImages


class DatasetError(ValueError):
    """Dataset files are missing, corrupt or truncated; the message names the path to fix."""


class MissingFilesError(DatasetError):
    """A downloadable dataset's files are not in `folder` (a fetch may cure it)."""

    def __init__(self, name: str, folder: str, missing: list[str]):
        super().__init__(
            f"{name} files not found in {folder} (missing: {', '.join(missing)}); fetch them "
            "(drop --no-download) or point --data-dir at a folder that has them")
        self.name, self.folder, self.missing = name, folder, list(missing)


def missing_files_error(name: str, folder: str, missing: list[str]) -> MissingFilesError:
    """The one wording for "files not there", so every dataset tells the user the same fix."""
    return MissingFilesError(name, folder, missing)


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, C, H, W) on CPU, contiguous, and int64 labels (N,).

    `images` is a resident tensor, or for a large image folder `MappedImages` (rows of the
    on-disk store, datasets/store.py): DeviceLoader then gathers each batch from disk."""

    images: "torch.Tensor | MappedImages"
    labels: torch.Tensor

    @property
    def stored(self) -> bool:
        """True when the images live in an on-disk store, not in memory."""
        return isinstance(self.images, MappedImages)

    def __post_init__(self) -> None:
        # Checked here once so the loader and trainers can trust the layout blindly.
        if self.stored:
            if len(self.images.shape) != 4 or len(self.images) != len(self.labels):
                raise ValueError(f"Split has {len(self.images)} stored images but {len(self.labels)} labels")
            if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
                raise ValueError(f"Split.labels must be int64 (N,), got {self.labels.dtype}")
            return
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"Split.images must be uint8 (N,C,H,W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"Split.labels must be int64 (N,), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"Split has {len(self.images)} images but {len(self.labels)} labels")
        if self.images.device.type != "cpu" or not self.images.is_contiguous():
            raise ValueError("Split.images must be a contiguous CPU tensor")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetBundle:
    """Train / val / test splits plus what a model and a loader need to know about them.

    `test` is touched only by final reports; model selection uses `val` (docs/architecture.md).
    `mean` / `std` are per channel in [0, 1] pixel units; `augment` names the batched
    augmentation `DeviceLoader` applies to training batches, `augment_pixels` its crop
    padding or largest shift (None: that augmentation's default, datasets/augment.py).
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    augment_pixels: int | None = None
    # The official train set's labels in file order (val and train are drawn from it) and
    # the split's record (dataset, pool size, seed, val_fraction, subset, val-index digest):
    # enough to re-draw any recorded split of this data. None for hand-made bundles.
    pool_labels: torch.Tensor | None = None
    split: dict | None = None

    def __post_init__(self) -> None:
        resolve_pixels(self.augment, self.augment_pixels)  # raises on an unknown name / bad pixels
        channels = self.in_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {self.mean} / {self.std}")

    def with_augment(self, augment: str | None, pixels: int | None = None) -> "DatasetBundle":
        """The same splits (no copy) under another training augmentation; None keeps this one's
        (a stage's `augment` config key: e.g. a jittered MNIST teacher, un-jittered students)."""
        if augment is None:
            return self
        return dataclasses.replace(self, augment=augment, augment_pixels=pixels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def meta(self) -> dict:
        """JSON-able description (no tensors), for manifests, checkpoints and reports."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_shape": list(self.in_shape),
            "class_names": list(self.class_names),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "augment": self.augment,
            "augment_pixels": self.augment_pixels,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            **({"split": dict(self.split)} if self.split is not None else {}),
        }
