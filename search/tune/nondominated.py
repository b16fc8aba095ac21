"""Pareto dominance, non-dominated sorting and crowding distance (Deb et al. 2002, NSGA-II).

Points are tuples of objectives to MAXIMISE (negate one to minimise it: accuracy and size
are (val_acc, -params)). A point dominates another when it is at least as good in every
objective and better in one; identical points do not dominate each other. Used by the ASHA
scheduler to rank a rung under `--objective pareto` (search/tune/capped_asha.py), by the objective's
front (search/tune/objective.py: the stage's Pareto set and the final stage's Pareto members, through
`front`) and analysis/tradeoffs.py (pareto_mask, front_order: maximise accuracy, minimise cost).
This is the only Pareto code in the tree.

Why not a library: Optuna's versions of these are private (`optuna.study._multi_objective`,
`optuna.samplers.nsgaii._elite_population_selection_strategy`) and work on FrozenTrials;
pymoo would add a large dependency for some thirty lines. Memory O(n^2) booleans: a few
thousand trials at most.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Point = Sequence[float]


def dominance_matrix(points: Sequence[Point]) -> np.ndarray:
    """D[i, j] is True when point i dominates point j: no worse everywhere, better somewhere."""
    p = np.asarray(points, dtype=float).reshape(len(points), -1)
    no_worse = (p[:, None, :] >= p[None, :, :]).all(axis=-1)
    better = (p[:, None, :] > p[None, :, :]).any(axis=-1)
    return no_worse & better


def dominator_counts(points: Sequence[Point]) -> list[int]:
    """How many points dominate each point (0: the point is on the front)."""
    return dominance_matrix(points).sum(axis=0).astype(int).tolist() if len(points) else []


def non_dominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front index of each point: 0 = not dominated, 1 = dominated only by front 0, ..."""
    dom = dominance_matrix(points) if len(points) else np.zeros((0, 0), dtype=bool)
    ranks = np.full(len(points), -1)
    left, front = np.ones(len(points), dtype=bool), 0
    while left.any():
        current = left & ~(dom[left].any(axis=0))  # dominated by no point still left
        ranks[current] = front
        left &= ~current
        front += 1
    return ranks.tolist()


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point within one front: per objective, the gap
    between its two neighbours over the objective's range, summed; the extremes of every
    objective get infinity (they are kept first). An objective with no range adds nothing and
    marks no extreme, so identical points tie at 0 and keep their arrival order. Infinite values
    stay extremes, but gaps are measured on the finite range with them clipped to its ends,
    so no distance is NaN (inf - inf), which would sort ahead of the extremes."""
    n = len(points)
    dist = [0.0] * n
    if n <= 2:
        return [float("inf")] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        if points[order[0]][k] == points[order[-1]][k]:
            continue
        dist[order[0]] = dist[order[-1]] = float("inf")
        finite = [points[i][k] for i in order if math.isfinite(points[i][k])]
        lo, hi = (finite[0], finite[-1]) if finite else (0.0, 0.0)
        if hi == lo:
            continue
        clip = lambda v: min(max(v, lo), hi)  # noqa: E731
        for prev, mid, nxt in zip(order, order[1:], order[2:]):
            dist[mid] += (clip(points[nxt][k]) - clip(points[prev][k])) / (hi - lo)
    return dist


def pareto_order(points: Sequence[Point]) -> list[int]:
    """Indices best first: by front, within a front by crowding distance (largest first),
    remaining ties by index (the earlier arrival)."""
    ranks = non_dominated_ranks(points)
    crowd = [0.0] * len(points)
    for front in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == front]
        for i, d in zip(members, crowding_distances([points[i] for i in members])):
            crowd[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))


# ---- the accuracy-versus-cost front (final stage's Pareto set, analysis/tradeoffs.py) ----
def pareto_mask(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Boolean mask of the non-dominated points (maximise accuracy, minimise cost).

    Points with a NaN in either value are never on the front. Dominance: dominator_counts above.
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


def front(items: Sequence, accuracy: Callable[[object], float | None],
          cost: Callable[[object], float | None]) -> list:
    """The items on the accuracy-versus-cost front (pareto_mask: accuracy max, cost min; an
    item with a missing or non-finite value is never on it), most accurate first, ties in
    arrival order. The stage's Pareto set and the final stage's Pareto members are this."""
    items = list(items)
    nan = float("nan")
    acc = [nan if accuracy(i) is None else float(accuracy(i)) for i in items]
    cst = [nan if cost(i) is None else float(cost(i)) for i in items]
    mask = pareto_mask(acc, cst) if items else []
    return sorted((i for i, on in zip(items, mask) if on), key=lambda i: -float(accuracy(i)))


def front_order(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Indices of the front's points sorted by cost (then accuracy): the line to draw."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    idx = np.flatnonzero(pareto_mask(acc, cst))
    return idx[np.lexsort((acc[idx], cst[idx]))]
