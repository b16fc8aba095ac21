"""Accuracy vs size: the Pareto front of val_acc against params (and FLOPs) over all students.

    python analysis/tradeoffs.py kdtune_results/<name> [--color alpha|temperature] [--out DIR]

Every baseline and distillation trial is a point (best-epoch val_acc, params); the
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

COSTS = {"params": "parameters", "flops": "FLOPs per image"}
TABLE = ("stage", "trial_id", "model", "depth", "width", "alpha", "temperature", "lr", METRIC,
         "params", "reduction_pct", "flops")
FORMATS = {METRIC: fmt_pct, "params": fmt_int, "flops": fmt_int, "reduction_pct": fmt_points,
           "depth": fmt_int, "width": fmt_int, "alpha": fmt_float, "temperature": fmt_float, "lr": fmt_float}
HEADERS = {"temperature": "T", "reduction_pct": "reduction", "trial_id": "trial"}


def student_points(exp: Experiment) -> pd.DataFrame:
    """Baseline + distill trials with an accuracy and a size, flagged on_front_<cost>."""
    df = exp.trials(("baseline", "distill"))
    df = df[df[METRIC].notna() & df["params"].notna()].reset_index(drop=True)
    # Baseline trials are alpha = 0 by construction; say so even if a config lacks the key.
    df.loc[df["stage"] == "baseline", "alpha"] = 0.0
    for cost in COSTS:
        df[f"on_front_{cost}"] = pareto_mask(df[METRIC], df[cost]) if len(df) else []
    return df


def plot(exp: Experiment, df: pd.DataFrame, cost: str, color: str) -> plt.Figure:
    """Scatter of all students, the front connected, the teacher as a star; log cost axis."""
    fig, ax = plt.subplots(figsize=(8, 5.2))
    base = df[df["alpha"] == 0]
    # Distilled: alpha > 0, or a KD method without alpha (dkd, dist; drawn hollow when
    # coloured by alpha).
    kd = df[(df["stage"] != "baseline") & ~(df["alpha"] == 0)]
    # Undistilled students are grey squares whatever the colour key: alpha = 0 and T unused.
    ax.scatter(base[cost], 100 * base[METRIC], marker="s", s=46, c="0.55", edgecolors="black",
               linewidths=0.5, label=f"baseline, alpha = 0 ({len(base)})", zorder=3)
    if len(kd):
        cmap = "viridis" if color == "alpha" else "plasma"
        sc = ax.scatter(kd[cost], 100 * kd[METRIC], c=kd[color], cmap=cmap, s=50, edgecolors="black",
                        linewidths=0.5, zorder=3, plotnonfinite=True)
        # Legend proxy in a neutral colour: the colour bar, not one point's colour, explains hue.
        ax.scatter([], [], s=50, c="white", edgecolors="black", linewidths=0.5,
                   label=f"distilled, coloured by {color} ({len(kd)})")
        cbar = fig.colorbar(sc, ax=ax, pad=0.02)
        cbar.set_label("alpha (weight of the teacher's soft targets)" if color == "alpha"
                       else "temperature T")
    order = front_order(df[METRIC], df[cost])
    if len(order):
        front = df.iloc[order]
        ax.plot(front[cost], 100 * front[METRIC], "-", color="crimson", lw=1.6, zorder=2,
                label=f"Pareto front ({len(front)})")
        ax.scatter(front[cost], 100 * front[METRIC], s=170, facecolors="none", edgecolors="crimson",
                   linewidths=1.6, zorder=4)
    teacher = exp.teacher_metrics()
    if teacher.get(cost) is not None and teacher.get(METRIC) is not None:
        ax.scatter([teacher[cost]], [100 * teacher[METRIC]], marker="*", s=320, c="gold",
                   edgecolors="black", linewidths=0.8, zorder=5,
                   label=f"teacher ({fmt_int(teacher[cost])} {'params' if cost == 'params' else 'FLOPs'})")
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
    parser.add_argument("--color", choices=("alpha", "temperature"), default="alpha",
                        help="what colours the distilled students (default alpha)")
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
