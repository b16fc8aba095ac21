"""Learning curves of every trial, and per-layer gradient norms (residual vs plain students).

    python analysis/learning_curves.py kdtune_results/<name> [--out DIR]

learning_curves.png: val_acc per epoch of every trial, one panel per stage. ASHA's cuts show
as curves of different lengths; trials it stopped early are dashed and end in a cross, and
the rungs where it decides are dotted vertical lines.
grad_norms.png (only for trials run with track_grad_norms): the mean gradient norm of each
layer over training, x = layer index from input to output, log y, residual students in
blue and plain ones in red: with depth, plain nets' early layers get vanishing gradients.
Also writes learning_curves.md / learning_curves.csv (one row per trial and epoch).
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt  # Agg backend: kdtune.analysis.report selects it
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from kdtune.analysis.cli import make_parser, parse
from kdtune.analysis.experiment import Experiment
from kdtune.analysis.report import fmt_float, fmt_int, fmt_pct, markdown_table, notes_block, save_figure, write_text
from kdtune.search.tune.rungs import rung_milestones
from kdtune.trainables.reporting import METRIC
from kdtune.search.record.stage_names import BASELINE, DISTILL, STAGES, TEACHER

GRAD_PREFIX = "grad_norm/"  # trainables/loop.py reports grad_norm/<probe> per epoch


def asha_rungs(spec: dict) -> list[int]:
    """Epochs at which ASHA compared the spec's trials (search/tune/rungs.py); [] without ASHA settings."""
    grace, rf, top = spec.get("grace_period"), spec.get("reduction_factor"), spec.get("max_epochs")
    if not grace or not rf or not top or rf < 2:
        return []
    return rung_milestones(grace, rf, top)


