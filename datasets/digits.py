"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits; offline, the product default.

The set ships inside scikit-learn, so it needs no files, no root and no download. It has no
official test split: a stratified 20% test split is carved with a fixed seed
(`splits.TEST_SPLIT_SEED`), so every search seed is scored on the same test rows.
"""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from .registry import Decoded, register_dataset
from .splits import STREAM_TEST, TEST_SPLIT_SEED, holdout_size, stratified_holdout

TEST_FRACTION = 0.2
MAX_VALUE = 16  # load_digits pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)


@register_dataset
def digits(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """Decode load_digits into uint8 (N, 1, 8, 8), values scaled 0..16 -> 0..255."""
    del root, download, image_size  # bundled with scikit-learn: nothing to find or fetch
    raw = load_digits()
    images = torch.from_numpy(raw.images * (255.0 / MAX_VALUE)).round().to(torch.uint8)
    images = images.unsqueeze(1).contiguous()
    labels = torch.from_numpy(raw.target).to(torch.int64)
    n_test = holdout_size(len(labels), TEST_FRACTION)
    train_idx, test_idx = stratified_holdout(labels, n_test, TEST_SPLIT_SEED, STREAM_TEST)
    return Decoded(train_images=images[train_idx], train_labels=labels[train_idx],
                   test_images=images[test_idx], test_labels=labels[test_idx],
                   class_names=tuple(str(c) for c in raw.target_names), augment="none")
