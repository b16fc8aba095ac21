"""Pre-flight checks: everything a run needs is verified before Ray starts.

Each failure is a `UsageError` whose message says what is wrong and how to fix it; the CLI
prints it as one line and exits with code 2. Nothing is written to the storage path until
every check passed. The dataset is decoded here (a truncated file fails now, not in a trial)
and handed to the pipeline, so it is decoded exactly once.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

import datasets
from datasets import DatasetBundle
from search import spaces, sweep
from search.manifest import MANIFEST_NAME, Manifest, latest_experiment
from search.spec import OBJECTIVES, SearchSpec
from trainables.checkpoint import check_compatible, load_payload
from trainables.config import DistillConfig, TeacherConfig


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2, before any work starts."""


def resolve_resume(spec: SearchSpec, name_given: bool) -> SearchSpec:
    """For --resume: find the experiment (--name, else the latest) and re-read its spec."""
    storage = Path(spec.storage_path).expanduser().resolve()
    experiment = storage / spec.name
    if not name_given:
        experiment = latest_experiment(storage) or experiment
    try:
        manifest = Manifest.load(experiment)
    except ValueError as exc:
        raise UsageError(f"cannot resume: {exc}; pass --name of an existing run under {storage}")
    stored = SearchSpec.from_dict(manifest.data["spec"])
    return SearchSpec.from_dict({**stored.to_dict(), "resume": True, "storage_path": str(storage),
                                 "name": experiment.name, "address": spec.address,
                                 "max_failures": spec.max_failures})


def _check_numbers(spec: SearchSpec) -> None:
    if spec.dataset not in datasets.list_datasets():
        raise UsageError(f"unknown dataset {spec.dataset!r}; choose one of {', '.join(datasets.list_datasets())}")
    for key in ("num_samples", "baseline_samples", "max_epochs", "grace_period", "max_concurrent"):
        if int(getattr(spec, key)) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(spec, key)}")
    if spec.grace_period > spec.max_epochs:
        raise UsageError(f"--grace-period ({spec.grace_period}) is larger than --max-epochs "
                         f"({spec.max_epochs}); ASHA could never stop a trial")
    if isinstance(spec.final_top_k, bool) or not isinstance(spec.final_top_k, int) or spec.final_top_k < 1:
        raise UsageError(f"--final-top-k must be an integer >= 1, got {spec.final_top_k!r}")
    if isinstance(spec.final_seeds, bool) or not isinstance(spec.final_seeds, int) or spec.final_seeds < 0:
        raise UsageError(f"--final-seeds must be an integer >= 0 (0 turns the final stage off), "
                         f"got {spec.final_seeds!r}")
    if spec.final_seeds and not spec.sweep and spec.final_top_k > spec.num_samples:
        raise UsageError(f"--final-top-k {spec.final_top_k} is larger than --num-samples {spec.num_samples}: "
                         "the distillation search has no more configs to retrain")
    if spec.reduction_factor < 2:
        raise UsageError(f"--reduction-factor must be >= 2, got {spec.reduction_factor}")
    if spec.objective not in OBJECTIVES:
        raise UsageError(f"--objective must be one of {OBJECTIVES}, got {spec.objective!r}")
    if spec.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {spec.max_failures}")
    if spec.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {spec.cpus_per_trial}")
    if not spec.address and spec.cpus_per_trial > (os.cpu_count() or 1):
        raise UsageError(f"--cpus-per-trial {spec.cpus_per_trial} but this machine has {os.cpu_count()} CPUs; "
                         "lower it, or pass --address of a bigger cluster")
    if not spec.address and spec.gpus_per_trial > 0:
        have = torch.cuda.device_count()
        if spec.gpus_per_trial > have:
            raise UsageError(f"--gpus-per-trial {spec.gpus_per_trial} but this machine has {have} GPU(s); "
                             "lower it, or pass --address of a cluster with GPUs")


