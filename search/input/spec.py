"""SearchSpec: one resolved description of a kdtune run (a preset with the user's flags on top).

The spec is what the manifest records and what `--resume` re-reads, so it holds plain data
only. It also derives the per-stage trainable configs, so the keys sent to a trial are built
in one place.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kdtune.search.input import schema

# --smoke-test: every stage runs, on a slice of the data, for seconds. The budget options'
# caps are declared with them (search/input/schema.py); these two are not budget options.
SMOKE = {"subset": 256, "teacher_epochs": 1, **schema.smoke_limits()}
ONLINE_KEYS = ("online_teacher", "online_teacher_kwargs")


@dataclass(frozen=True)
class SearchSpec:
    preset: str
    dataset: str
    data_dir: str | None = None
    image_size: int | None = None                            # image_folder: side images are resized to
    resident_max_mb: float | None = None                     # image_folder: larger sets go to the disk store
    store_dir: str | None = None                             # image_folder: where disk stores live
    decode_workers: int | None = None                        # image_folder: parallel decode shards
    download: bool = True                                    # fetch missing torchvision files
    val_fraction: float = 0.1
    seed: int = 0
    subset: int | None = None
    # Augmented data: students cycle K fixed augmented views whose teacher logits are cached
    # (None until preflight resolves it: K = max_epochs by default; 0 = online teacher).
    augment_views: int | None = None
    train: dict[str, Any] = field(default_factory=dict)      # TrainConfig fields for every stage
    teacher: dict[str, Any] = field(default_factory=dict)    # TeacherConfig fields
    teacher_checkpoint: str | None = None                    # skip the teacher stage
    students: tuple[str, ...] = ("mlp",)
    methods: tuple[str, ...] = ("kd",)                       # KD methods searched (trainables.losses)
    space: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None                      # grid sweep instead of a search
    chain: tuple[str, ...] | None = None                     # teacher, assistant, student (TAKD)
    # Budget and resources: declared (default, range, flag, smoke cap) in search/input/schema.py.
    num_samples: int = schema.default("num_samples")
    baseline_samples: int = schema.default("baseline_samples")
    max_epochs: int = schema.default("max_epochs")
    grace_period: int = schema.default("grace_period")
    reduction_factor: int = schema.default("reduction_factor")
    max_concurrent: int = schema.default("max_concurrent")
    objective: str = schema.default("objective")
    final_top_k: int = schema.default("final_top_k")
    final_seeds: int = schema.default("final_seeds")
    cpus_per_trial: float = schema.default("cpus_per_trial")
    gpus_per_trial: float = schema.default("gpus_per_trial")
    teacher_workers: int = schema.default("teacher_workers")
    final_workers: int = schema.default("final_workers")
    storage_path: str = "kdtune_results"
    name: str = ""
    resume: bool = False
    address: str | None = None
    max_failures: int = 2
    smoke_test: bool = False
    tracker: str | None = None                               # mlflow | wandb (search/tune/trackers.py)
    warm_start: str | None = None                            # a finished experiment seeding the samplers
    verbose: bool = False                                    # Ray's own tables instead of progress lines
    imports: tuple[str, ...] = ()                            # --import: user modules/files (user_imports.py)
    max_params: int | None = None                            # size budget the sampler holds (SizeBudget)
    max_flops: int | None = None                             # FLOPs per image, FlopCounterMode's count
    data_shape: tuple | None = None                          # (num_classes, in_shape): set by preflight

    def size_budget(self):
        """The sampler's SizeBudget, or None without --max-params / --max-flops."""
        if self.max_params is None and self.max_flops is None:
            return None
        from kdtune.search.tune.search_spaces import SizeBudget

        if self.data_shape is None:
            raise RuntimeError("size budget used before preflight recorded the data shape")
        num_classes, in_shape = self.data_shape
        return SizeBudget(num_classes, in_shape, self.max_params, self.max_flops)

    # ---- derived -------------------------------------------------------------------------
    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name

    def data_fields(self) -> dict[str, Any]:
        """Config keys naming the data, identical for every stage."""
        fields = {"dataset": self.dataset, "data_dir": self.data_dir, "val_fraction": self.val_fraction,
                  "seed": self.seed, "subset": self.subset}
        if self.image_size is not None:
            fields["image_size"] = self.image_size
        return fields

    def teacher_config(self) -> dict[str, Any]:
        """The config dict of the teacher trial (TeacherConfig keys)."""
        workers = {"workers": self.teacher_workers} if self.teacher_workers > 1 else {}
        return {**self.data_fields(), **self.train, **self.teacher, **workers}

    def student_bundle(self, bundle):
        """The dataset as the students train on it: under `train.augment` when it is set."""
        return bundle.with_augment(self.train.get("augment"), self.train.get("augment_pixels"))

    @property
    def online(self) -> bool:
        """Online distillation: the teacher trains inside every distillation trial."""
        return bool(self.train.get("online_teacher"))

    def student_constants(self, teacher_checkpoint: str | None, distill: bool = True) -> dict[str, Any]:
        """Keys every baseline/distillation trial shares; the space adds the sampled ones."""
        const = {**self.data_fields(), **self.train, "epochs": self.max_epochs}
        if self.augment_views:  # baseline too: both train on the same augmented views
            const["augment_views"] = self.augment_views
        if not distill:  # the baseline trains no teacher, online or not
            for key in ONLINE_KEYS:
                const.pop(key, None)
        if teacher_checkpoint is not None:
            const["teacher_checkpoint"] = teacher_checkpoint
        return const

    def needs_teacher(self) -> bool:
        """Is there a teacher stage? Not for online runs; for a sweep only when a point distils."""
        from kdtune.search.stages import sweep

        return not self.online and sweep.needs_teacher(self.sweep, self.student_constants(None))

    def planned_stages(self) -> tuple[str, ...]:
        """The stages this run goes through, in order."""
        stages = ("teacher",) if self.needs_teacher() else ()
        if self.sweep:
            return stages + ("sweep",)
        stages += ("baseline", "distill") + (("assistant", "ta_distill") if self.chain else ())
        return stages + (("final",) if self.final_seeds > 0 else ())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["students"] = list(self.students)
        out["methods"] = list(self.methods)
        out["chain"] = list(self.chain) if self.chain else None
        out["imports"] = list(self.imports)
        out["data_shape"] = [self.data_shape[0], list(self.data_shape[1])] if self.data_shape else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["students"] = tuple(values.get("students", ("mlp",)))
        values["methods"] = tuple(values.get("methods", ("kd",)))
        if values.get("chain"):
            values["chain"] = tuple(values["chain"])
        values["imports"] = tuple(values.get("imports") or ())
        if values.get("data_shape"):
            values["data_shape"] = (int(values["data_shape"][0]), tuple(values["data_shape"][1]))
        return cls(**values)

    def chain_links(self) -> list[dict[str, Any]]:
        """The parsed chain (teacher, assistant, ..., student), or [] without one."""
        from kdtune.search.tune.search_spaces import parse_link

        return [parse_link(link) for link in self.chain or ()]


