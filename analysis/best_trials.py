"""Best trials of every stage: config, best-epoch metrics, size and reduction vs the teacher.

    python analysis/best_trials.py kdtune_results/<name> [--top 10] [--out DIR]

Per stage (teacher, baseline, distill), the top-k trials by their best val_acc, with the KD
method, alpha, T, lr, weight decay, model, depth, width, val_acc, val_loss, params, reduction
vs the teacher, epochs run and whether ASHA stopped the trial early; for every stage that
distils, the best trial of each KD method with that method's own settings (a search over
`--methods` answers "which method, with which settings"). Writes best_trials.md,
best_trials.csv (every trial, ranked) and best_per_method.csv to <experiment>/analysis/.
Works on a running search.
"""
from __future__ import annotations

import sys

import pandas as pd

from kdtune.analysis.cli import make_parser, parse
from kdtune.analysis.experiment import Experiment
from kdtune.analysis.report import (fmt_bool, fmt_float, fmt_int, fmt_pct, fmt_points,
                             markdown_table, notes_block, write_text)
from kdtune.search.input.arg_types import positive_int
from kdtune.trainables.losses import method_settings
from kdtune.trainables.reporting import METRIC, MODE
from kdtune.search.record.stage_names import STAGES, TEACHER

COLUMNS = ("rank", "trial_id", "model", "depth", "width", "kd_method", "alpha", "temperature", "lr",
           "weight_decay", METRIC, "val_loss", "params", "reduction_pct", "epochs", "stopped_early")
HEADERS = {"temperature": "T", "weight_decay": "wd", "reduction_pct": "reduction", "epochs": "epochs run",
           "stopped_early": "stopped early", "trial_id": "trial", "kd_method": "method"}
METHOD_TABLE = ("stage", "kd_method", "trials", METRIC, "median_val_acc", "settings", "model", "depth", "width",
                "params", "trial_id")
METHOD_HEADERS = {"kd_method": "method", METRIC: f"best {METRIC}", "median_val_acc": "median",
                  "trial_id": "best trial"}
FORMATS = {METRIC: fmt_pct, "val_loss": fmt_float, "params": fmt_int, "reduction_pct": fmt_points,
           "depth": fmt_int, "width": fmt_int, "epochs": fmt_int, "stopped_early": fmt_bool,
           "alpha": fmt_float, "temperature": fmt_float, "lr": fmt_float, "weight_decay": fmt_float}


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials of one stage, best first (trials without a val_acc yet go last), with a rank."""
    out = trials.sort_values(METRIC, ascending=(MODE == "min"), na_position="last", kind="stable")
    out = out.reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    return out


def settings(row: pd.Series) -> str:
    """A trial's own KD-method hyperparameters, e.g. "dkd_alpha=1, dkd_beta=4.2, T=3.1"."""
    return method_settings(row["kd_method"], row)


def best_per_method(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (distilling stage, KD method): its best trial, the method's trial count and
    the median of their best val_acc. Best method first within a stage."""
    rows = []
    kd = trials[trials["kd_method"].notna() & trials[METRIC].notna()]
    for (stage, method), group in kd.groupby(["stage", "kd_method"], sort=False):
        best = ranked(group).iloc[0]  # the best trial under MODE, the first of ties
        rows.append({"stage": stage, "kd_method": method, "trials": len(group), METRIC: best[METRIC],
                     "median_val_acc": group[METRIC].median(), "settings": settings(best),
                     **{k: best[k] for k in ("model", "depth", "width", "params", "trial_id")}})
    out = pd.DataFrame(rows, columns=list(METHOD_TABLE))
    order = {s: i for i, s in enumerate(STAGES)}
    return out.sort_values(["stage", METRIC], key=lambda c: c.map(order) if c.name == "stage" else -c,
                           kind="stable").reset_index(drop=True)


def method_section(stage: str, table: pd.DataFrame) -> str:
    rows = table[table["stage"] == stage].drop(columns="stage")
    if rows.empty:
        return ""
    formats = {METRIC: fmt_pct, "median_val_acc": fmt_pct, "params": fmt_int, "depth": fmt_int,
               "width": fmt_int, "trials": fmt_int}
    return "\n".join([f"### {stage}: best trial per KD method", "",
                      markdown_table(rows, formats, METHOD_HEADERS), ""])


def stage_section(exp: Experiment, stage: str, trials: pd.DataFrame, top: int) -> str:
    status = exp.status(stage)
    lines = [f"## {stage} ({len(trials)} trials, status {status})", ""]
    if stage == TEACHER:
        # The teacher's own reduction is 0 by definition; alpha/T do not apply.
        trials = trials.assign(reduction_pct=float("nan"))
    if len(trials):
        early = int(trials["stopped_early"].sum())
        lines += [markdown_table(trials.head(top)[list(COLUMNS)], FORMATS, HEADERS), ""]
        if stage != TEACHER:
            lines += [f"Stopped early by ASHA: {early} of {len(trials)}; diverged: "
                      f"{int(trials['diverged'].sum())}; planned epochs: "
                      f"{fmt_int(trials['planned_epochs'].max())}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__)
    parser.add_argument("--top", type=positive_int, default=10, help="trials shown per stage (default 10)")
    args, exp = parse(parser, argv)

    all_trials = exp.trials()
    teacher = exp.teacher_params()
    methods = best_per_method(all_trials)
    sections, tables = [], []
    for stage in STAGES:
        rows = ranked(all_trials[all_trials["stage"] == stage])
        if exp.analysis(stage) is None:
            continue
        sections.append(stage_section(exp, stage, rows, args.top))
        sections.append(method_section(stage, methods))
        tables.append(rows)

    head = [f"# Best trials: {exp.title}", "",
            f"Ranked by best-epoch {METRIC} on the validation split ({MODE}). Teacher params: "
            f"{fmt_int(teacher) or 'unknown'}; reduction = 1 - params / teacher params.", ""]
    text = "\n".join(head) + notes_block(exp.notes) + "\n" + "\n".join(sections)
    write_text(exp.output("best_trials.md"), text)
    csv = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["rank", *all_trials.columns])
    csv.to_csv(exp.output("best_trials.csv"), index=False)
    methods.to_csv(exp.output("best_per_method.csv"), index=False)
    print(f"wrote {exp.output('best_trials.md')}, {exp.output('best_trials.csv')} and "
          f"{exp.output('best_per_method.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
