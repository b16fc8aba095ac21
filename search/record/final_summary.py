"""The final stage's part of summary.md: the headline, and one row per retrained config.

    **Final (TEST split, 3 seeds)**: mlp depth=1 width=116 (distilled #1): test 97.12 ± 0.31%
    ... KD gain over its undistilled twin +0.40 pts [+0.05, +0.75] (95% CI, paired t interval
    on per-seed differences); over the best baseline +0.84 pts [-0.52, +2.20] (95% CI,
    Welch's t interval)

The gain over the twin (same architecture, recipe and seeds, CE only) is what distillation
adds; the gain over the best baseline config also carries the architecture difference.
"""
from __future__ import annotations

from typing import Any

from kdtune.search.record.stats import MeanSd
from kdtune.trainables.losses import method_settings
from kdtune.search.record.stage_names import BASELINE, TWIN


def _pct(mean: float | None, sd: float | None = None) -> str:
    return MeanSd(mean, sd).text()


def _int(n: Any) -> str:
    return "n/a" if n is None else f"{int(n):,}"


def _model(row: dict[str, Any]) -> str:
    size = f" depth={row['depth']} width={row.get('width')}" if row.get("depth") is not None else ""
    return f"{row.get('model', 'n/a')}{size}"


def _gain(gain: dict[str, Any] | None, unit: str = " pts") -> str:
    """A KD gain in points with its interval, or why it has none ("" without a gain)."""
    if not gain or gain.get("diff") is None:
        return ""
    text = f"{100 * gain['diff']:+.2f}{unit}"
    if gain.get("low") is None:
        return text + f" (no interval: {gain.get('reason') or 'fewer than 2 seeds'})"
    return text + f" [{100 * gain['low']:+.2f}, {100 * gain['high']:+.2f}]"


def _hparams(row: dict[str, Any]) -> str:
    """The KD method and its own settings (distilled rows), then the lr: "dkd: dkd_beta=4.2, T=3.1, lr=0.05"."""
    lr = f"lr={row.get('lr', 0):.3g}"
    if row.get("source_stage") == BASELINE:
        return lr
    if row.get("source_stage") == TWIN:
        return f"CE only (no teacher), {lr}"
    method = row.get("kd_method") or "kd"  # rows written before methods existed are Hinton KD
    return f"{method}: {method_settings(method, row)}, {lr}"


def headline(stage: dict[str, Any]) -> list[str]:
    """The one line a reader should take away: the final stage's winner and its KD gain."""
    rows = {r["role"]: r for r in stage.get("results", [])}
    best = rows.get(stage.get("headline"))
    if best is None:
        return []
    n = len(stage.get("seeds", []))
    method = "" if best["source_stage"] == BASELINE else f"{best.get('kd_method') or 'kd'}, "
    line = (f"**Final (TEST split, {n} seeds)**: {_model(best)} ({best['role']}, {method}{_int(best.get('params'))} params): "
            f"test {_pct(best['test_acc_mean'], best['test_acc_sd'])}, val {_pct(best['val_acc_mean'], best['val_acc_sd'])}")
    base = next((r for r in rows.values() if r["source_stage"] == BASELINE), None)
    if base is not None and best is not base:
        line += f"; baseline {_model(base)} test {_pct(base['test_acc_mean'], base['test_acc_sd'])}"
    for label, key in (("KD gain on test over its undistilled twin", "kd_gain_twin"),
                       ("over the best baseline", "kd_gain_test")):
        gain = best.get(key)
        if gain and gain.get("diff") is not None:
            line += f"; {label} {_gain(gain)}"
            if gain.get("low") is not None:
                line += f" ({100 * gain['confidence']:.0f}% CI, {gain['method']})"
    return [line + "."]


def final_table(stage: dict[str, Any]) -> list[str]:
    """Markdown: headline, then per config val / test mean ± sd, size, and the KD gain."""
    if stage.get("status") != "done" or not stage.get("results"):
        return []
    n = len(stage.get("seeds", []))
    lines = ["## Final stage: retrained from scratch, best-val epoch tested once", "", *headline(stage), "",
             f"| config | model | hyperparameters | val_acc (mean ± sd) | test_acc (mean ± sd) | params | FLOPs | "
             f"KD gain over twin (95% CI) | KD gain over best baseline (95% CI) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in stage["results"]:
        seeds = f"{row['seeds']}/{n}" + (f", {row['diverged']} diverged" if row.get("diverged") else "") \
            + (f", {row['failed']} failed" if row.get("failed") else "")
        lines.append(f"| {row['role']} | {_model(row)} | {_hparams(row)} | "
                     f"{_pct(row['val_acc_mean'], row['val_acc_sd'])} | {_pct(row['test_acc_mean'], row['test_acc_sd'])} | "
                     f"{_int(row.get('params'))} | {_int(row.get('flops'))} | {_gain(row.get('kd_gain_twin'))} | "
                     f"{_gain(row.get('kd_gain_test'))} | {seeds} |")
    method = next((r["kd_gain_test"]["method"] for r in stage["results"] if r.get("kd_gain_test")), None)
    paired = next((r["kd_gain_twin"]["method"] for r in stage["results"] if r.get("kd_gain_twin")), None)
    lines += ["", f"Seeds {', '.join(map(str, stage.get('seeds', [])))} (fresh: no search trial ran them); "
                  "sd over seeds (ddof 1); val_acc is each run's best epoch, the epoch whose weights were tested; "
                  "diverged runs are left out of the means and intervals. "
              + (f"KD gain over twin: distilled minus its undistilled twin (same architecture, recipe and "
                 f"seeds, CE only), {paired}. " if paired else "")
              + (f"KD gain over best baseline: distilled minus the retrained baseline config, {method} over seeds."
                 if method else ""), ""]
    return lines
