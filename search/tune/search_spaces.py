"""Search spaces: what Optuna samples for the baseline and distillation stages.

Every key a space produces is a field name of `trainables.config.DistillConfig`, so a sampled
config goes to the trainable unchanged. Spaces are Optuna *define-by-run* functions because
depth and width mean different things per student family (an MLP's hidden layers vs a CIFAR
ResNet's 6n+2 layers), so their ranges depend on the sampled `model`.

A dimension in a preset or on the command line is either one value (pinned: passed as a
constant, never sampled) or a `[lo, hi]` range. `depth` and `width` may also be a mapping
family -> value/range; `logit_standardize` is false, true or `[false, true]` (searched).

KD methods (`methods`, names from trainables.losses.list_losses()): with several, the
distillation stage samples `kd_method` first and then only that method's own hyperparameters
(the Hyperparameter declarations of its loss, trainables/losses/hyperparameters.py: kd alpha,
temperature, logit_standardize; dkd dkd_alpha, dkd_beta, dkd_temperature, dkd_warmup,
logit_standardize; dist dist_beta, dist_gamma, dist_temperature; mse alpha). Each is sampled
over its declared `search` range on its declared scale, or pinned at its declared default, unless
a preset or flag narrows or pins it; nothing about a method is written in this module, so a
method registered later is searchable as it is. With the one method `kd` the calls to Optuna
are exactly those of a search without methods, so a seeded search samples the same configs.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from kdtune.search.input.errors import UsageError
from kdtune.trainables.losses import Hyperparameter, all_hyperparameters, list_losses, method_fields

# Student families the search knows how to size; each model takes `depth` and `width`.
# Defaults when neither preset nor flag bounds them:
#   mlp           depth = hidden layers, 1-4 (a 2x800 net is Hinton et al.'s MNIST student;
#                 deeper plain MLPs stop training well, see the mlp_depth_sweep preset);
#                 width = units per hidden layer, 16-1024 (log-sampled: 1200 is their teacher).
#   cifar_resnet  depth = layers, 6n+2 (He et al. 2016), so it moves in steps of 6: 8-56 spans
#                 resnet8 .. resnet56, the usual CIFAR teacher; width = channels of the first
#                 of three stages (16 in the paper's nets, 64 = the "x4" nets of RepDistiller).
# depth_start: the smallest depth the family builds (cifar_resnet: n >= 1, so 8).
FAMILIES: dict[str, dict[str, Any]] = {
    "mlp": {"depth": (1, 4), "width": (16, 1024), "depth_step": 1, "depth_start": 1},
    "cifar_resnet": {"depth": (8, 56), "width": (8, 64), "depth_step": 6, "depth_start": 8},
}
# Continuous dimensions: (default range, sampled on a log scale?). Presets narrow them.
#   lr            peak learning rate of the schedule (cosine decays from it), for SGD with
#                 Nesterov momentum 0.9 at batch 64-128: the CIFAR ResNet recipe's 0.1 at batch
#                 128 (He et al. 2016) sits inside, about a decade either side. Scale it with the
#                 batch size (linear rule, Goyal et al. 2017) when `train.batch_size` changes;
#                 Adam/AdamW want ~1e-3, so pin or bound `--lr` for them.
#   weight_decay  L2 coefficient per step (SGD adds wd * w to the gradient; AdamW shrinks w by
#                 lr * wd): 5e-4 (CIFAR KD recipes) and 1e-4 (He et al.) are inside.
# Every stage samples these; the KD methods' own dimensions are their losses' declarations.
FLOAT_DIMS: dict[str, tuple[tuple[float, float], bool]] = {
    "lr": ((0.005, 0.3), True),
    "weight_decay": ((1e-6, 1e-3), True),
}
SIZE_DIMS = ("depth", "width")
DEFAULT_METHODS = ("kd",)


def method_dims_declared() -> dict[str, Hyperparameter]:
    """Every registered KD method's hyperparameters by key (the registry's, read when asked,
    so a method registered after import is included)."""
    return all_hyperparameters()


def dimensions() -> tuple[str, ...]:
    """Every key a space may mention."""
    return tuple(FLOAT_DIMS) + SIZE_DIMS + tuple(method_dims_declared())


def is_log(name: str) -> bool:
    """Is dimension `name` sampled on a log scale? (width always is)"""
    if name in FLOAT_DIMS:
        return FLOAT_DIMS[name][1]
    declared = method_dims_declared().get(name)
    return bool(declared and declared.log) or name == "width"

Dim = Any  # a pinned number, or a (lo, hi) pair


def is_range(value: Dim) -> bool:
    """True for a [lo, hi] range, False for a pinned value."""
    return isinstance(value, (list, tuple)) and len(value) == 2


def parse_dim(text: str) -> Dim:
    """Parse a command-line dimension: "0.5" pins it, "0.1:0.9" bounds it."""
    if ":" in text:
        lo, hi = text.split(":", 1)
        return (_number(lo), _number(hi))
    return _number(text)


def parse_size_dim(text: str) -> Dim | dict[str, Dim]:
    """Parse --depth/--width: one value or LO:HI for every family, or per family as
    FAMILY=VALUE_OR_LO:HI,... ("mlp=1:3,cifar_resnet=8:20"): the families' scales differ
    (an MLP's hidden layers, a CIFAR ResNet's 6n+2 layers), so one range rarely fits both."""
    if "=" not in text:
        return parse_dim(text)
    out: dict[str, Dim] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        family, sep, value = part.partition("=")
        family = family.strip()
        if not sep or family not in FAMILIES:
            raise ValueError(f"{part!r}: expected FAMILY=LO:HI with FAMILY one of {', '.join(FAMILIES)}")
        if family in out:
            raise ValueError(f"family {family!r} is given twice")
        out[family] = parse_dim(value)
    if not out:
        raise ValueError(f"no FAMILY=LO:HI entry in {text!r}")
    return out


def _number(text: str) -> float | int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a number: {text!r} (use a value like 0.5 or a range like 0.1:0.9)")


def family_dim(space: Mapping[str, Any], name: str, family: str) -> Dim:
    """The depth/width setting for one family: preset per-family value, shared value, or default."""
    value = space.get(name)
    if isinstance(value, Mapping):
        value = value.get(family)
    return FAMILIES[family][name] if value is None else value


def check_methods(methods: Sequence[str]) -> None:
    """Every name must be a registered KD method, each given once."""
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of KD methods; known: {', '.join(list_losses())}")
    unknown = [m for m in methods if m not in list_losses()]
    if unknown:
        raise ValueError(f"unknown KD method(s) {', '.join(map(repr, unknown))}; known: {', '.join(list_losses())}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods lists a KD method twice: {', '.join(methods)}")


def method_dims(methods: Sequence[str]) -> set[str]:
    """The search dimensions some method of `methods` reads."""
    return {name for m in methods for name in method_fields(m)}


def check_space(space: Mapping[str, Any], students: Sequence[str]) -> None:
    """Reject ranges that cannot be sampled, with a message naming the dimension."""
    unknown = set(space) - set(dimensions())
    if unknown:
        raise ValueError(f"unknown search dimension(s) {sorted(unknown)}; known: {list(dimensions())}")
    for name, hp in method_dims_declared().items():
        if name not in space:
            continue
        value = space[name]
        if not hp.numeric:
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if hp.kind == "bool" and (not values or not all(isinstance(v, bool) for v in values)):
                raise ValueError(f"{name}: expected true, false or [false, true], got {value!r}")
            for v in values:
                hp.check(v)
            continue
        _check_dim(name, value, hp.log, integer=hp.kind == "int")
        for bound in _bounds(value):  # the declared valid range, e.g. alpha in [0, 1], T > 0
            try:
                hp.check(bound)
            except ValueError:
                if hp.low is None or hp.high is None:
                    raise
                raise ValueError(f"{name} must lie in {hp.bounds_text()}, got {value}") from None
    for family in students:
        if family not in FAMILIES:
            raise ValueError(f"unknown student family {family!r}; searchable families: {sorted(FAMILIES)}")
    for name, ((_lo, _hi), log) in FLOAT_DIMS.items():
        if name in space:
            _check_dim(name, space[name], log)
    for name in SIZE_DIMS:
        if isinstance(space.get(name), Mapping):
            strangers = sorted(set(space[name]) - set(FAMILIES))
            if strangers:
                raise ValueError(f"{name}: unknown student family {strangers}; families: {sorted(FAMILIES)}")
    for name in SIZE_DIMS:
        for family in students:
            _check_dim(f"{name} ({family})", family_dim(space, name, family), log=True, integer=True)
    for family in students:  # a depth off the family's grid would fail only when sampled
        lo, hi = _bounds(family_dim(space, "depth", family))
        _depth_grid(family, int(lo), int(hi))


def _bounds(value: Dim) -> tuple[float, float]:
    return (value[0], value[1]) if is_range(value) else (value, value)


def _check_dim(name: str, value: Dim, log: bool, integer: bool = False) -> None:
    if isinstance(value, bool) or not (is_range(value) or isinstance(value, (int, float))):
        raise ValueError(f"{name}: expected a number or [lo, hi], got {value!r}")
    lo, hi = _bounds(value)
    if lo > hi:
        raise ValueError(f"{name}: empty range {lo}:{hi} (lo must be <= hi)")
    if log and lo <= 0:
        raise ValueError(f"{name}: must be > 0, got {value}")
    if integer and (int(lo) != lo or int(hi) != hi):
        raise ValueError(f"{name}: expected whole numbers, got {value}")


def _depth_grid(family: str, lo: int, hi: int) -> tuple[int, int, int]:
    """Snap a depth range onto the family's grid (cifar_resnet: 6n+2) -> (lo, hi, step)."""
    step, start = FAMILIES[family]["depth_step"], FAMILIES[family]["depth_start"]
    first = max(lo, start)
    first += (start - first) % step
    last = hi - (hi - start) % step
    if first > last:
        raise ValueError(f"depth range {lo}:{hi} holds no valid {family} depth ({start}, {start + step}, ...); "
                         "give each family its own range, e.g. --depth mlp=1:3,cifar_resnet=8:20")
    return first, last, step


