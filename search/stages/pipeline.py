"""The kdtune pipeline: teacher stage -> baseline stage -> distillation stage, with resume.

`run(spec, bundle)` is called by run_kd_search.py after every input was validated. The dataset
(`bundle`) was decoded once in the driver; it reaches every trial through Ray's object store
(`tune.with_parameters`). The teacher's logits are computed once per teacher by Ray tasks on
the workers and shared read-only the same way (search/stages/teacher_cache.py: the plain images when
inputs are not augmented, else `augment_views` fixed augmented views, plus the validation
split's logits).
Each finished stage is recorded in manifest.json, so `--resume` skips it (the teacher is never
re-trained) and continues an interrupted stage through `Tuner.restore`.
After the searches, the final stage (search/stages/final.py) retrains their winners over seeds and
tests each retrained model once.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune

from kdtune.datasets import DatasetBundle
from kdtune.search.stages import final
from kdtune.search.stages import adopted_teacher as given_teacher
from kdtune.search.tune import optuna_study as study
from kdtune.search.stages import sweep
from kdtune.search.tune.progress import StageProgress, console_settings, planned_epochs
from kdtune.search.record.manifest import Manifest
from kdtune.search.input import user_imports
from kdtune.search.input.spec import SearchSpec
from kdtune.search.stages.tune_stage import Stage, asha, optuna_search, run_stage, stage_finished, worker_resources
from kdtune.search.record import trials as record
from kdtune.search.tune.trackers import tracker_callbacks
from kdtune.search.tune.objective import Objective, objective
from kdtune.search.tune.warm_start import seed_study
from kdtune.search.record.summary import write_summary
from kdtune.search.stages.teacher_cache import build_cache
from kdtune.trainables.distill import distill_student
from kdtune.trainables.logit_cache import MappedLogitCache, SharedLogitCache
from kdtune.trainables.teacher import train_teacher
from kdtune.search.record.stage_names import ASSISTANT, BASELINE, DISTILL, FINAL, SWEEP, TA_DISTILL, TEACHER


class Interrupted(RuntimeError):
    """A stage stopped before all its trials ended (Ctrl-C, SIGTERM): resume it later."""


def start_ray(spec: SearchSpec) -> bool:
    """Connect to the cluster of --address (or RAY_ADDRESS), else start a private local Ray;
    False when Ray was already up in this process."""
    if ray.is_initialized():
        return False
    # A checkpoint every epoch is the point (exact resume); Ray's warning about it is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    console_settings(spec.verbose)
    # Without --verbose the trials' own stdout/stderr (checkpoint-restore notes, library
    # chatter) stays in Ray's worker logs; a trial that fails still shows its traceback, which
    # Tune logs in the driver, and its error.txt.
    quiet: dict[str, Any] = {} if spec.verbose else {"logging_level": logging.WARNING}
    env = user_imports.runtime_env(spec.imports)  # --import: loaded in every worker
    if env:
        quiet["runtime_env"] = env
    if spec.address:
        ray.init(address=spec.address, log_to_driver=spec.verbose, **quiet)
    else:
        # A local run needs no cluster token (every ray.init writes ~/.ray/auth_token otherwise;
        # docs/architecture.md, Ray touch points).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # A private instance: a bare ray.init() would join any head started on this machine
        # (`ray start --head`, someone else's) and die when that cluster is stopped.
        ray.init(address="local", include_dashboard=False, log_to_driver=spec.verbose, **quiet)
    # ray.init replaces the driver's SIGTERM handler (sys.exit(15), or kill every Ray process
    # and exit 1): put the graceful Ctrl-C path back, so SIGTERM saves state and exits 130.
    graceful_sigterm()
    return True


def graceful_sigterm() -> None:
    """SIGTERM takes the Ctrl-C path: Tune saves the experiment state and fit() returns."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


def _stage_kwargs(spec: SearchSpec, experiment_dir: Path, name: str, samples: int, max_epochs: int,
                  scheduler: Any = None) -> dict[str, Any]:
    """What every stage shares: resources, retries, its progress line and tracker callbacks."""
    planned = planned_epochs(samples, max_epochs, getattr(scheduler, "milestones", None),
                             getattr(scheduler, "caps", None))
    return {"experiment_dir": experiment_dir, "cpus": spec.cpus_per_trial, "gpus": spec.gpus_per_trial,
            "max_failures": spec.max_failures, "progress": StageProgress(name, samples, max_epochs, planned),
            "callbacks": tracker_callbacks(spec.tracker, experiment_dir, name)}


def _finish(manifest: Manifest, stage: Stage, results, expected: int,
            max_epochs: int | None = None, goal: Objective | None = None) -> dict[str, Any]:
    """Record a finished stage (search/record/trials.stage_record: its winner, trial rows and,
    under a multi-metric `goal`, its Pareto set), or raise Interrupted when trials are still open."""
    if not stage_finished(results, expected):
        manifest.mark(stage.name, "interrupted", path=str(stage.path))
        raise Interrupted(stage.name)
    done = record.stage_record([record.from_result(r, stage.name, max_epochs) for r in results], goal)
    if done is None:
        manifest.mark(stage.name, "failed", path=str(stage.path))
        raise RuntimeError(f"stage {stage.name}: no trial reported a finite val_acc; see {stage.path}")
    manifest.mark(stage.name, "done", path=str(stage.path), **done)
    return done


