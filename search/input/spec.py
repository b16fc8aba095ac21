"""SearchSpec: one resolved description of a kdtune run (a preset with the user's flags on top).

The spec is what the manifest records and what `--resume` re-reads, so it holds plain data
only. It also derives the per-stage trainable configs, so the keys sent to a trial are built
in one place.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping

from kdtune.search.input import options
from kdtune.search.input.schema import Option
from kdtune.search.record.stage_names import ASSISTANT, BASELINE, DISTILL, FINAL, SWEEP, TA_DISTILL, TEACHER

ONLINE_KEYS = ("online_teacher", "online_teacher_kwargs")


class SpecBase:
    """What a SearchSpec derives from its fields. Its fields are the structural ones below and
    one per run option that is not a key of a dict section (search/input/options/: its name,
    default and meaning); spec_class builds the frozen dataclass from that table.

    Structural fields: preset's train (TrainConfig fields for every stage), teacher
    (TeacherConfig fields), space (the search dimensions), sweep (a grid sweep instead of a
    search), and data_shape ((num_classes, in_shape), set by preflight for the size budget).
    """

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
        stages = (TEACHER,) if self.needs_teacher() else ()
        if self.sweep:
            return stages + (SWEEP,)
        stages += (BASELINE, DISTILL) + ((ASSISTANT, TA_DISTILL) if self.chain else ())
        return stages + ((FINAL,) if self.final_seeds > 0 else ())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (tuples as lists), as the manifest records it."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["data_shape"] = [self.data_shape[0], list(self.data_shape[1])] if self.data_shape else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SpecBase":
        """The spec of a manifest; a field it lacks (written before the field existed) takes its default."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for o in options.OPTIONS:  # JSON keeps tuples as lists
            if isinstance(values.get(o.name), list):
                values[o.name] = tuple(values[o.name])
        if values.get("data_shape"):
            values["data_shape"] = (int(values["data_shape"][0]), tuple(values["data_shape"][1]))
        return cls(**values)

    def chain_links(self) -> list[dict[str, Any]]:
        """The parsed chain (teacher, assistant, ..., student), or [] without one."""
        from kdtune.search.tune.search_spaces import parse_link

        return [parse_link(link) for link in self.chain or ()]


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


def spec_fields(table: tuple[Option, ...]) -> list[Option]:
    """The options that are SearchSpec fields (the rest edit its train / teacher / space dicts)."""
    return [o for o in table if not o.in_dict_section]


@functools.lru_cache(maxsize=4)
def spec_class(table: tuple[Option, ...]) -> type:
    """The frozen SearchSpec dataclass of an option table: the structural fields, then one
    field per option with its declared default. Built once per table (a test's extended table
    gets its own class); named SearchSpec in this module, so a spec pickles by reference."""
    structural = [
        ("train", dict, field(default_factory=dict)),
        ("teacher", dict, field(default_factory=dict)),
        ("space", dict, field(default_factory=dict)),
        ("sweep", Any, field(default=None)),
        ("data_shape", Any, field(default=None)),
    ]
    fields = structural + [(o.name, Any, field(default=o.default)) for o in spec_fields(table)]
    return dataclasses.make_dataclass("SearchSpec", fields, bases=(SpecBase,), frozen=True,
                                      namespace={"__module__": __name__})


SearchSpec = spec_class(options.OPTIONS)


def _preset_value(preset: Mapping[str, Any], o: Option) -> tuple[bool, Any]:
    """(whether the preset sets `o`, its value there)."""
    node: Any = preset
    for key in o.preset_parts:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return bool(o.preset_parts), node


def _merged(o: Option, preset: Mapping[str, Any], given: Mapping[str, Any]) -> Any:
    """A spec field's value: the flag over the preset over the declared default."""
    found, preset_value = _preset_value(preset, o)
    if o.name in given:
        value = o.merge(preset_value, given[o.name]) if (found and o.merge) else given[o.name]
    else:
        value = preset_value if found else o.default
    return o.finish(value)


def _place(values: dict[str, Any], o: Option, value: Any) -> None:
    """A flag's value into its dict section (copied on the way: the preset stays as read)."""
    head, *keys = o.preset_parts
    section = values[head] = dict(values[head])
    if o.write is not None:
        o.write(section, value)
        return
    for key in keys[:-1]:
        section[key] = dict(section.get(key) or {})
        section = section[key]
    last = keys[-1]
    section[last] = o.merge(section[last], value) if (o.merge and last in section) else value


def _smoke_caps(values: dict[str, Any], table: tuple[Option, ...], given: Mapping[str, Any]) -> None:
    """--smoke-test caps what the preset and the defaults say; a flag the user gave wins
    (--smoke-test --num-samples 6 runs 6 trials: an option is never accepted and then ignored)."""
    for o in table:
        if o.smoke is None or o.name in given:
            continue
        current = o.read(values)
        capped = o.smoke if current is None else min(current, o.smoke)
        if o.in_dict_section:
            _place(values, o, capped)
        else:
            values[o.name] = capped


def build_spec(preset: Mapping[str, Any], preset_name: str, flags: Mapping[str, Any]):
    """Merge a loaded preset with command-line flags (flags win; None means "not given").

    Every option goes by its declaration (search/input/options/); what is left here is
    between options: user modules loaded first, the methods' own flags, the chain's teacher,
    the smoke caps of the sweep grid, and the run's default name."""
    table = options.OPTIONS
    given = {k: v for k, v in flags.items() if v is not None}
    # User modules first: the names below (teacher, students, methods) may be theirs.
    from kdtune.search.input import user_imports

    imports = options.by_name()["imports"]
    loaded = _merged(imports, preset, given)  # resolved once: the spec records these same entries
    user_imports.load(loaded)

    values: dict[str, Any] = {
        "train": dict(preset.get("train", {})),
        "teacher": dict(preset.get("teacher", {})),
        "space": {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(preset.get("space", {})).items()},
        "sweep": preset.get("sweep"),
    }
    for o in table:  # in the table's order: --teacher's architecture swap before --teacher-weights
        if not o.in_dict_section:
            values[o.name] = loaded if o is imports else _merged(o, preset, given)
        elif o.name in given:  # else the preset's section holds it, or the config's default applies
            _place(values, o, given[o.name])
    values["preset"] = preset_name
    values["methods"] = _methods(values["methods"], given)
    if values["chain"]:
        # The first link is the teacher: it replaces the preset's teacher architecture.
        from kdtune.search.tune.search_spaces import parse_link

        head = parse_link(values["chain"][0])
        teacher = {k: v for k, v in values["teacher"].items() if k not in ("model", "depth", "width", "model_kwargs")}
        values["teacher"] = {**teacher, **head}
    if values["smoke_test"]:
        _smoke_caps(values, table, given)
        sweep = values["sweep"]
        if sweep:  # first value of every axis, at most two variants
            grid = {k: ({n: v[:1] for n, v in vals.items()} if isinstance(vals, dict) else vals[:1])
                    for k, vals in sweep.get("grid", {}).items()}
            values["sweep"] = {**sweep, "grid": grid, "variants": list(sweep.get("variants", []))[:2]}
    values["name"] = given.get("name") or f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return spec_class(table)(**values)
