"""Which configs the final stage retrains: read back from a finished search stage's trials.

- accuracy objective: the top-k DISTINCT distilled configs, ranked first by how far the
  trial ran (epochs: ASHA's rungs compare trials at equal fidelity, so a trial promoted to a
  higher rung was judged better than those left behind) and then by its best val_acc;
- pareto objective: the members of the distill stage's Pareto set (best val_acc max, params
  min, search/tune/nondominated.py), spread over the front by size when there are more than k;
- the best baseline config, ranked the same way;
- each distilled config's undistilled twin: the same architecture and recipe (optimiser, lr,
  weight decay, epochs, augmentation, seeds), trained with cross-entropy only (kd_method kd,
  alpha 0, no teacher), as the "student" rows of the KD papers' tables. Its gain isolates
  what distillation adds; the gain over the best baseline also mixes in the architecture.
  Distilled configs that differ only in KD hyperparameters share one twin.

Distinct: two trials with the same effective config (architecture and hyperparameters,
e.g. TPE proposing a pinned or integer point twice) are one candidate, the better-ranked.
Diverged and errored trials are never candidates. The test split is not read here.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdtune.search.stages.tune_stage import effective_config
from kdtune.trainables.reporting import METRIC, MODE
from kdtune.trainables.trial_outcome import best_epoch, diverged, epochs_trained


@dataclass(frozen=True)
class SearchTrial:
    """One finished search trial: its config and what its best epoch reached."""
    trial_id: str
    config: dict[str, Any]
    val_acc: float       # best epoch's val_acc
    params: float | None
    epochs: int          # epochs it trained (ASHA may have stopped it)

    @property
    def key(self) -> str:
        """Identity of the config (the seed and run bookkeeping are the same for every trial)."""
        return json.dumps(self.config, sort_keys=True, default=str)


def read_trials(stage_dir: Path) -> list[SearchTrial]:
    """Every trial of a stage folder with a finite val_acc and no divergence or error."""
    from ray.tune import ExperimentAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = ExperimentAnalysis(str(stage_dir), default_metric=METRIC, default_mode=MODE)
    out = []
    for trial in analysis.trials:
        found = search_trial(trial.trial_id, dict(trial.config), analysis.trial_dataframes.get(trial.trial_id),
                             errored=trial.status == "ERROR")
        if found is not None:
            out.append(found)
    return out


def search_trial(trial_id: str, config: dict[str, Any], df, errored: bool = False) -> SearchTrial | None:
    """One trial's candidate record, its best epoch by trial_outcome's rule (finite METRIC
    under MODE, first of ties: the epoch its checkpoint keeps); None when it errored, diverged
    or reported no finite METRIC."""
    if errored or df is None or diverged(df):
        return None
    best = best_epoch(df)
    if best is None:
        return None
    params = best.get("params")
    return SearchTrial(trial_id, effective_config(config), float(best[METRIC]),
                       None if params is None or not math.isfinite(float(params)) else float(params),
                       epochs_trained(df))


def ranked_distinct(trials: list[SearchTrial]) -> list[SearchTrial]:
    """Best first by (epochs trained, val_acc), one trial per distinct config."""
    seen: set[str] = set()
    out = []
    for trial in sorted(trials, key=lambda t: (-t.epochs, -t.val_acc, t.trial_id)):
        if trial.key not in seen:
            seen.add(trial.key)
            out.append(trial)
    return out


def top_k(trials: list[SearchTrial], k: int) -> list[SearchTrial]:
    return ranked_distinct(trials)[:k]


def pareto_members(trials: list[SearchTrial], k: int) -> list[SearchTrial]:
    """The Pareto set (val_acc max, params min), at most k members spread over it by size.

    More than k members: the ones at k evenly spaced positions of the front sorted by
    params, so both ends (the smallest and the most accurate) are retrained; with k = 1 the
    most accurate member (the headline's). Returned most accurate first.
    """
    from kdtune.search.tune.nondominated import pareto_mask

    pool = [t for t in ranked_distinct(trials) if t.params is not None]
    if not pool:
        return []
    mask = pareto_mask([t.val_acc for t in pool], [t.params for t in pool])
    front = sorted((t for t, on in zip(pool, mask) if on), key=lambda t: (t.params, -t.val_acc))
    if k == 1 and front:
        front = [max(front, key=lambda t: t.val_acc)]
    elif len(front) > k:
        picks = sorted({int(round(i)) for i in np.linspace(0, len(front) - 1, k)})
        front = [front[i] for i in picks]
    return sorted(front, key=lambda t: -t.val_acc)


def select(distill: list[SearchTrial], baseline: list[SearchTrial], k: int, objective: str,
           epochs: int, ta_distill: list[SearchTrial] | None = None) -> list[dict[str, Any]]:
    """The final stage's candidates: the best baseline first, then the distilled configs.

    Each is {"role", "source_stage", "source_trial", "search_val_acc", "search_epochs",
    "config"}; the config is the search trial's, retrained for `epochs` with its best-val
    epoch evaluated on test, without its seed (each final trial sets its own).
    """
    from kdtune.search.tune.objective import objective as as_objective

    chosen = pareto_members(distill, k) if as_objective(objective).multi else top_k(distill, k)
    rows = [("baseline", "baseline", t) for t in top_k(baseline, 1)]
    rows += [(f"distilled #{i}", "distill", t) for i, t in enumerate(chosen, start=1)]
    # The chain's student (--chain): the ta_distill stage's winner, taught by the assistant.
    rows += [("ta-distilled #1", "ta_distill", t) for t in top_k(ta_distill or [], 1)]
    out = [{"role": role, "source_stage": stage, "source_trial": t.trial_id, "search_val_acc": t.val_acc,
            "search_epochs": t.epochs,
            "config": {**{k: v for k, v in t.config.items() if k != "seed"}, "epochs": epochs,
                       "test_best_epoch": True}} for role, stage, t in rows]
    return out + twins(out)


# Stages whose candidates distil (each gets a twin and its gains).
DISTILLED_STAGES = ("distill", "ta_distill")
# What a twin drops: the teacher and every KD method's own hyperparameters.
TEACHER_KEYS = ("teacher_checkpoint", "online_teacher", "online_teacher_kwargs", "teacher_logits")


def twin_config(config: dict[str, Any]) -> dict[str, Any]:
    """The undistilled twin of a distilled config: CE only (kd, alpha 0), no teacher, the rest equal."""
    from kdtune.trainables.losses import all_hyperparameters

    drop = set(TEACHER_KEYS) | set(all_hyperparameters())
    return {**{k: v for k, v in config.items() if k not in drop}, "kd_method": "kd", "alpha": 0.0}


def twins(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One twin candidate per distinct twin config of the distilled candidates (role
    "twin #i" names the first distilled config it serves; `twin_of` lists them all)."""
    out: list[dict[str, Any]] = []
    by_key: dict[str, dict[str, Any]] = {}
    for cand in candidates:
        if cand["source_stage"] not in DISTILLED_STAGES:
            continue
        cfg = twin_config(cand["config"])
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in by_key:
            by_key[key] = {"role": f"twin of {cand['role']}", "source_stage": "twin",
                           "source_trial": cand["source_trial"], "search_val_acc": None,
                           "search_epochs": None, "twin_of": [], "config": cfg}
            out.append(by_key[key])
        by_key[key]["twin_of"].append(cand["role"])
        cand["twin"] = by_key[key]["role"]
    return out
