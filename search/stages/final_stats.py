"""Statistics of the final stage: mean ± sd over seeds, and the KD gain's confidence interval.

The KD gain of a distilled config is mean(test_acc, distilled seeds) - mean(test_acc, baseline
seeds). Its interval is Welch's t interval (unequal variances, Welch-Satterthwaite degrees of
freedom), from scipy.stats.ttest_ind(equal_var=False).confidence_interval:

    diff ± t_{(1 + c) / 2, df} * sqrt(s_a^2 / n_a + s_b^2 / n_b)
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))

with the sample sd (ddof = 1). It needs two seeds on each side; with 3 seeds the t quantile
is large (df <= 4: t_0.975 >= 2.78), so the interval is wide: that is the honest width.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

METHOD = "Welch's t interval"


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; None for one value, both None for none)."""
    vals = [float(v) for v in values]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """mean(a) - mean(b) with Welch's t interval at `confidence`.

    Returns {"diff", "low", "high", "df", "confidence", "method"}; low/high/df are None when a
    side has fewer than two values, and low == high == diff when neither side varies (no
    spread to put an interval on).
    """
    from scipy import stats  # scipy comes with scikit-learn; pinned in setup.cfg

    a, b = [float(v) for v in a], [float(v) for v in b]
    out: dict[str, Any] = {"diff": None, "low": None, "high": None, "df": None,
                           "confidence": confidence, "method": METHOD}
    if not a or not b:
        return out
    out["diff"] = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return out
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        out.update(low=out["diff"], high=out["diff"])  # scipy answers NaN here
        return out
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    out.update(low=float(ci.low), high=float(ci.high), df=float(result.df))
    if not (math.isfinite(out["low"]) and math.isfinite(out["high"])):
        out.update(low=None, high=None, df=None)
    return out
