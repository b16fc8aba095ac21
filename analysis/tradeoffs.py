"""Accuracy vs size: the Pareto front of val_acc against params (and FLOPs) over all students.

    python analysis/tradeoffs.py kdtune_results/<name> [--color method|alpha|temperature] [--out DIR]

Every baseline and distillation trial is a point (best-epoch val_acc, params); each distilled
student is marked by its KD method (a marker shape and colour per method, the legend names
them; `--color alpha|temperature` colours by that value instead, shapes still per method).
The accuracy axis spans the students that trained: a diverged trial (val_acc 0) is drawn as a
triangle on the lower edge, so it does not squeeze the band where the students differ. The
non-dominated ones (no other student is both as accurate and as small) form the front: the
students worth keeping, and what each parameter cut costs in accuracy. Writes
tradeoffs.md, tradeoffs.csv (every point with its front flags), tradeoffs_params.png and
tradeoffs_flops.png to <experiment>/analysis/.
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt  # Agg backend: kdtune.analysis.report selects it
import pandas as pd

from kdtune.analysis.cli import make_parser, parse
from kdtune.analysis.experiment import Experiment
from kdtune.search.tune.nondominated import front_order, pareto_mask
from kdtune.analysis.report import (fmt_float, fmt_int, fmt_pct, fmt_points, markdown_table,
                             notes_block, save_figure, write_text)
from kdtune.trainables.reporting import METRIC
from kdtune.search.record.stage_names import BASELINE, DISTILL

COSTS = {"params": "parameters", "flops": "FLOPs per image"}
TABLE = ("stage", "trial_id", "method", "model", "depth", "width", "alpha", "temperature", "lr", METRIC,
         "params", "reduction_pct", "flops")
FORMATS = {METRIC: fmt_pct, "params": fmt_int, "flops": fmt_int, "reduction_pct": fmt_points,
           "depth": fmt_int, "width": fmt_int, "alpha": fmt_float, "temperature": fmt_float, "lr": fmt_float}
HEADERS = {"temperature": "T", "reduction_pct": "reduction", "trial_id": "trial"}
# One marker per method, in list_losses() order (cycled past ten); baselines are grey squares.
MARKERS = ("o", "D", "^", "v", "P", "X", "h", "<", ">", "p")


def method_column(df: pd.DataFrame) -> pd.Series:
    """'baseline' for baseline trials, else the trial's kd_method (kd when absent)."""
    method = df["kd_method"] if "kd_method" in df else pd.Series("kd", index=df.index)
    method = method.fillna("kd").astype(str)
    return method.where(df["stage"] != BASELINE, "baseline")


def diverged_mask(df: pd.DataFrame) -> pd.Series:
    """Trials that did not train: diverged flag set, or a non-finite accuracy."""
    flag = df["diverged"].fillna(0).astype(float) > 0 if "diverged" in df else False
    return flag | ~pd.to_numeric(df[METRIC], errors="coerce").between(-1, 2)


def accuracy_limits(trained_pct: pd.Series, teacher_pct: float | None = None) -> tuple[float, float]:
    """y-limits (%) around the trained students (and the teacher): 8% of their span, at
    least 1 point, either side, clipped to [0, 100]."""
    values = [v for v in list(trained_pct) + ([teacher_pct] if teacher_pct is not None else [])
              if v == v]
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(0.08 * (hi - lo), 1.0)
    return max(0.0, lo - pad), min(100.0, hi + pad)


def student_points(exp: Experiment) -> pd.DataFrame:
    """Baseline + distill trials with an accuracy and a size, flagged on_front_<cost>."""
    df = exp.trials((BASELINE, DISTILL))
    df = df[df[METRIC].notna() & df["params"].notna()].reset_index(drop=True)
    # Baseline trials are alpha = 0 by construction; say so even if a config lacks the key.
    df.loc[df["stage"] == BASELINE, "alpha"] = 0.0
    df["method"] = method_column(df) if len(df) else []
    for cost in COSTS:
        df[f"on_front_{cost}"] = pareto_mask(df[METRIC], df[cost]) if len(df) else []
    return df


