"""analysis/tradeoffs.py marks distilled students by KD method and scales the accuracy axis to
the students that trained (a diverged trial sits on the lower edge), on a frame built here."""
from pathlib import Path

import pandas as pd
import pytest

from kdtune.analysis import tradeoffs


class _Exp:
    path = Path("/tmp/fake_experiment")
    dataset = {"name": "fashion_mnist"}

    def teacher_metrics(self):
        return {"params": 5e5, "flops": 1e7, "val_acc": 0.91}


def _frame():
    rows = [("baseline", None, 0.86, 0), ("baseline", None, 0.87, 0),
            ("distill", "kd", 0.885, 0), ("distill", "kd", 0.89, 0), ("distill", "dkd", 0.88, 0),
            ("distill", "dist", 0.875, 0), ("distill", "fitnet", 0.883, 0), ("distill", "dkd", 0.0, 1)]
    df = pd.DataFrame([{"stage": st, "kd_method": m, "val_acc": acc, "diverged": d, "alpha": 0.5 if m == "kd" else None,
                        "params": 1000 * (i + 1), "flops": 5000 * (i + 1)} for i, (st, m, acc, d) in enumerate(rows)])
    df["method"] = tradeoffs.method_column(df)
    return df


@pytest.mark.parametrize("color", ["method", "alpha"])
def test_legend_names_every_method_and_the_axis_fits_the_trained_students(color):
    fig = tradeoffs.plot(_Exp(), _frame(), "params", color)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    for expected in ("baseline (2)", "kd (2)", "dkd (1)", "dist (1)", "fitnet (1)", "diverged (dkd: 1)"):
        assert expected in labels, labels
    lo, hi = ax.get_ylim()
    # trained students 86-89%, teacher 91%: the band, not 0-91% because of the diverged trial
    assert 84.0 <= lo < 86.0 and 91.0 < hi <= 93.0
    markers = {tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in ax.collections[1:6]}
    assert len(markers) == 5  # kd, dkd, dist, fitnet and the front's circles differ in shape


def test_accuracy_limits_and_method_column():
    assert tradeoffs.accuracy_limits(pd.Series([85.0, 91.0])) == pytest.approx((84.0, 92.0))
    assert tradeoffs.accuracy_limits(pd.Series([], dtype=float)) == (0.0, 100.0)
    df = _frame()
    assert list(df["method"][:3]) == ["baseline", "baseline", "kd"]
    assert list(tradeoffs.diverged_mask(df)) == [False] * 7 + [True]
