"""final_report.py's reading of the final stage: retrained configs over seeds.

When the run has a finished final stage, the report measures every retrained model (each
config x seed, the best-val epoch's checkpoint the stage tested) instead of the searches'
single best trials, and groups them per config: test accuracy mean ± sd over seeds
(recomputed here from the checkpoints), val_acc of the tested epochs, size, latency, and
two KD gains on test with the stage's interval methods (search/record/stats.py),
recomputed from this report's own test accuracies: over each distilled config's undistilled
twin (paired t by seed) and over the retrained baseline (Welch).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdtune.analysis.experiment import Experiment
from kdtune.search.record.stats import MeanSd, paired_interval, welch_interval
from kdtune.search.record.stage_names import FINAL


def _local(exp: Experiment, recorded: str | None) -> str | None:
    """The checkpoint file, also when the results folder was copied from another machine."""
    if not recorded:
        return None
    if Path(recorded).is_file():
        return recorded
    parts = Path(recorded).parts
    if FINAL in parts:  # <experiment>/final/<trial>/checkpoint_x/best_epoch/checkpoint.pt
        local = exp.path.joinpath(*parts[len(parts) - parts[::-1].index(FINAL) - 1:])
        if local.is_file():
            return str(local)
    return None


def final_stage(exp: Experiment) -> dict | None:
    stage = exp.stage_info(FINAL)
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
            out.append({"role": role, "group": row["role"], "stage": FINAL, "checkpoint": ckpt,
                        "trial_id": Path(ckpt).parents[2].name.removeprefix("final_trial_")})
    return out


def twins(exp: Experiment) -> dict[str, str]:
    """distilled config role -> its twin's role, as the final stage recorded them."""
    return {r["role"]: r["twin"] for r in final_stage(exp)["results"] if r.get("twin")}


def _by_seed(part: pd.DataFrame) -> dict[int, float]:
    return {int(str(role).rsplit(" seed ", 1)[1]): float(acc) for role, acc in zip(part["role"], part["test_acc"])}


def per_config(table: pd.DataFrame, groups: dict[str, str], baseline: str = "baseline",
               twin_of: dict[str, str] | None = None) -> pd.DataFrame:
    """Per config: seeds, val/test mean ± sd, params, FLOPs, CPU ms, and the KD gains on test
    with their CIs (over the twin named in `twin_of`, paired by seed; over the baseline)."""
    twin_of = twin_of or {}
    table = table.assign(group=[groups.get(r) for r in table["role"]])
    base = table.loc[table["group"] == baseline, "test_acc"].tolist()
    rows = []
    for group, part in table[table["group"].notna()].groupby("group", sort=False):
        test, val = MeanSd.of(part["test_acc"]), MeanSd.of(part["val_acc"])
        row = {"config": group, "model": part["model"].iloc[0], "seeds": len(part),
               "val_acc_mean": val.mean, "val_acc_sd": val.sd, "test_acc_mean": test.mean, "test_acc_sd": test.sd,
               "params": part["params"].iloc[0], "flops": part["flops"].iloc[0],
               "cpu_ms": part["cpu_ms"].median(), "kd_gain_pts": None, "ci_low_pts": None, "ci_high_pts": None}
        row.update(twin_gain_pts=None, twin_low_pts=None, twin_high_pts=None)
        if group in twin_of:
            gain = paired_interval(_by_seed(part), _by_seed(table[table["group"] == twin_of[group]]))
            if gain["diff"] is not None:
                row.update(twin_gain_pts=100 * gain["diff"],
                           twin_low_pts=None if gain["low"] is None else 100 * gain["low"],
                           twin_high_pts=None if gain["high"] is None else 100 * gain["high"])
        if group != baseline and not str(group).startswith("twin of") and base:
            gain = welch_interval(part["test_acc"].tolist(), base)
            row.update(kd_gain_pts=100 * gain["diff"],
                       ci_low_pts=None if gain["low"] is None else 100 * gain["low"],
                       ci_high_pts=None if gain["high"] is None else 100 * gain["high"])
        rows.append(row)
    return pd.DataFrame(rows)


def mean_sd_text(mean, sd) -> str:
    """A recorded mean and sd as the report prints them (MeanSd.text; blank without a mean)."""
    return MeanSd(mean, sd).text(missing="")


def gain_text(row, prefix: str = "") -> str:
    """"+0.84 pts [-0.52, +2.20]" of the kd gain (prefix "") or the twin gain (prefix "twin")."""
    gain, low, high = (("kd_gain_pts", "ci_low_pts", "ci_high_pts") if not prefix
                       else (f"{prefix}_gain_pts", f"{prefix}_low_pts", f"{prefix}_high_pts"))
    if row.get(gain) is None or pd.isna(row[gain]):
        return ""
    text = f"{row[gain]:+.2f} pts"
    if row.get(low) is not None and not pd.isna(row[low]):
        text += f" [{row[low]:+.2f}, {row[high]:+.2f}]"
    return text
