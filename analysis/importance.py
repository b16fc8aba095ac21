"""Which hyperparameters mattered: fANOVA importance over the distillation trials.

    python analysis/importance.py kdtune_results/<name> [--out DIR]

The distill stage's own Optuna study (<experiment>/distill/optuna.db) is read, and its
COMPLETE trials (value = the val_acc the search told Optuna; pruned, failed and running ones
left out, and counted) are ranked by `optuna.importance.get_param_importances` (fANOVA,
seeded) over the sampled alpha, T, lr, weight_decay, depth, width (and model when several
families were searched, kd_method and each method's own hyperparameters when several KD
methods were), each on one range spanning what was sampled (kdtune's depth range
depends on the family, which fANOVA cannot take as it is). Dimensions pinned in the search
are left out; so are the hyperparameters of one method when several were searched (fANOVA
ranks the dimensions every trial has: kd_method stands for the choice of method and its
settings together). An experiment without a study file falls back to the trials' result rows
(value = best val_acc). Writes importance.md / .csv,
importance.png (bar chart) and importance_alpha_T.png (val_acc vs alpha and vs T, the
baseline students at alpha = 0 for reference) to <experiment>/analysis/.
"""
from __future__ import annotations

import math
import sys

import matplotlib.pyplot as plt  # Agg backend: kdtune.analysis.report selects it
import optuna
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter
import pandas as pd

from kdtune.analysis.cli import make_parser, parse
from kdtune.analysis.experiment import Experiment
from kdtune.analysis.report import fmt_float, markdown_table, notes_block, save_figure, write_text
from kdtune.search.record.trials import plain
from kdtune.search.tune.search_spaces import is_log
from kdtune.trainables.losses import all_hyperparameters
from kdtune.search.tune.optuna_study import load_study
from kdtune.trainables.reporting import METRIC, MODE
from kdtune.search.record.stage_names import BASELINE, DISTILL

PARAMS = ("alpha", "temperature", "lr", "weight_decay", "depth", "width")


def method_params() -> tuple[str, ...]:
    """Numeric hyperparameters the KD methods declare, beyond PARAMS (absent from other
    methods' trials); read from the registry when asked."""
    return tuple(k for k, hp in all_hyperparameters().items() if hp.numeric and k not in PARAMS)


def int_params() -> tuple[str, ...]:
    return ("depth", "width", *(k for k, hp in all_hyperparameters().items() if hp.kind == "int"))


def categorical() -> tuple[str, ...]:
    return ("model", "kd_method", *(k for k, hp in all_hyperparameters().items() if not hp.numeric))
MIN_TRIALS = 3  # fANOVA on fewer complete trials says nothing


def distributions(trials: pd.DataFrame) -> dict[str, optuna.distributions.BaseDistribution]:
    """One distribution per dimension that varied across the trials, spanning what was sampled."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name in PARAMS + method_params():
        if name not in trials:
            continue
        values = pd.to_numeric(trials[name], errors="coerce").dropna()
        if values.nunique() < 2:  # pinned (or one trial): nothing to attribute to it
            continue
        lo, hi = float(values.min()), float(values.max())
        if name in int_params():
            out[name] = optuna.distributions.IntDistribution(int(lo), int(hi), log=is_log(name) and lo > 0)
        else:
            out[name] = optuna.distributions.FloatDistribution(lo, hi, log=is_log(name) and lo > 0)
    for name in categorical():
        values = trials[name].dropna() if name in trials else pd.Series(dtype=object)
        if values.nunique() > 1:
            out[name] = optuna.distributions.CategoricalDistribution(sorted(values.unique(), key=str))
    return out


def build_study(trials: pd.DataFrame) -> optuna.Study:
    """A finished study with one COMPLETE trial per distill trial (value = best val_acc)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if MODE == "max" else "minimize")
    dists = distributions(trials)
    for _, row in trials.iterrows():
        # A method's own hyperparameters are absent (NaN) in other methods' trials.
        present = {k: d for k, d in dists.items() if not _missing(row[k])}
        params = {k: (int(row[k]) if isinstance(d, optuna.distributions.IntDistribution) else
                      plain(row[k]) if isinstance(d, optuna.distributions.CategoricalDistribution)
                      else float(row[k]))
                  for k, d in present.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=present, value=float(row[METRIC])))
    return study


def study_trials(exp: Experiment) -> tuple[pd.DataFrame, str] | None:
    """The distill study's COMPLETE trials as rows (params, model, val_acc) and a line saying
    how many trials of which state it holds; None when the experiment has no study file."""
    try:
        study = load_study(exp.path / DISTILL, DISTILL)
    except ValueError:
        return None
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    columns = [*PARAMS, *method_params(), *categorical()]
    rows = [{**{k: t.params.get(k) for k in columns}, METRIC: t.values[0]} for t in complete]
    states = pd.Series([t.state.name.lower() for t in trials]).value_counts()
    warm = sum("warm_start_from" in t.user_attrs for t in complete)
    said = (f"the distill study's {len(complete)} COMPLETE trials of {len(trials)} "
            f"({', '.join(f'{n} {s}' for s, n in states.items())}"
            + (f"; {warm} of them copied by --warm-start" if warm else "") + f"; value = the {METRIC} told to Optuna)")
    return pd.DataFrame(rows, columns=[*columns, METRIC]), said


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def importances(study: optuna.Study) -> dict[str, float]:
    # Seeded so the same experiment gives the same numbers on every run.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.get_param_importances(study, evaluator=evaluator)


