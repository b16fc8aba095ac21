"""Pre-flight checks: everything a run needs is verified before Ray starts.

Each failure is a `UsageError` whose message says what is wrong and how to fix it; the CLI
prints it as one line and exits with code 2. Nothing is written to the storage path until
every check passed (its writability is probed with a folder made and removed again); the
data folder receives only the missing files of a download (datasets/download.py). The
dataset is decoded here (a truncated file fails now, not in a trial) and handed to the
pipeline, so it is decoded exactly once.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import torch

from kdtune import datasets
from kdtune.datasets import DatasetBundle, DatasetError, MissingFilesError
from kdtune.models.zoo import ZOO_PREFIXES, ZooRefusal
from kdtune.search.record.stage_names import FINAL, TEACHER
from kdtune.search.tune import search_spaces as spaces
from kdtune.search.stages import sweep
from kdtune.search.input.errors import UsageError, warn
from kdtune.search.record.manifest import MANIFEST_NAME, Manifest, latest_experiment
from kdtune.search.input import options
from kdtune.search.input.spec import SearchSpec
from kdtune.search.tune.optuna_study import search_spaces, study_directions
from kdtune.search.tune.trackers import check_tracker
from kdtune.search.tune.warm_start import check_same_space
from kdtune.trainables.checkpoint import CheckpointError, check_compatible, load_payload
from kdtune.trainables.config import DistillConfig, TeacherConfig
from kdtune.trainables.losses import method_fields


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
    stored = type(spec).from_dict(manifest.data["spec"])
    from kdtune.search.input import user_imports

    user_imports.load(stored.imports)  # the run's own plugins: its names are theirs
    # The options declared resume-safe (where the run is, how this session runs it: the only
    # flags check_flags let through) come from this session; everything else from the run.
    session = {name: getattr(spec, name) for name in options.resume_safe()}
    return type(spec).from_dict({**stored.to_dict(), **session, "resume": True, "storage_path": str(storage),
                                 "name": experiment.name})


def _check_numbers(spec: SearchSpec) -> None:
    if spec.dataset not in datasets.list_datasets():
        raise UsageError(f"unknown dataset {spec.dataset!r}; choose one of {', '.join(datasets.list_datasets())}")
    if spec.dataset == "image_folder" and not spec.data_dir:
        raise UsageError("--dataset image_folder reads your own images: pass --data-dir, a folder with one "
                         "sub-folder of images per class (or train/ and test/ folders of them)")
    if spec.image_size is not None and spec.dataset != "image_folder":
        raise UsageError(f"--image-size resizes image_folder images; {spec.dataset} images have a fixed size")
    for option in options.OPTIONS:  # each option's declared type and range (a preset's value:
        option.check(option.read(spec))  # a flag's was checked when parsed)
    for key in ("resident_max_mb", "store_dir", "decode_workers"):
        if getattr(spec, key) is not None and spec.dataset != "image_folder":
            raise UsageError(f"--{key.replace('_', '-')} applies to image_folder (images decoded from files); "
                             f"{spec.dataset} is read from its own array files")
    if spec.grace_period > spec.max_epochs:
        raise UsageError(f"--grace-period ({spec.grace_period}) is larger than --max-epochs "
                         f"({spec.max_epochs}); ASHA could never stop a trial")
    if spec.final_seeds and not spec.sweep and spec.final_top_k > spec.num_samples:
        raise UsageError(f"--final-top-k {spec.final_top_k} is larger than --num-samples {spec.num_samples}: "
                         "the distillation search has no more configs to retrain")
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
        if spec.online and (spec.teacher_checkpoint or spec.chain or spec.augment_views is not None):
            raise ValueError("this preset trains its teacher online (train.online_teacher); "
                             "--teacher-checkpoint, --chain and --augment-views do not apply")
        if spec.chain:
            _check_chain(spec)
            return
        spaces.check_space(spec.space, spec.students)
        spaces.check_methods(list(spec.methods))
        if spec.needs_teacher() and not spec.teacher_checkpoint:
            TeacherConfig.from_dict(spec.teacher_config())
        for family in spec.students:
            DistillConfig.from_dict({**spec.student_constants(None, distill=False), "model": family,
                                     **_lowest_size(spec, family)})
            sample = {**spec.student_constants(None), "model": family}
            for name in ("depth", "width"):
                value = spaces.family_dim(spec.space, name, family)
                if value is not None:  # a model taken as it is has no size dimensions
                    sample[name] = int(value[0] if spaces.is_range(value) else value)
            for method in spec.methods:  # every method with every bound of its own dimensions
                per_method = {**sample, "kd_method": method}
                for name in ("lr", "weight_decay", *method_fields(method)):
                    if name in spec.space:
                        value = spec.space[name]
                        for bound in (value if spaces.is_range(value) else (value,)):
                            DistillConfig.from_dict({**per_method, name: bound})
                DistillConfig.from_dict(per_method)
    except ValueError as exc:
        raise UsageError(str(exc).splitlines()[0])


def _lowest_size(spec: SearchSpec, family: str) -> dict[str, int]:
    out = {}
    for name in ("depth", "width"):
        value = spaces.family_dim(spec.space, name, family)
        if value is not None:
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
        sample = {**spec.student_constants("(teacher)"), **link, "kd_method": spec.methods[0]}
        for name in ("lr", "weight_decay", *method_fields(spec.methods[0])):
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


def _check_tracker(spec: SearchSpec) -> None:
    try:
        check_tracker(spec.tracker)
    except ValueError as exc:
        raise UsageError(str(exc))


def _check_warm_start(spec: SearchSpec) -> None:
    """The source is a kdtune run whose search stages searched this run's spaces."""
    if not spec.warm_start or spec.resume:  # a resume continues studies already seeded
        return
    source = Path(spec.warm_start)
    if spec.sweep:
        raise UsageError("--warm-start seeds a search's sampler; this preset runs a grid sweep")
    try:
        Manifest.load(source)
        for stage, define in search_spaces(spec).items():
            check_same_space(source, stage, define, study_directions(spec.objective))
    except ValueError as exc:
        raise UsageError(f"--warm-start: {str(exc).splitlines()[0]}")


