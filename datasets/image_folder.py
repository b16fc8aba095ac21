"""`image_folder`: a user's class-per-folder images (e.g. MHIST histopathology) via ImageFolder.

Layout: either root/train/<class>/* and root/test/<class>/* (the test split is used as is),
or root/<class>/* (a stratified 20% test split is carved with the fixed
`splits.TEST_SPLIT_SEED`). Every image is decoded once, as RGB, resized to
`image_size` x `image_size` (default 32, bilinear as torchvision's Resize), into uint8
(N, 3, S, S), in parallel shards (datasets/store.py). A set larger than `resident_max_mb`
decoded is written once to an on-disk store (reused by later runs on the same files) and
its splits hold `MappedImages` (row numbers into the store) instead of pixels.
Normalisation constants are computed from the train split by `create_dataset`.
"""
from __future__ import annotations

import os

from dataclasses import dataclass

import torch

from .bundle import DatasetError
from .store import DecodeError, MappedImages, decode_images, open_or_build, scan_folder
from .registry import Decoded, register_dataset
from .splits import STREAM_TEST, TEST_SPLIT_SEED, holdout_size, stratified_holdout

DEFAULT_IMAGE_SIZE = 32
TEST_FRACTION = 0.2
# Decoded sets up to this size stay in memory (and travel through Ray's object store); larger
# ones go to the on-disk store. 1024 MiB: 350k images at 32 px, 37k at 96 px.
RESIDENT_MAX_MB = 1024.0


@dataclass(frozen=True)
class StoreOptions:
    """Where and how large folders are decoded (datasets/store.py)."""

    resident_max_mb: float = RESIDENT_MAX_MB  # decoded size above which the disk store is used
    root: str | None = None                   # store folder (None: $KDTUNE_STORE_DIR or ~/.cache/kdtune/stores)
    workers: int = 1                          # decode shards in parallel (processes, or Ray tasks when Ray is up)


def _load_folder(folder: str, size: int, store: StoreOptions):
    """Every image under folder/<class>/ as uint8 (N, 3, size, size) + labels + class names:
    a resident tensor, or MappedImages of the folder's on-disk store when larger than
    `store.resident_max_mb` (datasets/store.py)."""
    classes, samples = scan_folder(folder) if os.path.isdir(folder) else ([], [])
    if not samples:
        raise DatasetError(f"image_folder: no class folders with images in {folder}; "
                           "pass --data-dir pointing at a folder of one sub-folder per class "
                           "(image_folder cannot be downloaded)")
    try:
        if len(samples) * 3 * size * size > store.resident_max_mb * 2**20:
            info, images, labels = open_or_build(folder, size, root=store.root, workers=store.workers)
            return images, torch.from_numpy(labels), list(info.classes)
        pixels = decode_images([p for p, _ in samples], size, store.workers)
    except DecodeError as err:
        raise DatasetError(str(err)) from err
    labels = torch.tensor([y for _, y in samples], dtype=torch.int64)
    return torch.from_numpy(pixels), labels, classes


def _take(images, idx: torch.Tensor):
    return images.take(idx) if isinstance(images, MappedImages) else images[idx]


@register_dataset
def image_folder(root: str, *, download: bool = False, image_size: int | None = None,
                 resident_max_mb: float | None = None, store_dir: str | None = None,
                 decode_workers: int | None = None) -> Decoded:
    """Class-per-folder images under `root` (see the module docstring for the layouts)."""
    del download  # a user's own images: nothing to fetch
    size = image_size or DEFAULT_IMAGE_SIZE
    store = StoreOptions(RESIDENT_MAX_MB if resident_max_mb is None else float(resident_max_mb),
                         store_dir, max(1, decode_workers or 1))
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train_x, train_y, classes = _load_folder(train_dir, size, store)
        test_x, test_y, test_classes = _load_folder(test_dir, size, store)
        if test_classes != classes:
            raise DatasetError(f"image_folder: class folders differ between {train_dir} "
                               f"{classes} and {test_dir} {test_classes}")
    else:
        images, labels, classes = _load_folder(root, size, store)
        n_test = holdout_size(len(labels), TEST_FRACTION)
        keep, held = stratified_holdout(labels, n_test, TEST_SPLIT_SEED, STREAM_TEST)
        train_x, train_y, test_x, test_y = _take(images, keep), labels[keep], _take(images, held), labels[held]
    return Decoded(train_images=train_x, train_labels=train_y, test_images=test_x,
                   test_labels=test_y, class_names=tuple(classes), augment="crop_flip")