def parse_views(value: Any) -> int | None:
    """--augment-views / search.augment_views: K >= 1 views, 0 or "online" (0), None (default)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "online":
        return 0
    try:
        views = int(value)
        if views != float(value) or views < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"--augment-views takes a number of views K >= 1, or 0 / online for the "
                         f"online teacher; got {value!r}") from None
    return views


def _accepted_kwargs(model: str) -> set[str]:
    """Keyword options of a registered model (empty for an unknown name: validation reports it)."""
    from kdtune.models.registry import model_kwargs

    try:
        return set(model_kwargs(model))
    except ValueError:
        return set()


def _methods(methods: Any, given: Mapping[str, Any]) -> tuple[str, ...]:
    """The KD methods, checked; a KD flag that none of them reads is refused, not ignored."""
    from kdtune.search.tune import search_spaces as spaces

    from kdtune.search.input.errors import UsageError

    methods = [methods] if isinstance(methods, str) else list(methods)
    try:
        spaces.check_methods(methods)
    except ValueError as exc:  # a user's --methods / preset value: the one-line refusal
        raise UsageError(str(exc)) from None
    reads = spaces.method_dims(methods)
    for dim in ("alpha", "temperature"):
        if dim in given and dim not in reads:
            users = [m for m in _all_methods() if dim in spaces.method_dims([m])]
            raise UsageError(f"--{dim} applies to KD methods {', '.join(users)}; "
                             f"--methods {','.join(methods)} uses none of them")
    return tuple(methods)


def _all_methods() -> list[str]:
    from kdtune.trainables.losses import list_losses

    return list_losses()


def build_spec(preset: Mapping[str, Any], preset_name: str, flags: Mapping[str, Any]) -> SearchSpec:
    """Merge a loaded preset with command-line flags (flags win; None means "not given")."""
    search = dict(preset.get("search", {}))
    resources = dict(preset.get("resources", {}))
    teacher = dict(preset.get("teacher", {}))
    space = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(preset.get("space", {})).items()}
    given = {k: v for k, v in flags.items() if v is not None}
    # User modules first: the names below (teacher, students, methods) may be theirs.
    from kdtune.search.input import user_imports

    imports = user_imports.resolve([*(preset.get("imports") or []), *(given.get("imports") or [])])
    user_imports.load(imports)

    if "teacher" in given and given["teacher"] != teacher.get("model"):
        # A different teacher architecture: the preset's sizes belonged to the old one; its
        # options (freeze_backbone, dropout, ...) stay where the new model takes them.
        accepted = _accepted_kwargs(given["teacher"])
        kwargs = {k: v for k, v in teacher.get("model_kwargs", {}).items() if k in accepted}
        teacher = {k: v for k, v in teacher.items() if k not in ("depth", "width", "model_kwargs")}
        teacher.update(model=given["teacher"], model_kwargs=kwargs)
    for dim in ("alpha", "temperature", "lr", "depth", "width"):
        if dim in given:
            value = given[dim]
            if isinstance(value, Mapping) and isinstance(space.get(dim), Mapping):
                value = {**space[dim], **value}  # per-family flags replace only the families they name
            space[dim] = value
    if "teacher_epochs" in given:
        teacher["epochs"] = given["teacher_epochs"]
    if "teacher_weights" in given:
        teacher["model_kwargs"] = {**teacher.get("model_kwargs", {}), "weights_path": given["teacher_weights"]}
    train = dict(preset.get("train", {}))
    for section, key in ((train, "augment"), (teacher, "teacher_augment")):
        if key in given:  # (name, pixels) from the CLI; pixels None = the augmentation's default
            section["augment"], section["augment_pixels"] = given[key]
    sweep = preset.get("sweep")
    chain = given.get("chain", preset.get("chain"))
    if chain:
        # The first link is the teacher: it replaces the preset's teacher architecture.
        from kdtune.search.tune.search_spaces import parse_link

        head = parse_link(chain[0])
        teacher = {k: v for k, v in teacher.items() if k not in ("model", "depth", "width", "model_kwargs")}
        teacher.update(head)

    values: dict[str, Any] = {
        "preset": preset_name,
        "dataset": given.get("dataset", preset.get("dataset", "digits")),
        "data_dir": given.get("data_dir", preset.get("data_dir")),
        "image_size": given.get("image_size", preset.get("image_size")),
        "resident_max_mb": given.get("resident_max_mb"),
        "store_dir": str(Path(given["store_dir"]).expanduser().resolve()) if given.get("store_dir") else None,
        "decode_workers": given.get("decode_workers"),
        "download": bool(given.get("download", True)),
        "val_fraction": given.get("val_fraction", preset.get("val_fraction", 0.1)),
        "seed": given.get("seed", preset.get("seed", 0)),
        "subset": given.get("subset", preset.get("subset")),
        "augment_views": parse_views(given.get("augment_views", search.get("augment_views"))),
        "train": train,
        "teacher": teacher,
        "teacher_checkpoint": given.get("teacher_checkpoint", preset.get("teacher_checkpoint")),
        "students": tuple(given.get("students", preset.get("students", ["mlp"]))),
        "methods": _methods(given.get("methods", preset.get("methods", ["kd"])), given),
        "space": space,
        "sweep": sweep,
        "chain": tuple(chain) if chain else None,
        "storage_path": given.get("storage_path", "kdtune_results"),
        "resume": bool(given.get("resume", False)),
        # RAY_ADDRESS is how `ray job submit` points an entrypoint at its cluster.
        "address": given.get("address") or os.environ.get("RAY_ADDRESS") or None,
        "max_failures": given.get("max_failures", 2),
        "smoke_test": bool(given.get("smoke_test", False)),
        "tracker": given.get("tracker"),
        "warm_start": str(Path(given["warm_start"]).expanduser().resolve()) if given.get("warm_start") else None,
        "verbose": bool(given.get("verbose", False)),
        "imports": tuple(imports),
        "max_params": given.get("max_params", preset.get("max_params")),
        "max_flops": given.get("max_flops", preset.get("max_flops")),
    }
    for option in schema.OPTIONS:  # a flag over the preset's section over the declared default
        section = search if option.section == "search" else resources
        if option.name in given or option.name in section:
            values[option.name] = given.get(option.name, section.get(option.name))
    if values["smoke_test"]:
        # The limits cap the preset's budget; a flag the user gave wins (--smoke-test
        # --num-samples 6 runs 6 trials: an option is never accepted and then ignored).
        for key in schema.smoke_limits():
            if key not in given:
                values[key] = min(values.get(key, SMOKE[key]), SMOKE[key])
        if "subset" not in given:
            values["subset"] = min(values["subset"] or SMOKE["subset"], SMOKE["subset"])
        if "teacher_epochs" not in given:
            values["teacher"] = {**values["teacher"], "epochs": SMOKE["teacher_epochs"]}
        if sweep:  # first value of every axis, at most two variants
            grid = {k: ({n: v[:1] for n, v in vals.items()} if isinstance(vals, dict) else vals[:1])
                    for k, vals in sweep.get("grid", {}).items()}
            values["sweep"] = {**sweep, "grid": grid, "variants": list(sweep.get("variants", []))[:2]}
    values["name"] = given.get("name") or f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return SearchSpec(**values)
