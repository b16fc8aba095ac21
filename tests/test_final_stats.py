"""The final stage's statistics (search/stages/final_stats.py) and candidate choice (search/stages/final_select.py).

No Ray, no training: milliseconds.
"""
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from kdtune.search.stages.final_select import SearchTrial, pareto_members, ranked_distinct, select, top_k
from kdtune.search.stages.final_stats import mean_sd, welch_interval


def _welch_by_hand(a, b, confidence):
    """Welch's interval from its textbook formula (Welch 1947; Satterthwaite's df)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    return diff - half, diff + half, df


@pytest.mark.parametrize("a, b, confidence", [
    ([0.971, 0.965, 0.978], [0.952, 0.960, 0.949], 0.95),
    ([0.90, 0.91], [0.93, 0.80, 0.85, 0.88], 0.95),  # unequal sizes and spreads
    ([0.5, 0.7, 0.6, 0.65], [0.55, 0.56, 0.57], 0.90),
])
def test_welch_interval_matches_the_textbook_formula(a, b, confidence):
    got = welch_interval(a, b, confidence)
    low, high, df = _welch_by_hand(a, b, confidence)
    assert got["diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
    assert got["df"] == pytest.approx(df)
    assert got["low"] < got["diff"] < got["high"]
    assert got["confidence"] == confidence and got["method"] == "Welch's t interval"


def test_welch_interval_needs_two_values_a_side_and_spread():
    one = welch_interval([0.9], [0.8, 0.85])
    assert one["diff"] == pytest.approx(0.075) and one["low"] is None and one["high"] is None
    flat = welch_interval([0.9, 0.9, 0.9], [0.8, 0.8])
    assert flat["low"] == flat["high"] == pytest.approx(0.1)  # no spread: a point, not NaN
    assert welch_interval([], [0.8, 0.9])["diff"] is None


def test_mean_sd_is_the_sample_sd():
    assert mean_sd([0.9, 0.92, 0.97]) == pytest.approx((statistics.fmean([0.9, 0.92, 0.97]),
                                                       np.std([0.9, 0.92, 0.97], ddof=1)))
    assert mean_sd([0.5]) == (0.5, None) and mean_sd([]) == (None, None)


def _trial(tid, val, epochs=4, params=100.0, **cfg):
    return SearchTrial(tid, {"model": "mlp", "lr": 0.1, "seed": 0, **cfg}, val, params, epochs)


def test_top_k_ranks_by_fidelity_then_val_acc_and_drops_duplicate_configs():
    trials = [_trial("short", 0.99, epochs=2, width=8),           # high, but after only 2 epochs
              _trial("a", 0.95, width=16), _trial("dup", 0.97, width=16),  # the same config twice
              _trial("b", 0.90, width=32), _trial("c", 0.93, width=64)]
    assert [t.trial_id for t in ranked_distinct(trials)] == ["dup", "c", "b", "short"]
    assert [t.trial_id for t in top_k(trials, 2)] == ["dup", "c"]


def test_pareto_members_keep_both_ends_of_the_front_under_the_cap():
    trials = [_trial("big", 0.97, params=1000, width=1), _trial("mid", 0.95, params=500, width=2),
              _trial("small", 0.90, params=100, width=3), _trial("tiny", 0.80, params=50, width=4),
              _trial("dominated", 0.85, params=800, width=5)]
    assert {t.trial_id for t in pareto_members(trials, 10)} == {"big", "mid", "small", "tiny"}
    capped = pareto_members(trials, 2)
    assert [t.trial_id for t in capped] == ["big", "tiny"]  # the most accurate and the smallest


def test_select_puts_the_baseline_first_and_retrains_at_the_full_budget():
    distill = [_trial("d1", 0.95, width=16, alpha=0.5), _trial("d2", 0.96, width=32, alpha=0.7)]
    baseline = [_trial("b1", 0.90, width=16, alpha=0.0), _trial("b2", 0.92, epochs=2, width=8, alpha=0.0)]
    chosen = select(distill, baseline, k=3, objective="accuracy", epochs=18)
    assert [c["role"] for c in chosen] == ["baseline", "distilled #1", "distilled #2"]
    assert [c["source_trial"] for c in chosen] == ["b1", "d2", "d1"]
    for c in chosen:
        assert c["config"]["epochs"] == 18 and c["config"]["test_best_epoch"] is True
        assert "seed" not in c["config"]  # each final trial sets its own