def _check_storage(spec: SearchSpec) -> None:
    storage = Path(spec.storage_path).expanduser().resolve()
    if not _can_create_under(storage):
        raise UsageError(f"storage path {storage} is not writable; pass --storage-path to a folder you can write")
    if not spec.resume and (storage / spec.name / MANIFEST_NAME).exists():
        raise UsageError(f"experiment {storage / spec.name} already exists; pass --resume to continue it "
                         "or another --name")


def _can_create_under(path: Path) -> bool:
    """Can a folder with a file in it be made at `path`? Tried, not inferred, and undone.

    Permission bits do not answer it: root passes os.access everywhere, a read-only mount
    or a virtual filesystem (/proc, /sys) refuses writes whatever the bits say, and a path
    running through a file has no folder to write in. So a probe folder is made in the
    nearest existing ancestor, a file written in it, and both removed again.
    """
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return False
    try:
        probe = tempfile.mkdtemp(prefix=".kdtune-write-probe-", dir=ancestor)
    except OSError:
        return False
    try:
        with open(os.path.join(probe, "probe"), "wb") as f:
            f.write(b"kdtune")
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _store_options(spec: SearchSpec) -> dict:
    """image_folder's decode options (datasets/store.py); decode workers default to the CPUs."""
    if spec.dataset != "image_folder":
        return {}
    return {"resident_max_mb": spec.resident_max_mb, "store_dir": spec.store_dir,
            "decode_workers": spec.decode_workers or os.cpu_count() or 1}


def _load_data(spec: SearchSpec) -> DatasetBundle:
    """Decode the dataset; fetch missing torchvision files first unless --no-download."""
    from kdtune.datasets.download import fetch

    def create(download: bool) -> DatasetBundle:
        return datasets.create_dataset(spec.dataset, spec.data_dir, download=download,
                                       val_fraction=spec.val_fraction, seed=spec.seed, subset=spec.subset,
                                       image_size=spec.image_size, **_store_options(spec))

    try:
        try:
            return create(download=False)
        except MissingFilesError as missing:
            if not spec.download:
                raise
            return fetch(missing, lambda: create(download=True))
    except DatasetError as exc:  # missing, truncated or undecodable files; a failed fetch
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:  # an unreadable folder or file
        raise UsageError(f"cannot read {spec.dataset} data: {exc}")


def _resolve_views(spec: SearchSpec, bundle: DatasetBundle) -> SearchSpec:
    """--augment-views checked against the data; its default filled in (recorded in the manifest).

    The default on augmented data is K = max_epochs fixed views with cached teacher logits:
    a view depends only on (seed, epoch, image), so it trains what a fresh view every epoch
    does, with the teacher run K times per search instead of once per trial-epoch. Sweeps
    and online distillation keep a fresh view every epoch; a resumed run keeps its own."""
    if spec.student_bundle(bundle).augment == "none":
        if spec.augment_views is not None:
            raise UsageError(f"--augment-views applies to augmented datasets (cifar10, cifar100, image_folder); "
                             f"{spec.dataset} is not augmented and its teacher logits are cached already")
        return spec
    if spec.augment_views is None and not (spec.resume or spec.online or spec.sweep):
        return dataclasses.replace(spec, augment_views=spec.max_epochs)
    return spec


