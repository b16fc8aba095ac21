"""summary.md: what a person wants at the end of a run, from the manifest alone.

Teacher accuracy and size, the best undistilled baseline, the best distilled student with its
config, its parameter reduction against the teacher, and the KD gain: the best distilled
val_acc minus the best baseline val_acc among baselines no larger than that student.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kdtune.search.record.final_summary import final_table
from kdtune.search.record.manifest import Manifest
from kdtune.trainables.losses import method_settings
from kdtune.trainables.trial_outcome import reduction_pct
from kdtune.search.record.stage_names import ASSISTANT, BASELINE, DISTILL, FINAL, SWEEP, TA_DISTILL, TEACHER


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _params(n: Any) -> str:
    return "n/a" if n is None else f"{int(n):,}"


def kd_gain(distill: dict[str, Any], baseline_trials: list[dict[str, Any]]) -> tuple[float, dict] | None:
    """(gain in val_acc, the baseline compared) for the same or smaller parameter budget."""
    metrics = distill.get("metrics", {})
    acc, params = metrics.get("val_acc"), metrics.get("params")
    fair = [t for t in baseline_trials if t.get("val_acc") is not None and t.get("params") is not None
            and params is not None and t["params"] <= params]
    if acc is None or not fair:
        return None
    best = max(fair, key=lambda t: t["val_acc"])
    return acc - best["val_acc"], best


def render(manifest: Manifest) -> str:
    data = manifest.data
    stages = data["stages"]
    teacher, baseline, distill = stages.get(TEACHER, {}), stages.get(BASELINE, {}), stages.get(DISTILL, {})
    t_metrics = teacher.get("metrics", {})
    d_metrics = distill.get("metrics", {})
    d_cfg = distill.get("config", {})
    t_params, d_params = t_metrics.get("params"), d_metrics.get("params")
    lines = [f"# kdtune run `{manifest.dir.name}`", "",
             f"dataset **{data['dataset'].get('name')}**, git `{data.get('git_revision')}`, "
             f"preset `{data['spec'].get('preset')}`", ""]
    final = final_table(stages.get(FINAL, {}))  # when it ran, the final stage is the headline
    if final:
        lines += final + ["## Search: each stage's best single trial (validation)", ""]
    lines += ["| stage | model | val_acc | params | reduction vs teacher |", "|---|---|---|---|---|"]
    online = d_cfg.get("online_teacher")
    if online:  # the teacher trained inside the best distillation trial
        teacher = {"config": {"model": f"{online} (online)"},
                   "metrics": {"val_acc": d_metrics.get("teacher_val_acc")}}
    for label, stage in (("teacher", teacher), ("best baseline", baseline), ("best distilled", distill)):
        cfg, met = stage.get("config", {}), stage.get("metrics", {})
        model = cfg.get("model", "(given checkpoint)" if stage.get("source") else "n/a")
        if cfg.get("depth") is not None:
            model += f" depth={cfg['depth']} width={cfg.get('width')}"
        pct = reduction_pct(met.get("params"), t_params) if label != "teacher" else math.nan
        red = "" if math.isnan(pct) else f"{pct:.1f}%"
        lines.append(f"| {label} | {model} | {_pct(met.get('val_acc'))} | {_params(met.get('params'))} | {red} |")
    cfg = distill.get("config", {})
    if cfg:
        keys = ("model", "depth", "width", "kd_method", *_method_keys(cfg), "lr", "weight_decay")
        shown = ", ".join(f"{k}={cfg[k]:.4g}" if isinstance(cfg.get(k), float) else f"{k}={cfg.get(k)}"
                          for k in keys if k in cfg)
        lines += ["", f"Best distilled config: {shown}", f"Checkpoint: `{distill.get('best_checkpoint')}`"]
    gain = kd_gain(distill, baseline.get("trials", [])) if distill else None
    if gain is not None:
        delta, ref = gain
        lines.append(f"KD gain: {100 * delta:+.2f} points over the best baseline of at most "
                     f"{_params(d_params)} params (baseline {_pct(ref['val_acc'])}, {_params(ref['params'])} params).")
    trials = distill.get("trials", [])
    if trials:
        early = sum(t.get("stopped_early", False) for t in trials)
        lines.append(f"Distillation trials: {len(trials)}, stopped early by ASHA: {early}, "
                     f"diverged: {sum(t.get('diverged', False) for t in trials)}.")
    lines += method_table(trials)
    lines += pareto_table(distill.get("pareto_set", []), t_params)
    lines += chain_table(stages)
    lines += sweep_table(stages.get(SWEEP, {}))
    lines += ["", "Validation accuracy on a seeded split of the training set; the test set is used "
                  "only by the final stage (once per retrained model) and by "
                  "`python analysis/final_report.py " + str(manifest.dir) + "`.",
              "", f"TensorBoard: `tensorboard --logdir {manifest.dir}`", ""]
    return "\n".join(lines)


def _method_keys(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The config keys the trial's KD method reads (kd for runs from before methods existed)."""
    from kdtune.trainables.losses import method_fields

    return method_fields(cfg.get("kd_method", "kd"))


