"""The dataset registry: `register_dataset`, `list_datasets`, `create_dataset`.

Like timm's `register_model`: one function per dataset, the function name is the key. A
builder decodes its files once into a `Decoded` (uint8 tensors + metadata); `create_dataset`
then does what is common to all of them: the seeded val split, the optional train subset
and the normalisation constants, and returns a `DatasetBundle`.

    from kdtune.datasets import create_dataset
    bundle = create_dataset("cifar10", "./data", val_fraction=0.1, seed=0)
"""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .bundle import DatasetBundle, Split
from .store import MappedImages
from .splits import channel_stats, index_digest, split_indices

DEFAULT_ROOT = "./data"


@dataclass(frozen=True)
class Decoded:
    """What a builder returns: the official (or carved) train and test sets, decoded once.

    `mean` / `std` are None when they should be computed from the train split.
    """

    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    augment: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


# A builder: (root, *, download, image_size) -> Decoded
Builder = Callable[..., Decoded]
_REGISTRY: dict[str, Builder] = {}
# The built-in builders register themselves when their module is imported. A module is
# imported when one of its datasets is built, not with the package nor to list the names: a
# process that only unpickles a DatasetBundle or checks a trial's config (a Ray trial actor,
# a cache-build task) then skips torchvision and scikit-learn, ~6 s of every fresh worker's
# start-up on 2 CPU cores. Module -> the names it registers (test_datasets checks the two agree).
BUILTINS = {"cifar": ("cifar10", "cifar100"), "digits": ("digits",), "image_folder": ("image_folder",),
            "mnist": ("mnist", "fashion_mnist")}


def _load_builtin(name: str) -> None:
    """Import the built-in module that registers `name` (nothing for another name)."""
    for module, names in BUILTINS.items():
        if name in names:
            importlib.import_module(f"{__package__}.{module}")


def register_dataset(fn: Builder) -> Builder:
    """Decorator: register `fn` under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def take_rows(images, idx: torch.Tensor):
    """Rows idx of resident images (a contiguous copy) or of a store (a view: no pixels read)."""
    return images.take(idx) if isinstance(images, MappedImages) else images[idx].contiguous()


def list_datasets() -> list[str]:
    """Names accepted by `create_dataset`, sorted (imports no built-in decoder)."""
    return sorted(set(_REGISTRY).union(*BUILTINS.values()))


def create_dataset(name: str, root: str | None = None, *, download: bool = False,
                   val_fraction: float = 0.1, seed: int = 0, subset: int | None = None,
                   image_size: int | None = None, **store_options) -> DatasetBundle:
    """Decode dataset `name` from `root` (default ./data) into a `DatasetBundle`.

    val_fraction: share of the training set held out (seeded, stratified) as `val`.
    seed: drives the val split and the subset; the test set never depends on it.
    subset: keep a seeded, stratified N-row subset of the train split (quick runs); `val`
        and `test` are left whole, so val accuracy stays comparable across subset sizes.
    image_size: side length images are resized to (image_folder only, default 32); for
        fixed-size datasets it may only repeat their native size.
    store_options: image_folder's `resident_max_mb`, `store_dir`, `decode_workers`
        (datasets/image_folder.py, datasets/store.py); None values are left out.
    """
    _load_builtin(name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be a positive number of samples, got {subset}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    root = os.path.abspath(os.path.expanduser(root if root is not None else DEFAULT_ROOT))

    builder = _REGISTRY[name]
    store_options = {k: v for k, v in store_options.items() if v is not None}
    unknown = sorted(set(store_options) - set(inspect.signature(builder).parameters))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} appl{'ies' if len(unknown) == 1 else 'y'} only to "
                         f"datasets decoded from image files (image_folder), not {name}")
    dec = builder(root, download=download, image_size=image_size, **store_options)
    side = int(dec.train_images.shape[-1])
    if image_size is not None and image_size != side:
        raise ValueError(f"{name} images are {side}x{side}; image_size={image_size} applies "
                         "only to image_folder")

    pool = dec.train_labels
    mean, std = dec.mean, dec.std
    if mean is None or std is None:
        # From the whole train split (before any subset), so quick runs normalise the same way.
        full_train, _ = split_indices(pool, val_fraction, seed)
        mean, std = channel_stats(take_rows(dec.train_images, full_train))
    train_idx, val_idx = split_indices(pool, val_fraction, seed, subset)
    train = Split(take_rows(dec.train_images, train_idx), pool[train_idx])
    val = Split(take_rows(dec.train_images, val_idx), pool[val_idx])
    test = Split(dec.test_images if isinstance(dec.test_images, MappedImages) else dec.test_images.contiguous(),
                 dec.test_labels)
    # What a checkpoint records of the split it trained on, so a later run can tell whether
    # that model has seen its validation images (split_identity.py).
    split = {"dataset": name, "pool": len(pool), "seed": seed, "val_fraction": val_fraction,
             "subset": subset, "val_indices_sha256": index_digest(val_idx)}

    return DatasetBundle(name=name, train=train, val=val, test=test,
                         class_names=tuple(dec.class_names), mean=tuple(mean), std=tuple(std),
                         augment=dec.augment, pool_labels=pool, split=split)