def teacher_stage(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest) -> str:
    """Train the teacher (one trial), or adopt --teacher-checkpoint; returns its checkpoint file."""
    if manifest.is_done(TEACHER):
        return manifest.teacher_checkpoint()
    if spec.teacher_checkpoint:
        path = str(Path(spec.teacher_checkpoint).resolve())
        manifest.mark(TEACHER, "done", best_checkpoint=path, source="--teacher-checkpoint")
        return path
    config = spec.teacher_config()
    ddp = {"worker_resources": worker_resources(spec.cpus_per_trial, spec.gpus_per_trial)} \
        if spec.teacher_workers > 1 else {}  # --teacher-workers: DDP inside the trial
    stage = Stage(name=TEACHER, trainable=tune.with_parameters(train_teacher, data=bundle, **ddp),
                  num_samples=1, param_space=config, workers=spec.teacher_workers,
                  **_stage_kwargs(spec, manifest.dir, TEACHER, 1, int(config.get("epochs", 1))))
    manifest.mark(TEACHER, "running", path=str(stage.path))
    results = run_stage(stage, resume=spec.resume)
    return _finish(manifest, stage, results, expected=1)["best_checkpoint"]


def teacher_logits(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest,
                   teacher_checkpoint: str) -> SharedLogitCache:
    """The teacher-logit cache every trial of this teacher shares (search/stages/teacher_cache.py),
    computed by tasks with a trial's resources. Each build (a resumed run's reload of the saved
    cache too) is logged in the manifest's `cache_builds`: teacher, views, seconds."""
    start = time.perf_counter()
    cache = build_cache(spec.student_bundle(bundle), teacher_checkpoint, views=spec.augment_views, seed=spec.seed,
                        precision=spec.train.get("precision", "auto"), device=spec.train.get("device", "auto"),
                        cpus=spec.cpus_per_trial, gpus=spec.gpus_per_trial,
                        cache_dir=manifest.dir / "teacher_logits", resident_max_mb=spec.resident_max_mb)
    manifest.data.setdefault("cache_builds", []).append(
        {"teacher": teacher_checkpoint, "views": spec.augment_views, "seconds": round(time.perf_counter() - start, 3),
         "mapped": isinstance(cache, MappedLogitCache)})
    manifest.save()
    return cache


# Each search stage samples with its own seed offset so stages do not mirror each other.
SEED_OFFSET = {DISTILL: 0, BASELINE: 1, ASSISTANT: 2, TA_DISTILL: 3}


def search_stage(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest, name: str,
                 teacher_checkpoint: str | None, logits: SharedLogitCache | None,
                 architecture: dict[str, Any] | None = None) -> dict[str, Any]:
    """A student search: Optuna TPE + ASHA; without a teacher it is the undistilled baseline.

    `architecture` pins the student (a chain link); otherwise depth and width are searched.
    """
    if manifest.is_done(name):
        return manifest.stage(name)
    distill = name != BASELINE  # (an online run distils without a teacher checkpoint)
    samples = spec.num_samples if distill else spec.baseline_samples
    define = study.stage_space(spec, name, teacher_checkpoint, architecture)
    searcher = optuna_search(define, seed=spec.seed + SEED_OFFSET[name], objective=spec.objective,
                             max_concurrent=spec.max_concurrent, max_epochs=spec.max_epochs,
                             storage=stage_storage(spec, manifest.dir, name), study_name=study.study_name(name))
    params = {"data": bundle}
    if distill and logits is not None:
        params["teacher_logits"] = logits
    scheduler = asha(spec.max_epochs, spec.grace_period, spec.reduction_factor, num_samples=samples,
                     objective=spec.objective)
    stage = Stage(name=name, trainable=tune.with_parameters(distill_student, **params), num_samples=samples,
                  search_alg=searcher, scheduler=scheduler,
                  **_stage_kwargs(spec, manifest.dir, name, samples, spec.max_epochs, scheduler))
    manifest.mark(name, "running", path=str(stage.path))
    results = run_stage(stage, resume=spec.resume)
    return _finish(manifest, stage, results, expected=samples, max_epochs=spec.max_epochs,
                   goal=objective(spec.objective))


def stage_storage(spec: SearchSpec, experiment_dir: Path, name: str):
    """The stage's Optuna storage (search/tune/optuna_study.py), seeded by --warm-start when the stage is new.

    A stage that starts afresh (new run, or interrupted before Tune saved its state, so there
    is nothing to restore) starts a fresh study too: trials an earlier attempt asked for would
    otherwise stay in it, RUNNING forever. A restored stage keeps its study as it is.
    """
    stage_dir = experiment_dir / name
    fresh = not (spec.resume and tune.Tuner.can_restore(str(stage_dir)))
    if fresh:
        study.study_path(stage_dir).unlink(missing_ok=True)
    storage = study.open_storage(stage_dir)
    if fresh and spec.warm_start:
        new = optuna.create_study(storage=storage, study_name=study.study_name(name),
                                  directions=study.study_directions(spec.objective))
        copied = seed_study(new, Path(spec.warm_start), name)
        print(f"kdtune: {name}: sampler warm-started with {copied} trials of {spec.warm_start}", flush=True)
    return storage