def pareto_table(members: list[dict[str, Any]], teacher_params: Any) -> list[str]:
    """--objective pareto: the distill stage's non-dominated trials (val_acc max, params min),
    most accurate first; a member ASHA stopped early holds a short-run val_acc."""
    if not members:
        return []
    lines = ["", "## Pareto set of the distill stage (val_acc vs params)", "",
             "| trial | model | method | val_acc | params | reduction vs teacher | epochs run |",
             "|---|---|---|---|---|---|---|"]
    for m in members:
        cfg = m.get("config", {})
        size = f" depth={cfg['depth']} width={cfg.get('width')}" if cfg.get("depth") is not None else ""
        pct = reduction_pct(m.get("params"), teacher_params)
        red = "" if math.isnan(pct) else f"{pct:.1f}%"
        lines.append(f"| {m.get('trial_id')} | {cfg.get('model')}{size} | {cfg.get('kd_method', 'kd')} | "
                     f"{_pct(m.get('val_acc'))} | {_params(m.get('params'))} | {red} | {m.get('epochs')} |")
    return lines


def method_table(trials: list[dict[str, Any]]) -> list[str]:
    """A search over several KD methods: each method's best distillation trial."""
    scored = [t for t in trials if t.get("val_acc") is not None]
    methods = sorted({t.get("kd_method", "kd") for t in scored})
    if len(methods) < 2:
        return []
    lines = ["", "## KD methods (best distillation trial of each)", "",
             "| method | trials | best val_acc | settings | model | params |", "|---|---|---|---|---|---|"]
    best = []
    for m in methods:
        mine = [t for t in scored if t.get("kd_method", "kd") == m]
        best.append((max(mine, key=lambda t: t["val_acc"]), len(mine)))
    for top, n in sorted(best, key=lambda item: -item[0]["val_acc"]):
        shown = method_settings(top.get("kd_method", "kd"), top)
        size = f" depth={top['depth']} width={top.get('width')}" if top.get("depth") is not None else ""
        lines.append(f"| {top.get('kd_method', 'kd')} | {n} | {_pct(top['val_acc'])} | {shown} | "
                     f"{top.get('model')}{size} | {_params(top.get('params'))} |")
    return lines


def _row(label: str, stage: dict[str, Any]) -> str:
    cfg, met = stage.get("config", {}), stage.get("metrics", {})
    size = f" depth={cfg['depth']} width={cfg.get('width')}" if cfg.get("depth") is not None else ""
    return f"| {label} | {cfg.get('model', 'n/a')}{size} | {_pct(met.get('val_acc'))} | {_params(met.get('params'))} |"


def chain_table(stages: dict[str, Any]) -> list[str]:
    """Teacher-assistant runs: the student without KD, with KD from the teacher, via the assistant."""
    if stages.get(TA_DISTILL, {}).get("status") != "done":
        return []
    return ["", "## Teacher-assistant chain (Mirzadeh et al. 2020)", "",
            "| row | model | val_acc | params |", "|---|---|---|---|",
            _row("teacher", stages[TEACHER]), _row("assistant (KD from teacher)", stages[ASSISTANT]),
            _row("student, no KD", stages[BASELINE]), _row("student, KD from teacher", stages[DISTILL]),
            _row("student, KD via assistant", stages[TA_DISTILL])]


def sweep_table(stage: dict[str, Any]) -> list[str]:
    """A grid sweep: every point with its best val_acc, best first."""
    trials = [t for t in stage.get("trials", []) if t.get("val_acc") is not None]
    if not trials:
        return []
    lines = ["", "## Sweep", "", "| model | depth | width | model_kwargs | seed | val_acc | params | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: -t["val_acc"]):
        kwargs = ", ".join(f"{k}={v}" for k, v in (t.get("model_kwargs") or {}).items())
        lines.append(f"| {t.get('model')} | {t.get('depth', '')} | {t.get('width', '')} | {kwargs} | "
                     f"{t.get('seed', '')} | {_pct(t['val_acc'])} | {_params(t.get('params'))} | {t.get('epochs')} |")
    return lines


def write_summary(manifest: Manifest) -> Path:
    """Render, write <experiment>/summary.md and print it."""
    text = render(manifest)
    path = manifest.dir / "summary.md"
    path.write_text(text)
    print(text)
    return path