def plot(exp: Experiment, df: pd.DataFrame, cost: str, color: str = "method") -> plt.Figure:
    """Scatter of all students by method, the front connected, the teacher as a star; log
    cost axis; accuracy axis scaled to the students that trained."""
    from kdtune.trainables.losses import list_losses

    fig, ax = plt.subplots(figsize=(8, 5.2))
    if "method" not in df:
        df = df.assign(method=method_column(df))
    bad = diverged_mask(df)
    ok = df[~bad]
    base = ok[ok["method"] == "baseline"]
    ax.scatter(base[cost], 100 * base[METRIC], marker="s", s=46, c="0.55", edgecolors="black",
               linewidths=0.5, label=f"baseline ({len(base)})", zorder=3)
    known = list_losses()
    methods = sorted({m for m in ok["method"] if m != "baseline"},
                     key=lambda m: known.index(m) if m in known else len(known))
    palette = plt.get_cmap("tab10")
    sc = None
    for i, method in enumerate(methods):
        pts = ok[ok["method"] == method]
        marker = MARKERS[(known.index(method) if method in known else i) % len(MARKERS)]
        style = dict(marker=marker, s=50, edgecolors="black", linewidths=0.5, zorder=3,
                     label=f"{method} ({len(pts)})")
        if color == "method":
            ax.scatter(pts[cost], 100 * pts[METRIC], color=palette(i % 10), **style)
        else:  # coloured by a value; a method without it (dkd has no alpha) is hollow
            values = pd.to_numeric(pts[color], errors="coerce") if color in pts else pd.Series(float("nan"), index=pts.index)
            sc = ax.scatter(pts[cost], 100 * pts[METRIC], c=values, cmap="viridis" if color == "alpha" else "plasma",
                            plotnonfinite=True, vmin=df[color].min() if color in df else None,
                            vmax=df[color].max() if color in df else None, **style)
    if sc is not None:
        cbar = fig.colorbar(sc, ax=ax, pad=0.02)
        cbar.set_label("alpha (weight of the teacher's soft targets)" if color == "alpha" else "temperature T")
    order = front_order(ok[METRIC], ok[cost]) if len(ok) else []
    if len(order):
        front = ok.iloc[order]
        ax.plot(front[cost], 100 * front[METRIC], "-", color="crimson", lw=1.6, zorder=2,
                label=f"Pareto front ({len(front)})")
        ax.scatter(front[cost], 100 * front[METRIC], s=170, facecolors="none", edgecolors="crimson",
                   linewidths=1.6, zorder=4)
    teacher = exp.teacher_metrics()
    teacher_pct = None
    if teacher.get(cost) is not None and teacher.get(METRIC) is not None:
        teacher_pct = 100 * teacher[METRIC]
        ax.scatter([teacher[cost]], [teacher_pct], marker="*", s=320, c="gold",
                   edgecolors="black", linewidths=0.8, zorder=5,
                   label=f"teacher ({fmt_int(teacher[cost])} {'params' if cost == 'params' else 'FLOPs'})")
    lo, hi = accuracy_limits(100 * ok[METRIC], teacher_pct)
    ax.set_ylim(lo, hi)
    if bad.any():  # diverged: on the lower edge, outside the band the scale is fitted to
        failed = df[bad]
        ax.scatter(failed[cost], [lo] * len(failed), marker="v", s=70, c="red", edgecolors="black",
                   linewidths=0.5, zorder=6, clip_on=False,
                   label=f"diverged ({', '.join(sorted(set(failed['method'])))}: {len(failed)})")
    ax.set_xscale("log")
    ax.set_xlabel(f"{COSTS[cost]} (log scale)")
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_title(f"{exp.dataset.get('name', '?')}: validation accuracy vs {COSTS[cost]}\n"
                 f"{exp.path.name}, {len(df)} students", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__)
    parser.add_argument("--color", choices=("method", "alpha", "temperature"), default="method",
                        help="what colours the distilled students (default method; markers are "
                             "per method either way)")
    args, exp = parse(parser, argv)

    df = student_points(exp)
    head = [f"# Accuracy vs size: {exp.title}", "",
            f"Students with a {METRIC}: {len(df)} (baseline {int((df['stage'] == 'baseline').sum())}, "
            f"distill {int((df['stage'] == 'distill').sum())}). Teacher params: "
            f"{fmt_int(exp.teacher_params()) or 'unknown'}.", ""]
    sections = []
    for cost, label in COSTS.items():
        front = df.iloc[front_order(df[METRIC], df[cost])] if len(df) else df
        sections += [f"## Pareto front: {METRIC} (max) vs {label} (min), {len(front)} students", "",
                     markdown_table(front[list(TABLE)], FORMATS, HEADERS) if len(front) else "(no students yet)",
                     ""]
    write_text(exp.output("tradeoffs.md"), "\n".join(head) + notes_block(exp.notes) + "\n" + "\n".join(sections))
    df.to_csv(exp.output("tradeoffs.csv"), index=False)
    if len(df):
        for cost in COSTS:
            save_figure(plot(exp, df, cost, args.color), exp.output(f"tradeoffs_{cost}.png"))
    else:
        print("no baseline or distill trial has reported yet: no figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