class DefineByRun:
    """The define-by-run function OptunaSearch calls for every new trial.

    A class rather than a closure because Ray pickles the searcher with the experiment state
    (that is what makes `--resume` restore the Optuna study).
    `constants` (dataset, epochs, teacher checkpoint, ...) are returned unchanged; pinned
    dimensions join them. With distill=False the KD dimensions are fixed to alpha = 0: the
    undistilled baseline over the same student architectures and optimiser ranges.
    `methods`: the KD methods of the distillation stage (see the module docstring).
    """

    methods: Sequence[str] = DEFAULT_METHODS  # searchers pickled before methods existed

    def __init__(self, space: Mapping[str, Any], students: Sequence[str], constants: Mapping[str, Any],
                 distill: bool, architecture: Mapping[str, Any] | None = None,
                 methods: Sequence[str] = DEFAULT_METHODS):
        # architecture: a pinned student (a teacher-assistant chain link); only the optimiser
        # and KD dimensions are then searched.
        check_space({k: v for k, v in space.items() if not architecture or k not in SIZE_DIMS},
                    [] if architecture else students)
        self.space, self.families = dict(space), list(students)
        self.constants, self.distill = dict(constants), distill
        self.architecture = dict(architecture) if architecture else None
        check_methods(list(methods))
        self.methods = list(methods)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        fixed: dict[str, Any] = dict(self.constants)
        if self.architecture:
            fixed.update(self.architecture)
        else:
            self._sample_size(trial, fixed)
        self._sample_training(trial, fixed)
        # Ray merges this dict over the sampled values: a constant of the same name (e.g. the
        # preset's train.weight_decay) would silently replace what Optuna sampled.
        for name in trial.params:
            fixed.pop(name, None)
        return fixed

    def _sample_size(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        space, families = self.space, self.families
        family = trial.suggest_categorical("model", families) if len(families) > 1 else families[0]
        if len(families) == 1:
            fixed["model"] = family
        for name in SIZE_DIMS:
            value = family_dim(space, name, family)
            if not is_range(value):
                fixed[name] = int(value)
            elif name == "depth":
                lo, hi, step = _depth_grid(family, int(value[0]), int(value[1]))
                trial.suggest_int("depth", lo, hi, step=step)
            else:
                # log=True for every family: Optuna forbids one name with two log settings.
                trial.suggest_int("width", int(value[0]), int(value[1]), log=True)

    def _sample_training(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        for name in FLOAT_DIMS:  # lr, weight_decay: every stage
            self._sample_dim(trial, name, fixed)
        if not self.distill:
            fixed["alpha"] = 0.0
            return
        if len(self.methods) > 1:
            method = trial.suggest_categorical("kd_method", self.methods)
        else:
            method = fixed["kd_method"] = self.methods[0]
        # Only the sampled method's own hyperparameters, in its loss's declared order
        # (kd: alpha then temperature, the order of a search without methods).
        for name in method_fields(method):
            self._sample_dim(trial, name, fixed)

    def _sample_dim(self, trial: optuna.Trial, name: str, fixed: dict[str, Any]) -> None:
        """Suggest one dimension, or pin it in `fixed`. A method dimension the space does not
        mention is sampled over its default range, or, when its default is one value (the
        config's own default), left out of the config."""
        kind = "float"
        if name in FLOAT_DIMS:
            default, log = FLOAT_DIMS[name]
        else:
            hp = method_dims_declared()[name]
            default, log, kind = hp.space_default, hp.log, hp.kind
            if name not in self.space and hp.search is None:
                return  # pinned at the declared default: DistillConfig fills it in
        value = self.space.get(name, default)
        if kind in ("bool", "categorical"):
            choices = list(dict.fromkeys(value)) if isinstance(value, (list, tuple)) else [value]
            if kind == "bool":
                choices = sorted(choices)
            if len(choices) > 1:
                trial.suggest_categorical(name, choices)
            else:
                fixed[name] = choices[0]
        elif is_range(value) and value[0] != value[1]:
            if kind == "int":
                trial.suggest_int(name, int(value[0]), int(value[1]), log=log)
            else:
                trial.suggest_float(name, float(value[0]), float(value[1]), log=log)
        else:
            pinned = value[0] if is_range(value) else value
            fixed[name] = int(pinned) if kind == "int" else float(pinned)


def make_space(space: Mapping[str, Any], students: Sequence[str], constants: Mapping[str, Any],
               distill: bool, architecture: Mapping[str, Any] | None = None,
               methods: Sequence[str] = DEFAULT_METHODS) -> DefineByRun:
    """Build the define-by-run sampler of one stage (see DefineByRun)."""
    return DefineByRun(space, students, constants, distill, architecture, methods)


def parse_link(text: str) -> dict[str, Any]:
    """A chain link: a registry model ("resnet32") or a sized family ("mlp:2:128" = depth 2, width 128)."""
    name, *size = [part.strip() for part in str(text).split(":")]
    if len(size) not in (0, 2):
        raise UsageError(f"chain link {text!r}: use a model name or FAMILY:DEPTH:WIDTH (e.g. mlp:2:128)")
    link: dict[str, Any] = {"model": name}
    if size:
        try:
            link.update(depth=int(size[0]), width=int(size[1]))
        except ValueError:
            raise UsageError(f"chain link {text!r}: depth and width must be whole numbers") from None
    return link
