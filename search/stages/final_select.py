"""Which configs the final stage retrains: read back from a finished search stage's trials.

- the distilled configs the objective chooses (search/tune/objective.Objective.final_members):
  under `accuracy` the top-k DISTINCT configs, ranked first by how far the trial ran (epochs:
  ASHA's rungs compare trials at equal fidelity, so a trial promoted to a higher rung was
  judged better than those left behind) and then by its best val_acc; under `pareto` the
  members of the distill stage's Pareto set (best val_acc max, params min), spread over the
  front by size when there are more than k;
- the best baseline config (and the chain's ta_distill winner), ranked the accuracy way;
- each distilled config's undistilled twin: the same architecture and recipe (optimiser, lr,
  weight decay, epochs, augmentation, seeds), trained with cross-entropy only (kd_method kd,
  alpha 0, no teacher), as the "student" rows of the KD papers' tables. Its gain isolates
  what distillation adds; the gain over the best baseline also mixes in the architecture.
  Distilled configs that differ only in KD hyperparameters share one twin.

Distinct: two trials with the same effective config (architecture and hyperparameters,
e.g. TPE proposing a pinned or integer point twice) are one candidate, the better-ranked.
Diverged and errored trials are never candidates (search/record/trials.TrialRecord.candidate:
the trials are read there, best epochs by trainables/trial_outcome's rule). The test split is
not read here.
"""
from __future__ import annotations

import json
from typing import Any

from kdtune.search.record import trials as record
from kdtune.search.record.stage_names import BASELINE, DISTILL, DISTILLED_STAGES, TA_DISTILL, TWIN
from kdtune.search.record.trials import TrialRecord
from kdtune.search.tune.objective import objective as as_objective


def select(distill: list[TrialRecord], baseline: list[TrialRecord], k: int, objective: Any,
           epochs: int, ta_distill: list[TrialRecord] | None = None) -> list[dict[str, Any]]:
    """The final stage's candidates: the best baseline first, then the distilled configs.

    Each is {"role", "source_stage", "source_trial", "search_val_acc", "search_epochs",
    "config"}; the config is the search trial's, retrained for `epochs` with its best-val
    epoch evaluated on test, without its seed (each final trial sets its own).
    """
    chosen = as_objective(objective).final_members(distill, k)
    rows = [("baseline", BASELINE, t) for t in record.ranked_distinct(baseline)[:1]]
    rows += [(f"distilled #{i}", DISTILL, t) for i, t in enumerate(chosen, start=1)]
    # The chain's student (--chain): the ta_distill stage's winner, taught by the assistant.
    rows += [("ta-distilled #1", TA_DISTILL, t) for t in record.ranked_distinct(ta_distill or [])[:1]]
    out = [{"role": role, "source_stage": stage, "source_trial": t.trial_id, "search_val_acc": t.val_acc,
            "search_epochs": t.epochs,
            "config": {**{k: v for k, v in t.config.items() if k != "seed"}, "epochs": epochs,
                       "test_best_epoch": True}} for role, stage, t in rows]
    return out + twins(out)


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
            by_key[key] = {"role": f"twin of {cand['role']}", "source_stage": TWIN,
                           "source_trial": cand["source_trial"], "search_val_acc": None,
                           "search_epochs": None, "twin_of": [], "config": cfg}
            out.append(by_key[key])
        by_key[key]["twin_of"].append(cand["role"])
        cand["twin"] = by_key[key]["role"]
    return out