def _check_configs(spec: SearchSpec) -> None:
    """Build the teacher config and one student config of every family: catches bad names/values."""
    try:
        if spec.sweep:
            _check_sweep(spec)
            return
        if spec.online and (spec.teacher_checkpoint or spec.chain or spec.augment_views):
            raise ValueError("this preset trains its teacher online (train.online_teacher); "
                             "--teacher-checkpoint, --chain and --augment-views do not apply")
        if spec.chain:
            _check_chain(spec)
            return
        spaces.check_space(spec.space, spec.students)
        if spec.needs_teacher() and not spec.teacher_checkpoint:
            TeacherConfig.from_dict(spec.teacher_config())
        for family in spec.students:
            DistillConfig.from_dict({**spec.student_constants(None, distill=False), "model": family,
                                     **_lowest_size(spec, family)})
            sample = {**spec.student_constants(None), "model": family}
            for name in ("depth", "width"):
                value = spaces.family_dim(spec.space, name, family)
                sample[name] = int(value[0] if spaces.is_range(value) else value)
            for name in ("alpha", "temperature", "lr", "weight_decay"):
                if name in spec.space:
                    value = spec.space[name]
                    for bound in (value if spaces.is_range(value) else (value,)):
                        DistillConfig.from_dict({**sample, name: bound})
            DistillConfig.from_dict(sample)
    except ValueError as exc:
        raise UsageError(str(exc).splitlines()[0])


def _lowest_size(spec: SearchSpec, family: str) -> dict[str, int]:
    out = {}
    for name in ("depth", "width"):
        value = spaces.family_dim(spec.space, name, family)
        out[name] = int(value[0] if spaces.is_range(value) else value)
    return out


def _check_chain(spec: SearchSpec) -> None:
    """TEACHER,ASSISTANT,STUDENT: three valid models; the search dims must not size the student."""
    links = spec.chain_links()
    if len(links) != 3:
        raise ValueError(f"--chain needs exactly TEACHER,ASSISTANT,STUDENT, got {len(links)} link(s)")
    if spec.teacher_checkpoint:
        raise ValueError("--chain trains its own teacher (the first link); drop --teacher-checkpoint")
    spaces.check_space({k: v for k, v in spec.space.items() if k not in spaces.SIZE_DIMS}, [])
    TeacherConfig.from_dict(spec.teacher_config())
    for link in links[1:]:
        sample = {**spec.student_constants("(teacher)"), **link}
        for name in ("alpha", "temperature", "lr", "weight_decay"):
            value = spec.space.get(name)
            if value is not None:
                sample[name] = value[0] if spaces.is_range(value) else value
        DistillConfig.from_dict(sample)


def _check_sweep(spec: SearchSpec) -> None:
    """Every grid point must be a valid config (a teacher config too when one distils)."""
    sweep.check_sweep(spec.sweep)
    base = spec.student_constants("(teacher)" if spec.needs_teacher() else None)
    for point in sweep.sweep_points(spec.sweep):
        DistillConfig.from_dict(sweep.merge(base, point))
    if spec.needs_teacher() and not spec.teacher_checkpoint:
        TeacherConfig.from_dict(spec.teacher_config())


def _check_storage(spec: SearchSpec) -> None:
    storage = Path(spec.storage_path).expanduser().resolve()
    probe = storage
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"storage path {storage} is not writable; pass --storage-path to a folder you can write")
    if not spec.resume and (storage / spec.name / MANIFEST_NAME).exists():
        raise UsageError(f"experiment {storage / spec.name} already exists; pass --resume to continue it "
                         "or another --name")


def _load_data(spec: SearchSpec) -> DatasetBundle:
    try:
        return datasets.create_dataset(spec.dataset, spec.data_dir, download=spec.download,
                                       val_fraction=spec.val_fraction, seed=spec.seed, subset=spec.subset)
    except (ValueError, OSError, RuntimeError) as exc:
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _check_views(spec: SearchSpec, bundle: DatasetBundle) -> None:
    if spec.augment_views and bundle.augment == "none":
        raise UsageError(f"--augment-views applies to augmented datasets (cifar10, cifar100, image_folder); "
                         f"{spec.dataset} is not augmented and its teacher logits are cached already")


def _check_teacher_checkpoint(path: str, bundle: DatasetBundle) -> None:
    try:
        check_compatible(load_payload(path), bundle.meta())
    except (ValueError, OSError) as exc:
        raise UsageError(f"--teacher-checkpoint: {str(exc).splitlines()[0]}")


def preflight(spec: SearchSpec, name_given: bool = True) -> tuple[SearchSpec, DatasetBundle]:
    """All checks in cheap-first order; returns the (resume-resolved) spec and the decoded data."""
    if spec.resume:
        spec = resolve_resume(spec, name_given)
    _check_numbers(spec)
    _check_configs(spec)  # model names and value ranges, through the trainables' own configs
    _check_storage(spec)
    bundle = _load_data(spec)
    _check_views(spec, bundle)
    checkpoint = spec.teacher_checkpoint
    if checkpoint:
        _check_teacher_checkpoint(checkpoint, bundle)
    return spec, bundle