def plot_bars(exp: Experiment, imp: dict[str, float], n: int) -> plt.Figure:
    names = list(imp)[::-1]  # largest on top
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.8))
    bars = ax.barh(names, [imp[k] for k in names], color="tab:blue")
    ax.bar_label(bars, labels=[f"{imp[k]:.2f}" for k in names], padding=3, fontsize=9)
    ax.set_xlim(0, max(1e-9, max(imp.values())) * 1.2)
    ax.set_xlabel(f"fANOVA importance (share of the variance of best {METRIC})")
    ax.set_ylabel("hyperparameter")
    ax.set_title(f"{exp.dataset.get('name', '?')}: hyperparameter importance, {n} complete distill trials\n"
                 f"({exp.path.name})", fontsize=11)
    ax.grid(True, axis="x", alpha=0.25)
    return fig


def plot_alpha_t(exp: Experiment, kd: pd.DataFrame, base: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, dim, label in ((axes[0], "alpha", "alpha (weight of the soft targets)"),
                           (axes[1], "temperature", "temperature T")):
        sc = ax.scatter(kd[dim], 100 * kd[METRIC], c=kd["params"], cmap="viridis", s=46, edgecolors="black",
                        linewidths=0.5, norm=LogNorm() if kd["params"].min() > 0 else None, zorder=3)
        ax.scatter([], [], s=46, c="white", edgecolors="black", linewidths=0.5,  # neutral legend proxy
                   label=f"distilled, coloured by size ({len(kd)})")
        if dim == "alpha" and len(base):
            ax.scatter([0.0] * len(base), 100 * base[METRIC], marker="s", c="0.55", edgecolors="black",
                       linewidths=0.5, s=46, label=f"baseline, alpha = 0 ({len(base)})", zorder=3)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.25)
        ax.legend(loc="best", fontsize=9)
    axes[0].set_ylabel("best validation accuracy (%)")
    cbar = fig.colorbar(sc, ax=axes, pad=0.02)
    cbar.set_label("student parameters (log scale)")
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    cbar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    fig.suptitle(f"{exp.dataset.get('name', '?')}: validation accuracy vs the KD hyperparameters "
                 f"({exp.path.name})", fontsize=11)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__)
    args, exp = parse(parser, argv)

    trials = exp.trials((BASELINE, DISTILL))
    kd = trials[(trials["stage"] == DISTILL) & trials[METRIC].notna()].reset_index(drop=True)
    base = trials[(trials["stage"] == BASELINE) & trials[METRIC].notna()]
    lines = [f"# Hyperparameter importance: {exp.title}", ""]
    table = pd.DataFrame(columns=["param", "importance", "low", "high", "varied"])
    from_study = study_trials(exp)
    if from_study is None:
        scored, source = kd, f"{len(kd)} distill trials' result rows (value = best {METRIC}; no Optuna study file)"
    else:
        scored, source = from_study
    if len(scored) < MIN_TRIALS:
        exp.note(f"importance needs at least {MIN_TRIALS} complete distill trials, found {len(scored)} "
                 f"in {source}: no importance computed")
    else:
        study = build_study(scored)
        dists = {k: d for t in study.trials for k, d in t.distributions.items()}  # union
        imp = importances(study) if dists else {}
        pinned = [p for p in PARAMS + method_params() if p not in dists and p in kd and kd[p].notna().any()]
        conditional = [k for k in dists if k not in imp]  # some methods' settings only
        rows = [{"param": k, "importance": v, "low": getattr(dists[k], "low", None),
                 "high": getattr(dists[k], "high", None), "varied": True} for k, v in imp.items()]
        rows += [{"param": p, "importance": math.nan, "low": kd[p].min(), "high": kd[p].max(), "varied": False}
                 for p in pinned if p in kd]
        table = pd.DataFrame(rows, columns=table.columns)
        lines += [f"fANOVA over {source}; pinned or unvaried (left out): {', '.join(pinned) or 'none'}"
                  + (f"; set by some KD methods only (not ranked): {', '.join(conditional)}" if conditional else "")
                  + ".", ""]
        print(f"importance: fANOVA over {source}")
        if imp:
            save_figure(plot_bars(exp, imp, len(scored)), exp.output("importance.png"))
    lines += [notes_block(exp.notes), markdown_table(table, {"importance": fmt_float, "low": fmt_float,
                                                             "high": fmt_float}), ""]
    if len(kd):
        save_figure(plot_alpha_t(exp, kd, base), exp.output("importance_alpha_T.png"))
    write_text(exp.output("importance.md"), "\n".join(lines))
    table.to_csv(exp.output("importance.csv"), index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