def _resolve_budget(spec: SearchSpec, bundle: DatasetBundle) -> SearchSpec:
    """Record the data shape the size budget is computed for; every family's smallest member
    (its range's lower bounds) must fit, else the sampler could propose nothing."""
    if spec.max_params is None and spec.max_flops is None:
        return spec
    if spec.sweep or spec.chain:
        raise UsageError("--max-params / --max-flops bound a searched student; a sweep or --chain "
                         "names its students itself")
    spec = dataclasses.replace(spec, data_shape=(bundle.num_classes, tuple(bundle.in_shape)))
    budget = spec.size_budget()
    for family in spec.students:
        smallest = {}
        for name in spaces.SIZE_DIMS:
            value = spaces.family_dim(spec.space, name, family)
            if value is not None:
                lo, hi = (value if spaces.is_range(value) else (value, value))
                if name == "depth" and spaces.is_range(value):
                    lo = spaces._depth_grid(family, int(lo), int(hi))[0]
                smallest[name] = int(lo)
        if not budget.fits(family, smallest):
            params, flops = budget.size(family, smallest)
            raise UsageError(f"student family {family}: its smallest member {smallest} has {params} params "
                             f"and {flops} FLOPs/image, over the budget ({budget.describe()})")
    return spec


def _weights_models() -> list[str]:
    """Registered models that take a local state-dict file (`weights_path`)."""
    from kdtune.models.registry import list_models, model_kwargs

    return [m for m in list_models() if "weights_path" in model_kwargs(m)]


def _check_teacher_weights_flag(spec: SearchSpec) -> None:
    """--teacher-weights: a file that exists, for a teacher model that can load it."""
    weights = dict(spec.teacher.get("model_kwargs") or {}).get("weights_path")
    if weights is None:
        return
    model = spec.teacher.get("model")
    if model not in _weights_models() and not str(model).startswith(ZOO_PREFIXES):
        # Zoo names other runs or tests registered are covered by timm:NAME / torchvision:NAME.
        named = [m for m in _weights_models() if not m.startswith(ZOO_PREFIXES)]
        raise UsageError(f"--teacher-weights loads a state dict, which only timm:NAME, torchvision:NAME and "
                         f"{', '.join(named)} teachers take; this teacher is {model!r} "
                         "(choose one with --teacher)")
    if not Path(weights).expanduser().is_file():
        raise UsageError(f"--teacher-weights: no file at {Path(weights).expanduser().resolve()}")


def _check_teacher_weights_file(spec: SearchSpec, bundle: DatasetBundle) -> None:
    """Load --teacher-weights into the teacher now: a file of another architecture fails here."""
    kwargs = dict(spec.teacher.get("model_kwargs") or {})
    if "weights_path" not in kwargs or spec.teacher_checkpoint:
        return
    from kdtune import models

    try:
        models.create_model(spec.teacher["model"], bundle.num_classes, bundle.in_shape, **kwargs)
    except (ValueError, OSError, RuntimeError) as exc:  # load_matching's refusals, torch.load's errors
        raise UsageError(f"--teacher-weights: {str(exc).splitlines()[0]}")


