"""Pareto front of accuracy against cost: the trials no other trial beats on both.

A point is dominated when another point is at least as accurate AND at most as costly, and
strictly better in one of the two. Identical points do not dominate each other, so ties
stay on the front together.

    mask = pareto_mask(df["val_acc"], df["params"])   # maximise acc, minimise params
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.nondominated import dominator_counts


def pareto_mask(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Boolean mask of the non-dominated points (maximise accuracy, minimise cost).

    Points with a NaN in either value are never on the front. Dominance: search/nondominated.py.
    """
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    if acc.shape != cst.shape:
        raise ValueError(f"accuracy and cost differ in length: {acc.shape} vs {cst.shape}")
    valid = np.isfinite(acc) & np.isfinite(cst)
    mask = np.zeros(acc.shape, dtype=bool)
    idx = np.flatnonzero(valid)
    mask[idx] = np.asarray(dominator_counts(np.column_stack([acc[idx], -cst[idx]]))) == 0
    return mask


def front_order(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Indices of the front's points sorted by cost (then accuracy): the line to draw."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    idx = np.flatnonzero(pareto_mask(acc, cst))
    return idx[np.lexsort((acc[idx], cst[idx]))]