def plot_curves(exp: Experiment, curves: dict[str, dict[str, pd.DataFrame]], trials: pd.DataFrame) -> plt.Figure:
    stages = [s for s in STAGES if curves.get(s)]
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 4.4), squeeze=False)
    early_ids = set(trials.loc[trials["stopped_early"].astype(bool), "trial_id"])
    for ax, stage in zip(axes[0], stages):
        cmap = plt.get_cmap("tab10" if len(curves[stage]) <= 10 else "tab20")
        for i, (tid, df) in enumerate(sorted(curves[stage].items())):
            if METRIC not in df:
                continue
            early = tid in early_ids
            x = df["epoch"] if "epoch" in df else df["training_iteration"]
            ax.plot(x, 100 * df[METRIC], ls="--" if early else "-", marker="o", ms=2.5, lw=1.3,
                    color=cmap(i % cmap.N), alpha=0.85)
            if early:
                ax.plot(x.iloc[-1], 100 * df[METRIC].iloc[-1], "x", color="black", ms=7, mew=1.6)
        if stage != TEACHER:
            for rung in asha_rungs(exp.spec):
                ax.axvline(rung, color="0.4", ls=":", lw=1)
        n_early = sum(t in early_ids for t in curves[stage])
        n = len(curves[stage])
        ax.set_title(f"{stage}: {n} trial{'s' * (n != 1)}" + (f", {n_early} stopped early" if n_early else ""),
                     fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, alpha=0.25)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color="0.3", ls="-", label="ran all epochs"),
               Line2D([], [], color="0.3", ls="--", marker="x", mec="black", label="stopped early (ASHA)"),
               Line2D([], [], color="0.4", ls=":", label="ASHA rung")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"{exp.dataset.get('name', '?')}: validation accuracy per epoch ({exp.path.name})", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def grad_profiles(curves: dict[str, dict[str, pd.DataFrame]], trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, layer): mean grad norm over the trial's epochs, layer index in order.

    The reported order of grad_norm/<probe> keys is input -> output (models.gradient_probes),
    so the column order, not the probe names, gives the layer index.
    """
    info = trials.set_index("trial_id")
    rows = []
    for stage, by_trial in curves.items():
        for tid, df in by_trial.items():
            cols = [c for c in df.columns if str(c).startswith(GRAD_PREFIX)]
            for i, col in enumerate(cols):
                rows.append({"stage": stage, "trial_id": tid, "layer_index": i, "layer": col[len(GRAD_PREFIX):],
                             "mean_grad_norm": float(df[col].mean()), "depth": info.at[tid, "depth"],
                             "model": info.at[tid, "model"], "residual": info.at[tid, "residual"]})
    return pd.DataFrame(rows, columns=["stage", "trial_id", "layer_index", "layer", "mean_grad_norm",
                                       "depth", "model", "residual"])


def plot_grads(exp: Experiment, prof: pd.DataFrame) -> plt.Figure:
    """Colour = residual or plain (the comparison that matters), marker = stage, label = depth."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    colours = {True: "tab:blue", False: "tab:red", None: "0.5"}
    names = {True: "residual", False: "plain (no skip connections)", None: "residual unknown"}
    markers = {TEACHER: "*", BASELINE: "s", DISTILL: "o"}
    residual = prof["residual"].map(lambda r: None if pd.isna(r) else bool(r))
    for (stage, tid), g in prof.assign(res=residual).groupby(["stage", "trial_id"], sort=True):
        res = g["res"].iloc[0]
        ax.plot(g["layer_index"], g["mean_grad_norm"], "-", marker=markers.get(stage, "o"),
                ms=9 if stage == TEACHER else 5, lw=1.2,
                alpha=0.8, color=colours[res])
        ax.annotate(f"depth {fmt_int(g['depth'].iloc[0])}", (g["layer_index"].iloc[-1], g["mean_grad_norm"].iloc[-1]),
                    fontsize=7, color="0.25", xytext=(4, 0), textcoords="offset points", va="center")
    handles = [Line2D([], [], color=colours[k], lw=2, label=names[k]) for k in (True, False, None)
               if (residual == k).any()]
    handles += [Line2D([], [], color="0.3", ls="", marker=m, label=s) for s, m in markers.items()
                if (prof["stage"] == s).any()]
    ax.legend(handles=handles, fontsize=9, loc="best")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    # Label the 2, 3 and 5 minor ticks too: a narrow log range may have one decade tick or none.
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
    ax.margins(x=0.12)  # room for the depth labels at the output end
    ax.set_xlabel("layer index (0 = input layer, last = output layer)")
    ax.set_ylabel("mean gradient norm over training (log scale)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, which="both", alpha=0.25)
    ax.set_title(f"{exp.dataset.get('name', '?')}: per-layer gradient norms, {prof['trial_id'].nunique()} trials "
                 f"({exp.path.name})", fontsize=11)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__)
    args, exp = parse(parser, argv)

    curves = {stage: exp.curves(stage) for stage in STAGES}
    trials = exp.trials()
    long = pd.concat([df.assign(stage=s, trial_id=t) for s, by in curves.items() for t, df in by.items()]
                     or [pd.DataFrame()], ignore_index=True)
    keep = [c for c in ("stage", "trial_id", "epoch", "train_loss", "train_acc", "val_loss", METRIC, "lr",
                        "epoch_time_s", "images_per_s", "agreement") if c in long]
    grad_cols = [c for c in long.columns if str(c).startswith(GRAD_PREFIX)]
    long[keep + grad_cols].to_csv(exp.output("learning_curves.csv"), index=False)

    summary = trials[["stage", "trial_id", "model", "depth", "width", "epochs", "planned_epochs", METRIC,
                      "stopped_early"]]
    lines = [f"# Learning curves: {exp.title}", "", notes_block(exp.notes),
             f"ASHA rungs (epochs): {asha_rungs(exp.spec) or 'none'}", "",
             markdown_table(summary, {METRIC: fmt_pct, "depth": fmt_int, "width": fmt_int,
                                      "planned_epochs": fmt_int, "epochs": fmt_int}), ""]
    if any(curves.values()):
        save_figure(plot_curves(exp, curves, trials), exp.output("learning_curves.png"))
    prof = grad_profiles(curves, trials)
    if len(prof):
        save_figure(plot_grads(exp, prof), exp.output("grad_norms.png"))
        # One row per trial, one column per layer (L0 = input side): compact even for ResNets.
        keys = ["stage", "trial_id", "model", "depth", "residual"]
        wide = (prof.astype({"residual": str}).set_index([*keys, "layer_index"])["mean_grad_norm"]
                .unstack("layer_index"))
        wide.columns = [f"L{i}" for i in wide.columns]
        wide = wide.reset_index().sort_values("stage", key=lambda c: c.map(STAGES.index), kind="stable")
        lines += ["## Mean gradient norm per layer (L0 = input layer)", "",
                  markdown_table(wide, {c: fmt_float for c in wide.columns if c.startswith("L")} | {"depth": fmt_int}), ""]
        prof.to_csv(exp.output("grad_norms.csv"), index=False)
    else:
        lines.append("No trial tracked gradient norms (set train.track_grad_norms: true in a preset).")
    write_text(exp.output("learning_curves.md"), "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
