"""final_report.py's reading of the final stage: retrained configs over seeds.

When the run has a finished final stage, the report measures every retrained model (each
config x seed, the best-val epoch's checkpoint the stage tested) instead of the searches'
single best trials, and groups them per config: test accuracy mean ± sd over seeds
(recomputed here from the checkpoints), val_acc of the tested epochs, size, latency, and
the KD gain on test against the retrained baseline with the stage's interval method
(search/stages/final_stats.py), recomputed from this report's own test accuracies.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdtune.analysis.experiment import Experiment
from kdtune.search.stages.final_stats import mean_sd, welch_interval


def _local(exp: Experiment, recorded: str | None) -> str | None:
    """The checkpoint file, also when the results folder was copied from another machine."""
    if not recorded:
        return None
    if Path(recorded).is_file():
        return recorded
    parts = Path(recorded).parts
    if "final" in parts:  # <experiment>/final/<trial>/checkpoint_x/best_epoch/checkpoint.pt
        local = exp.path.joinpath(*parts[len(parts) - parts[::-1].index("final") - 1:])
        if local.is_file():
            return str(local)
    return None


def final_stage(exp: Experiment) -> dict | None:
    stage = exp.stage_info("final")
    return stage if stage.get("status") == "done" and stage.get("results") else None


def candidates(exp: Experiment) -> list[dict]:
    """One candidate per retrained model: role '<config> seed <s>', group = the config's role."""
    out = []
    for row in final_stage(exp)["results"]:
        for run in row["runs"]:
            ckpt = _local(exp, run.get("checkpoint"))
            role = f"{row['role']} seed {run['seed']}"
            if ckpt is None:
                exp.note(f"final {role}: no checkpoint found, skipped")
                continue
            out.append({"role": role, "group": row["role"], "stage": "final", "checkpoint": ckpt,
                        "trial_id": Path(ckpt).parents[2].name.removeprefix("final_trial_")})
    return out


def per_config(table: pd.DataFrame, groups: dict[str, str], baseline: str = "baseline") -> pd.DataFrame:
    """Per config: seeds, val/test mean ± sd, params, FLOPs, CPU ms, KD gain on test with its CI."""
    table = table.assign(group=[groups.get(r) for r in table["role"]])
    base = table.loc[table["group"] == baseline, "test_acc"].tolist()
    rows = []
    for group, part in table[table["group"].notna()].groupby("group", sort=False):
        test_mean, test_sd = mean_sd(part["test_acc"])
        val_mean, val_sd = mean_sd(part["val_acc"].dropna())
        row = {"config": group, "model": part["model"].iloc[0], "seeds": len(part),
               "val_acc_mean": val_mean, "val_acc_sd": val_sd, "test_acc_mean": test_mean, "test_acc_sd": test_sd,
               "params": part["params"].iloc[0], "flops": part["flops"].iloc[0],
               "cpu_ms": part["cpu_ms"].median(), "kd_gain_pts": None, "ci_low_pts": None, "ci_high_pts": None}
        if group != baseline and base:
            gain = welch_interval(part["test_acc"].tolist(), base)
            row.update(kd_gain_pts=100 * gain["diff"],
                       ci_low_pts=None if gain["low"] is None else 100 * gain["low"],
                       ci_high_pts=None if gain["high"] is None else 100 * gain["high"])
        rows.append(row)
    return pd.DataFrame(rows)


def mean_sd_text(mean, sd) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{100 * mean:.2f}%" if sd is None or pd.isna(sd) else f"{100 * mean:.2f} ± {100 * sd:.2f}%"


def gain_text(row) -> str:
    if row["kd_gain_pts"] is None or pd.isna(row["kd_gain_pts"]):
        return ""
    text = f"{row['kd_gain_pts']:+.2f} pts"
    if row["ci_low_pts"] is not None and not pd.isna(row["ci_low_pts"]):
        text += f" [{row['ci_low_pts']:+.2f}, {row['ci_high_pts']:+.2f}]"
    return text
