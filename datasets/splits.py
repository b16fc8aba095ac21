"""Seeded, stratified index splits and per-channel statistics over uint8 images.

All randomness here comes from `numpy.random.default_rng([seed, stream])`, so a split
depends only on (labels, seed, stream) and is identical on every machine and run.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

# Streams keep the val split, the subset and carved test splits independent of each other.
STREAM_VAL, STREAM_SUBSET, STREAM_TEST = 1, 2, 3
# Carved test splits (datasets without an official one) use a fixed seed, so the test set
# stays the same across search seeds, as an official test split would.
TEST_SPLIT_SEED = 0


def stratified_holdout(labels: torch.Tensor, n_holdout: int, seed: int,
                       stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split row indices into (kept, held_out) with exactly `n_holdout` held out.

    Each class gives up the same fraction of its rows (to within one row): rows are shuffled,
    ranked within their class, and the ones with the smallest (rank + 0.5) / class_count are
    held out; ties between classes fall in the shuffled order. Both outputs are sorted.
    """
    y = labels.numpy()
    n = len(y)
    if not 0 <= n_holdout <= n:
        raise ValueError(f"cannot hold out {n_holdout} of {n} rows")
    rng = np.random.default_rng([seed, stream])
    perm = rng.permutation(n)
    y_perm = y[perm]
    order = np.argsort(y_perm, kind="stable")  # shuffled rows grouped by class
    counts = np.bincount(y_perm)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[y_perm[order]]
    key = (rank + 0.5) / counts[y_perm]
    chosen = perm[np.argsort(key, kind="stable")]
    held = np.sort(chosen[:n_holdout])
    kept = np.sort(chosen[n_holdout:])
    return torch.from_numpy(kept), torch.from_numpy(held)


def holdout_size(n: int, fraction: float) -> int:
    """Rows to hold out for `fraction` of `n`, at least one and leaving at least one."""
    if n < 2:
        raise ValueError(f"need at least 2 rows to split, got {n}")
    return min(max(round(fraction * n), 1), n - 1)


def channel_stats(images: torch.Tensor,
                  chunk_bytes: int = 64 << 20) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, in [0, 1] pixel units.

    Accumulated in float64 over chunks of at most `chunk_bytes` of float64 (64 MiB: 2,730
    CIFAR images, 303 at 96 px), so a large set, or large images, never need a float copy
    of the set in memory (`images` may be a store's MappedImages: each chunk is read from disk).
    """
    c = images.shape[1]
    chunk = max(1, chunk_bytes // (8 * c * images.shape[2] * images.shape[3]))
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    # Clamp: an all-constant channel must not give std 0 (normalising would divide by it).
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def split_indices(pool_labels: torch.Tensor, val_fraction: float, seed: int,
                  subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices into the training pool (a dataset's official train set).

    val: a seeded, stratified `val_fraction` of the pool; train: the rest, or a seeded,
    stratified `subset` of the rest. The one definition of a kdtune split: create_dataset
    draws its splits here, and a checkpoint's recorded split is re-drawn here.
    """
    n_val = holdout_size(len(pool_labels), val_fraction)
    train_idx, val_idx = stratified_holdout(pool_labels, n_val, seed, STREAM_VAL)
    if subset is not None and subset < len(train_idx):
        _, keep = stratified_holdout(pool_labels[train_idx], subset, seed, STREAM_SUBSET)
        train_idx = train_idx[keep]
    return train_idx, val_idx


def index_digest(indices: torch.Tensor) -> str:
    """A short fingerprint of a row-index set (sha256 of its sorted int64 values)."""
    values = np.sort(indices.numpy().astype("<i8"))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]