def _check_zoo_teacher(spec: SearchSpec, bundle: DatasetBundle) -> None:
    """A timm:/torchvision: teacher must take this dataset's images (a ViT built for 224 px
    refuses 32 px ones): one forward of one image now, the model's own input size in the error."""
    model = str(spec.teacher.get("model") or "")
    if spec.teacher_checkpoint or not spec.needs_teacher() or not model.startswith(ZOO_PREFIXES):
        return
    from kdtune import models

    kwargs = {k: v for k, v in dict(spec.teacher.get("model_kwargs") or {}).items() if k != "weights_path"}
    try:
        net = models.create_model(model, bundle.num_classes, bundle.in_shape, **kwargs).eval()
        with torch.no_grad():
            net(torch.zeros(1, *bundle.in_shape))
    except ZooRefusal as exc:  # zoo.py's own line, naming the model (offline weights, input size)
        raise UsageError(f"--teacher {str(exc).splitlines()[0]}") from None
    except ValueError as exc:
        raise UsageError(f"teacher {model}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # the zoo's own refusal, whatever its type
        cfg = getattr(getattr(locals().get("net"), "net", None), "pretrained_cfg", None) or {}
        wants = f" (its pretrained_cfg input_size is {tuple(cfg['input_size'])})" if cfg.get("input_size") else ""
        raise UsageError(f"teacher {model} cannot take {bundle.name}'s {tuple(bundle.in_shape)} images{wants}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _check_teacher_checkpoint(path: str, bundle: DatasetBundle) -> None:
    try:
        payload = load_payload(path)
        check_compatible(payload, bundle.meta())
    except (CheckpointError, OSError) as exc:
        raise UsageError(f"--teacher-checkpoint: {str(exc).splitlines()[0]}")
    _check_split(payload, bundle, f"--teacher-checkpoint {path}")


def _check_split(payload: dict, bundle: DatasetBundle, what: str) -> None:
    """Refuse a teacher that trained on this run's validation images (its KD gain would be inflated)."""
    from kdtune.datasets.split_identity import val_images_seen

    record, n_val = payload.get("split"), len(bundle.val)
    if record is None:
        why = ("an exported model whose model_card.json records no data split (kdtune export writes one)"
               if payload.get("exported") else "written before kdtune recorded one")
        warn(f"{what} records no data split ({why}): it cannot be checked for having trained on "
             f"this run's {n_val} validation images")
        return
    seen = val_images_seen(record, bundle)
    ours = bundle.split or {}
    theirs = f"seed {record.get('seed')}, val_fraction {record.get('val_fraction')}" + (
        f", subset {record['subset']}" if record.get("subset") else "")
    if seen is None:
        raise UsageError(f"{what} trained on a split ({record.get('pool')} images of {record.get('dataset')}, "
                         f"{theirs}) that these data files cannot reproduce, so it may have trained on this "
                         f"run's {n_val} validation images; train the teacher in this run instead")
    if seen:
        raise UsageError(f"{what} trained on {seen} of this run's {n_val} validation images ({theirs}; this run: "
                         f"seed {ours.get('seed')}, val_fraction {ours.get('val_fraction')}); pass the same "
                         "--seed and --val-fraction, or train the teacher in this run")


def _check_workers(spec: SearchSpec) -> None:
    """--teacher-workers / --final-workers: refused where there is nothing for them to train, or
    where the N workers (each --cpus-per-trial / --gpus-per-trial) could never start together."""
    from kdtune.trainables.losses import loss_class

    stages = spec.planned_stages()
    for flag, n, stage in (("--teacher-workers", spec.teacher_workers, TEACHER),
                           ("--final-workers", spec.final_workers, FINAL)):
        if n == 1:
            continue
        if stage not in stages or (stage == TEACHER and spec.teacher_checkpoint):
            why = {TEACHER: "this run trains no teacher (a given checkpoint, or an online teacher)",
                   FINAL: "this run has no final stage (--final-seeds 0, or a sweep)"}[stage]
            raise UsageError(f"{flag} {n}: {why}; drop it")
        if not spec.address and n * spec.cpus_per_trial > (os.cpu_count() or 1):
            raise UsageError(f"{flag} {n} x --cpus-per-trial {spec.cpus_per_trial:g} needs {n * spec.cpus_per_trial:g} "
                             f"CPUs at once but this machine has {os.cpu_count()}; lower one of them, or pass "
                             "--address of a bigger cluster")
        if not spec.address and spec.gpus_per_trial > 0 and n * spec.gpus_per_trial > torch.cuda.device_count():
            raise UsageError(f"{flag} {n} x --gpus-per-trial {spec.gpus_per_trial:g} needs more GPUs than this "
                             f"machine's {torch.cuda.device_count()}")
    if spec.final_workers > 1:
        feature = [m for m in spec.methods if "features" in loss_class(m).needs]
        if spec.online or feature:
            what = "an online teacher" if spec.online else f"feature method(s) {', '.join(feature)}"
            raise UsageError(f"--final-workers {spec.final_workers}: retraining with {what} runs single-process "
                             "(the teacher trains or is tapped inside each step); drop --final-workers")


def preflight(spec: SearchSpec, name_given: bool = True) -> tuple[SearchSpec, DatasetBundle]:
    """All checks in cheap-first order; returns the (resume-resolved) spec and the decoded data."""
    if spec.resume:
        spec = resolve_resume(spec, name_given)
    _check_numbers(spec)
    _check_workers(spec)
    _check_teacher_weights_flag(spec)
    _check_configs(spec)  # model names and value ranges, through the trainables' own configs
    _check_tracker(spec)
    _check_warm_start(spec)
    _check_storage(spec)
    bundle = _load_data(spec)
    spec = _resolve_views(spec, bundle)
    spec = _resolve_budget(spec, bundle)
    _check_zoo_teacher(spec, bundle)
    _check_teacher_weights_file(spec, bundle)
    checkpoint = spec.teacher_checkpoint
    if checkpoint:
        _check_teacher_checkpoint(checkpoint, bundle)
    return spec, bundle