def sweep_stage(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest,
                teacher_checkpoint: str | None, logits: SharedLogitCache | None) -> None:
    """A preset's grid sweep: every combination trained to full length, no early stopping."""
    if manifest.is_done(SWEEP):
        return
    params: dict[str, Any] = {"data": bundle}
    if logits is not None:
        params["teacher_logits"] = logits
    constants = spec.student_constants(teacher_checkpoint)
    points = len(sweep.sweep_points(spec.sweep))
    stage = Stage(name=SWEEP, trainable=tune.with_parameters(sweep.sweep_trial, **params), num_samples=1,
                  param_space=sweep.param_space(spec.sweep, constants),
                  **_stage_kwargs(spec, manifest.dir, SWEEP, points, spec.max_epochs))
    manifest.mark(SWEEP, "running", path=str(stage.path))
    results = run_stage(stage, resume=spec.resume)
    _finish(manifest, stage, results, expected=len(sweep.sweep_points(spec.sweep)))


def chain_stages(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest, teacher_checkpoint: str,
                 logits: SharedLogitCache | None, links: list[dict[str, Any]]) -> None:
    """Teacher-assistant distillation (Mirzadeh et al. 2020): teacher -> assistant -> student.

    Each step is a search of its own; the student distilled straight from the teacher (the
    distill stage) and without KD (the baseline stage) are the comparison rows.
    """
    assistant = search_stage(spec, bundle, manifest, ASSISTANT, teacher_checkpoint, logits, links[1])
    assistant_checkpoint = assistant["best_checkpoint"]
    assistant_logits = teacher_logits(spec, bundle, manifest, assistant_checkpoint)
    search_stage(spec, bundle, manifest, TA_DISTILL, assistant_checkpoint, assistant_logits, links[-1])


def final_stage(spec: SearchSpec, bundle: DatasetBundle, manifest: Manifest, teacher_checkpoint: str | None,
                logits: SharedLogitCache | None) -> None:
    """The searches' winners retrained over --final-seeds seeds, each tested once (search/stages/final.py)."""
    if FINAL not in spec.planned_stages() or manifest.is_done(FINAL):
        return
    candidates = final.candidates_for(spec, manifest)
    if not candidates:
        manifest.mark(FINAL, "failed", reason="no finished, non-diverged search trial to retrain")
        return
    runs = len(candidates) * spec.final_seeds
    stage, expected = final.build_stage(spec, bundle, manifest, candidates, teacher_checkpoint, logits,
                                        max_concurrent=spec.max_concurrent,
                                        **_stage_kwargs(spec, manifest.dir, FINAL, runs, spec.max_epochs))
    manifest.mark(FINAL, "running", path=str(stage.path), candidates=candidates)
    results = run_stage(stage, resume=spec.resume)
    if not final.finished(results, expected):
        left = final.unfinished(results)
        print(f"kdtune: final stage: {len(results)} of {expected} runs started, unfinished: {', '.join(left)}",
              flush=True)
        manifest.mark(FINAL, "interrupted", path=str(stage.path), unfinished=left)
        raise Interrupted(FINAL)
    seeds = final.final_seeds(spec.seed, spec.final_seeds)
    manifest.mark(FINAL, "done", path=str(stage.path), **final.summarize(results, candidates, seeds))


def run(spec: SearchSpec, bundle: DatasetBundle) -> Path:
    """Run (or resume) all stages; returns the experiment directory."""
    experiment_dir = spec.experiment_dir
    if spec.resume:
        manifest = Manifest.load(experiment_dir)
    else:
        manifest = Manifest.create(experiment_dir, spec.to_dict(), bundle.meta(), spec.planned_stages())
    started = start_ray(spec)
    try:
        teacher_checkpoint = teacher_stage(spec, bundle, manifest) if spec.needs_teacher() else None
        logits = teacher_logits(spec, bundle, manifest, teacher_checkpoint) if teacher_checkpoint else None
        given_teacher.describe(manifest, bundle, logits)  # a --teacher-checkpoint's row: model, size, val_acc
        if spec.sweep:
            sweep_stage(spec, bundle, manifest, teacher_checkpoint, logits)
        else:
            links = spec.chain_links()
            student = links[-1] if links else None
            search_stage(spec, bundle, manifest, BASELINE, None, None, student)
            search_stage(spec, bundle, manifest, DISTILL, teacher_checkpoint, logits, student)
            if links:
                chain_stages(spec, bundle, manifest, teacher_checkpoint, logits, links)
            final_stage(spec, bundle, manifest, teacher_checkpoint, logits)
    finally:
        if started:
            ray.shutdown()
    write_summary(manifest)
    return experiment_dir
