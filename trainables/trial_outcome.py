"""What a trial's reported epochs mean: its best epoch, "stopped early", reduction vs teacher.

They are applied in one place, the record layer's trial reader (search/record/trials.py),
which the manifest's winners and trial rows, summary.md, the final stage's choice and every
analysis table (analysis/experiment.py) read, so a number means the same thing wherever it is
printed.

    row = best_epoch(df)        # df: one trial's per-epoch results (Tune's result.json rows)
    stopped_early(epochs=epochs_trained(df), planned=cfg["epochs"], diverged=False, ended=True)
    reduction_pct(8_710, 301_066)   # 97.1: percent fewer parameters than the teacher

Functions take any pandas DataFrame / Series (duck-typed, so trials need not import pandas).
"""
from __future__ import annotations

import math
from typing import Any

from kdtune.trainables.reporting import METRIC, MODE


def best_epoch(df: Any) -> Any | None:
    """The row (epoch) of a trial's best METRIC under MODE, the first of ties; None when the
    trial reported no finite METRIC. This is the epoch whose checkpoint the stage keeps, so
    its metrics (params, val_loss, ...) describe the model a later stage loads."""
    if df is None or METRIC not in df:
        return None
    values = df[METRIC].astype(float)
    values = values[values.map(math.isfinite)]
    if values.empty:
        return None
    return df.loc[values.idxmax() if MODE == "max" else values.idxmin()]


def epoch_number(row: Any) -> int | None:
    """The 1-based epoch of a result row: the loop's own counter, else Tune's iteration."""
    for key in ("epoch", "training_iteration"):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return int(value)
    return None


def epochs_trained(df: Any) -> int:
    """Epochs a trial trained: the loop's `epoch` counter (Tune's training_iteration would
    also count the extra result a function trainable's return value produces)."""
    if df is None:
        return 0
    for key in ("epoch", "training_iteration"):
        if key in df and df[key].notna().any():
            return int(df[key].max())
    return 0


def diverged(df: Any) -> bool:
    """True when any epoch reported `diverged` (the loop's non-finite-loss stop)."""
    return bool(df is not None and "diverged" in df and df["diverged"].fillna(0).astype(float).max() > 0)


def stopped_early(*, epochs: int, planned: int | None, diverged: bool, ended: bool) -> bool:
    """True when the scheduler ended a healthy trial before its planned epochs.

    `ended`: the trial's last result carries Tune's `done` and it did not error. A trial cut
    off by Ctrl-C (no `done`) is unfinished, not stopped early; one that diverged stopped
    itself; one that raised is an error. None of those count.
    """
    return bool(ended and not diverged and planned and epochs < planned)


def reduction_pct(params: Any, teacher_params: Any) -> float:
    """Parameter reduction vs the teacher in percent: 100 * (1 - params / teacher_params);
    NaN when either count is unknown (or the teacher's is 0)."""
    p, t = finite(params), finite(teacher_params)
    return math.nan if p is None or not t else 100.0 * (1.0 - p / t)


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
