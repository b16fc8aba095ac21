"""The experiment record's statistics: mean ± sd (one form, MeanSd) and the final stage's
KD gains' confidence intervals. The final stage (search/stages/final.py), summary.md
(search/record/final_summary.py), analysis/final_seeds.py, the model card (analysis/export.py)
and benchmarks/ all use MeanSd, so "mean ± sd" is computed (sample sd, ddof 1) and printed
one way.

Two gains per distilled config:
- over its undistilled twin (same architecture, recipe and seeds, CE only): the runs pair up by
  seed, so `paired_interval` is the paired t interval on the per-seed differences
  d_i = distilled_i - twin_i (scipy.stats.ttest_rel(...).confidence_interval):
      mean(d) ± t_{(1 + c) / 2, n - 1} * sd(d) / sqrt(n),   df = n - 1.
  Pairing removes what the seed does to both runs (split-independent init, batch order),
  so this interval isolates what distillation adds;
- over the best baseline config (another architecture, in general): Welch's interval below.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

METHOD = "Welch's t interval"
PAIRED_METHOD = "paired t interval on per-seed differences"


@dataclass(frozen=True)
class MeanSd:
    """Mean and sample sd (ddof 1) of repeated values (seeds): sd None for one value, both
    None for none. `n` counts the values (None when built from recorded figures)."""
    mean: float | None
    sd: float | None = None
    n: int | None = None

    @classmethod
    def of(cls, values: Iterable[Any]) -> "MeanSd":
        """Over the finite values (None and NaN, e.g. a run without a figure, are left out)."""
        vals = [float(v) for v in values if v is not None and not _nan(v)]
        if not vals:
            return cls(None, None, 0)
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))

    def text(self, scale: float = 100.0, digits: int = 2, unit: str = "%", missing: str = "n/a") -> str:
        """"97.12 ± 0.31%" (fractions shown in percent by default); the mean alone without an
        sd; `missing` without a mean."""
        if self.mean is None or _nan(self.mean):
            return missing
        text = f"{scale * self.mean:.{digits}f}"
        if self.sd is not None and not _nan(self.sd):
            text += f" ± {scale * self.sd:.{digits}f}"
        return text + unit

    def as_dict(self) -> dict[str, Any]:
        """{"mean", "sd", "n"}: the JSON form (the model card's)."""
        return {"mean": self.mean, "sd": self.sd, "n": self.n}


def _nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """mean(a) - mean(b) with Welch's t interval at `confidence`.

    Returns {"diff", "low", "high", "df", "confidence", "method", "reason"}; low/high/df are
    None, and `reason` says why, when a side has fewer than two values, when neither side
    varies (the interval is undefined, not a point), or when scipy returns a non-finite one.
    """
    from scipy import stats  # scipy comes with scikit-learn; pinned in setup.cfg

    a, b = [float(v) for v in a], [float(v) for v in b]
    out: dict[str, Any] = {"diff": None, "low": None, "high": None, "df": None,
                           "confidence": confidence, "method": METHOD, "reason": None}
    if not a or not b:
        out["reason"] = "no tested seed on one side"
        return out
    out["diff"] = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        out["reason"] = "fewer than 2 seeds"
        return out
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        out["reason"] = "no spread over seeds on either side: undefined"  # scipy answers NaN
        return out
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    out.update(low=float(ci.low), high=float(ci.high), df=float(result.df))
    if not (math.isfinite(out["low"]) and math.isfinite(out["high"])):
        out.update(low=None, high=None, df=None, reason="scipy returned a non-finite interval")
    return out


def paired_interval(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> dict[str, Any]:
    """mean over the shared seeds of a[seed] - b[seed], with the paired t interval.

    `a`, `b`: seed -> value. Returns {"diff", "low", "high", "df", "pairs", "confidence",
    "method", "reason"}; low/high/df are None, with a `reason`, when fewer than two seeds
    pair up or the differences do not vary (the interval is then undefined, not zero-width).
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    out: dict[str, Any] = {"diff": None, "low": None, "high": None, "df": None, "pairs": len(seeds),
                           "confidence": confidence, "method": PAIRED_METHOD, "reason": None}
    if not seeds:
        out["reason"] = "no seed tested on both sides"
        return out
    x, y = [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]
    diffs = [p - q for p, q in zip(x, y)]
    out["diff"] = statistics.fmean(diffs)
    if len(seeds) < 2:
        out["reason"] = "fewer than 2 paired seeds"
        return out
    if statistics.variance(diffs) == 0:
        out["reason"] = "the per-seed differences do not vary: undefined"
        return out
    result = stats.ttest_rel(x, y)
    ci = result.confidence_interval(confidence)
    low, high = float(ci.low), float(ci.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        out["reason"] = "scipy returned a non-finite interval"
        return out
    out.update(low=low, high=high, df=float(result.df))
    return out
