"""The final stage: the search's winners retrained from scratch over seeds, tested once.

After the searches, the best baseline config and the top-k distinct distilled configs
(search/stages/final_select.py; the Pareto set under `--objective pareto`) are retrained at the
full budget (`--max-epochs`, no early stopping) with `--final-seeds` fresh seeds each, as
one Ray Tune grid over (candidate index, seed) on the searches' resources. Each trial keeps
its best-validation epoch and evaluates it once on the TEST split (trainables/best_epoch.py).

The seeds are `seed + 1000 + i`: none is a seed a search trial ran with, so a candidate's
val_acc here is not the lucky run that got it picked. The seed sets the weight init, the
batch order and the augmentation; the train / val / test split stays the run's.

The stage records in manifest.json, per candidate: val and test accuracy mean ± sd over
seeds, params, FLOPs, each seed's run, and for each distilled candidate the KD gain on test
against the retrained baseline with a 95% Welch t interval (search/record/stats.py). The
headline is the distilled candidate with the best mean val_acc (never chosen by test).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from kdtune.search.stages import final_select
from kdtune.search.record.stage_names import BASELINE, DISTILL, DISTILLED_STAGES, FINAL, TA_DISTILL
from kdtune.search.record.stats import MeanSd, paired_interval, welch_interval
from kdtune.search.record.trials import read_stage
from kdtune.trainables.losses import all_hyperparameters
from kdtune.search.stages.tune_stage import Stage, worker_resources
from kdtune.search.stages.teacher_cache import build_cache
from kdtune.trainables.best_epoch import best_epoch_file
from kdtune.trainables.trial_outcome import finite

SEED_OFFSET = 1000  # final seeds: spec.seed + SEED_OFFSET + i (search trials run spec.seed)
# What a final row shows of its config: the model, the KD method and that method's settings.
CONFIG_KEYS = ("model", "depth", "width", "kd_method", "lr", "weight_decay", "model_kwargs")


def config_keys() -> tuple[str, ...]:
    """CONFIG_KEYS and every registered KD method's hyperparameters (kd's alpha and T first)."""
    return CONFIG_KEYS + tuple(all_hyperparameters())


def final_seeds(seed: int, count: int) -> list[int]:
    return [seed + SEED_OFFSET + i for i in range(count)]


def final_trial(config: dict, candidates: list[dict], data=None,
                teacher_logits: dict[int, Any] | None = None, cache_teacher: str | None = None,
                workers: int = 1, worker_resources: dict | None = None) -> dict | None:
    """One retraining run: candidate `config["candidate"]` with seed `config["seed"]`.

    `teacher_logits`: seed -> the shared teacher-logit cache of that seed's training inputs
    (trainables/logit_cache.SharedLogitCache: object references, so a trial maps only its own
    seed's arrays). A candidate with a teacher gets it whatever its KD method's weights (the
    loss decides what it reads); the baseline and the twins have no teacher_checkpoint and get
    none. The cache holds `cache_teacher`'s logits: a candidate taught by another model (the
    chain's student, by the assistant) gets none and runs its own teacher in the trial.
    `workers` > 1 (--final-workers): the run trains on that many DDP workers, each asking
    `worker_resources` (trainables/distributed.py)."""
    from kdtune.trainables.distill import distill_student

    seed = int(config["seed"])
    run = {**candidates[int(config["candidate"])]["config"], "seed": seed}
    ddp = {}
    if workers > 1:  # one process (workers 1): the call as it always was
        run["workers"] = workers
        ddp = {"worker_resources": worker_resources}
    distils = run.get("teacher_checkpoint") is not None and (
        cache_teacher is None or run["teacher_checkpoint"] == cache_teacher)
    logits = teacher_logits.get(seed) if teacher_logits and distils else None
    return distill_student(run, data=data, teacher_logits=logits, **ddp)


def logits_by_seed(spec, bundle, manifest, teacher_checkpoint: str | None, logits: Any,
                   seeds: list[int]) -> dict[int, Any] | None:
    """seed -> the shared teacher-logit cache (search/teacher_cache.build_cache) that seed's trials use.

    Plain inputs: the search's cache (one row per image, the same for every seed).
    Augmented views: a trial's views depend on its seed, so each seed gets the teacher's
    logits for its own views: `--final-seeds` x K teacher passes over the training split,
    once (kept for --resume like the search's cache).
    """
    if logits is None or teacher_checkpoint is None:
        return None
    students = spec.student_bundle(bundle)
    if students.augment == "none" or not spec.augment_views:
        return {s: logits for s in seeds}
    return {s: build_cache(students, teacher_checkpoint, views=spec.augment_views, seed=s,
                           precision=spec.train.get("precision", "auto"), device=spec.train.get("device", "auto"),
                           cpus=spec.cpus_per_trial, gpus=spec.gpus_per_trial,
                           cache_dir=manifest.dir / "teacher_logits", resident_max_mb=spec.resident_max_mb) for s in seeds}


def candidates_for(spec, manifest) -> list[dict[str, Any]]:
    """The candidates recorded at the stage's start (a resume retrains the same ones)."""
    recorded = manifest.stage(FINAL).get("candidates")
    if recorded:
        return recorded
    distill = read_stage(manifest.dir / DISTILL)
    baseline = read_stage(manifest.dir / BASELINE)
    ta = read_stage(manifest.dir / TA_DISTILL) if spec.chain else None
    return final_select.select(distill, baseline, spec.final_top_k, spec.objective, spec.max_epochs, ta_distill=ta)


def build_stage(spec, bundle, manifest, candidates: list[dict], teacher_checkpoint: str | None,
                logits: Any, **stage_kwargs) -> tuple[Stage, int]:
    """The Tune stage (a grid, FIFO: no early stopping) and its trial count."""
    seeds = final_seeds(spec.seed, spec.final_seeds)
    params = {"candidates": candidates, "data": bundle}
    if spec.final_workers > 1:  # --final-workers: each retraining run is DDP inside its trial
        params.update(workers=spec.final_workers,
                      worker_resources=worker_resources(spec.cpus_per_trial, spec.gpus_per_trial))
    by_seed = logits_by_seed(spec, bundle, manifest, teacher_checkpoint, logits, seeds)
    if by_seed is not None:
        params.update(teacher_logits=by_seed, cache_teacher=teacher_checkpoint)
    space = {"candidate": tune.grid_search(list(range(len(candidates)))), "seed": tune.grid_search(seeds)}
    stage = Stage(name=FINAL, trainable=tune.with_parameters(final_trial, **params), num_samples=1,
                  param_space=space, workers=spec.final_workers, **stage_kwargs)
    return stage, len(candidates) * len(seeds)


def finished(results, expected: int) -> bool:
    """True when every retraining run ended: errored, or reported its test metrics.

    A run reports test_acc with its last epoch and then returns; `done` alone is not enough
    here: a Ctrl-C in the instant a run returns can leave it saved as finished without Ray's
    closing `done` result, and a resume would then never see the stage end.
    """
    if len(results) < expected:
        return False
    return all(r.error is not None or bool((r.metrics or {}).get("done")) or "test_acc" in (r.metrics or {})
               for r in results)


def unfinished(results) -> list[str]:
    """Trial ids of the runs still to finish (for the manifest of an interrupted stage)."""
    return [str((r.metrics or {}).get("trial_id", r.path)) for r in results
            if not (r.error is not None or (r.metrics or {}).get("done") or "test_acc" in (r.metrics or {}))]


def _run_row(result) -> dict[str, Any]:
    """One retraining run as the manifest records it (None values when it errored)."""
    m = result.metrics or {}
    ckpt = result.checkpoint
    best_file = best_epoch_file(ckpt.path) if ckpt is not None else None
    return {"seed": int(result.config["seed"]), "val_acc": finite(m.get("best_val_acc")),
            "test_acc": finite(m.get("test_acc")), "test_loss": finite(m.get("test_loss")),
            "best_epoch": m.get("best_epoch"), "epochs": int(m.get("epoch", 0) or 0),
            "diverged": bool(m.get("diverged")), "params": finite(m.get("params")), "flops": finite(m.get("flops")),
            "error": None if result.error is None else str(result.error).splitlines()[0][:200],
            "checkpoint": best_file if best_file and Path(best_file).is_file() else None}


def summarize(results, candidates: list[dict], seeds: list[int]) -> dict[str, Any]:
    """The manifest record of a finished final stage (see the module docstring)."""
    runs: dict[int, list[dict]] = {i: [] for i in range(len(candidates))}
    for result in results:
        runs[int(result.config["candidate"])].append(_run_row(result))
    rows = []
    for i, cand in enumerate(candidates):
        seed_runs = sorted(runs[i], key=lambda r: r["seed"])
        # One rule for every diverged run, whatever its epoch: counted in `diverged`, left out
        # of the means and intervals (an epoch-1 divergence has no weights to test, and a later
        # one's pre-divergence weights would be averaged in as if the run had trained).
        tested = [r for r in seed_runs if r["test_acc"] is not None and not r["diverged"]]
        val, test = MeanSd.of(r["val_acc"] for r in tested), MeanSd.of(r["test_acc"] for r in tested)
        cfg = cand["config"]
        rows.append({"role": cand["role"], "source_stage": cand["source_stage"],
                     "source_trial": cand["source_trial"], "search_val_acc": cand["search_val_acc"],
                     "search_epochs": cand["search_epochs"],
                     **{k: cfg.get(k) for k in config_keys() if k in cfg},
                     "params": next((r["params"] for r in tested), None),
                     "flops": next((r["flops"] for r in tested), None),
                     "seeds": len(tested), "diverged": sum(r["diverged"] for r in seed_runs),
                     "failed": sum(r["error"] is not None for r in seed_runs),
                     "val_acc_mean": val.mean, "val_acc_sd": val.sd,
                     "test_acc_mean": test.mean, "test_acc_sd": test.sd, "runs": seed_runs})
    base = next((r for r in rows if r["source_stage"] == BASELINE), None)
    by_role = {r["role"]: r for r in rows}
    for row, cand in zip(rows, candidates):
        if cand.get("twin_of"):
            row["twin_of"] = list(cand["twin_of"])
        if row["source_stage"] not in DISTILLED_STAGES:
            continue
        tested = {r["seed"]: r["test_acc"] for r in row["runs"] if r["test_acc"] is not None and not r["diverged"]}
        if base is not None:  # another architecture in general: unpaired
            row["kd_gain_test"] = welch_interval(list(tested.values()),
                                                 [r["test_acc"] for r in base["runs"]
                                                  if r["test_acc"] is not None and not r["diverged"]])
        twin = by_role.get(cand.get("twin"))
        if twin is not None:  # same architecture, recipe and seeds: paired by seed
            row["twin"] = twin["role"]
            row["kd_gain_twin"] = paired_interval(
                tested, {r["seed"]: r["test_acc"] for r in twin["runs"]
                         if r["test_acc"] is not None and not r["diverged"]})
    distilled = [r for r in rows if r["source_stage"] in DISTILLED_STAGES
                 and r["val_acc_mean"] is not None]
    headline = max(distilled, key=lambda r: r["val_acc_mean"]) if distilled else base
    out: dict[str, Any] = {"seeds": seeds, "candidates": candidates, "results": rows,
                           "headline": headline["role"] if headline else None}
    if headline is not None:
        first = next((r for r in headline["runs"] if r["checkpoint"]), None)
        out.update(config=candidates[rows.index(headline)]["config"],
                   metrics={"val_acc": headline["val_acc_mean"], "test_acc": headline["test_acc_mean"],
                            "params": headline["params"], "flops": headline["flops"]},
                   best_checkpoint=first["checkpoint"] if first else None)
    return out
