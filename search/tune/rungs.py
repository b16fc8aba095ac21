"""ASHA's rung arithmetic, the one definition the scheduler (search/tune/capped_asha.py) and the analysis
scripts (analysis/learning_curves.py) share. Ray-free, so an analysis script stays light.

Rungs sit at grace * eta^k epochs below max_t (max_t ends a trial, it is no rung). A rung can
promote at most floor(n / eta) of the n trials that reach it, so over a search of N trials
rung 0 promotes at most floor(N / eta), rung 1 floor(floor(N / eta) / eta), ... -- never fewer
than one, so the best trial always trains to max_t.
"""
from __future__ import annotations


def rung_milestones(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """Epochs at which trials are compared: grace * eta^k, below max_t."""
    milestones, t = [], grace_period
    while t < max_t:
        milestones.append(int(t))
        t *= reduction_factor
    return milestones


def rung_caps(num_samples: int, reduction_factor: int, n_rungs: int) -> list[int]:
    """The most trials each rung can ever promote in a search of num_samples trials
    (6 trials, eta 3, two rungs: [2, 1])."""
    caps, reach = [], num_samples
    for _ in range(n_rungs):
        reach = max(1, reach // reduction_factor)
        caps.append(reach)
    return caps
