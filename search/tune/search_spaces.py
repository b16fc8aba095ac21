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
(the DistillConfig fields its loss declares: kd alpha, temperature, logit_standardize; dkd
dkd_alpha, dkd_beta, dkd_temperature, dkd_warmup, logit_standardize; dist dist_beta,
dist_gamma, dist_temperature; mse alpha). With the one method `kd` the calls to Optuna are exactly those of a
search without methods, so a seeded search samples the same configs as before.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from kdtune.search.input.errors import UsageError
from kdtune.trainables.losses import list_losses, method_fields

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
#   alpha         weight of the soft term in (1 - alpha) * CE + alpha * T^2 * KL, unitless;
#                 0 is the baseline stage's own, 1 drops the labels.
#   temperature   softmax temperature T of both teacher and student, unitless; Hinton et al.
#                 used up to 20 on MNIST, CIFAR recipes use 4; below 1 sharpens (not useful).
FLOAT_DIMS: dict[str, tuple[tuple[float, float], bool]] = {
    "lr": ((0.005, 0.3), True),
    "weight_decay": ((1e-6, 1e-3), True),
    "alpha": ((0.0, 1.0), False),
    "temperature": ((1.0, 10.0), False),
}
KD_DIMS = ("alpha", "temperature")
SIZE_DIMS = ("depth", "width")
# Hyperparameters of one KD method each: (default range or pinned value, log scale?). The
# defaults bracket the reference settings (trainables/losses/*.py docstrings cite them);
# presets narrow or pin them per teacher/student pair.
METHOD_DIMS: dict[str, tuple[Any, bool]] = {
    # DKD TCKD weight: mdistiller's 1.0 for every CIFAR-100 pair; DKD+LS (Sun et al. 2024)
    # trains at 9x (alpha 9): log scale up to 20 so a search reaches it.
    "dkd_alpha": ((0.5, 20.0), True),
    # DKD NCKD weight: mdistiller's CIFAR-100 configs use 2 (resnet56 -> resnet20) to 8
    # (default, resnet32x4 -> resnet8x4); DKD+LS uses 9x (up to 72); log scale, the ratio
    # is what matters.
    "dkd_beta": ((1.0, 100.0), True),
    # DKD warm-up in epochs: pinned, mdistiller's 20 fits 240-epoch runs; presets set ~1/12
    # of their max_epochs.
    "dkd_warmup": (20, False),
    # DKD temperature: mdistiller's 4 for every CIFAR-100 pair, 1 on ImageNet. Its own
    # dimension, not kd's: T^2 * beta * NCKD at T = 20 is ~1e3 x CE and diverges.
    "dkd_temperature": ((1.0, 4.0), False),
    # DIST inter/intra weights: 2, the official recipes' (ImageNet and CIFAR-100).
    "dist_beta": ((0.5, 4.0), True),
    "dist_gamma": ((0.5, 4.0), True),
    # DIST tau: official 1 (ImageNet), CIFAR-100 ports 4.
    "dist_temperature": ((1.0, 4.0), False),
    # Logit standardisation (kd, kd_weighted, dkd): off = the original losses; [false, true]
    # searches it.
    "logit_standardize": (False, False),
    # kd_weighted: free CE and KD weights (log: ratios matter). Sun et al.'s KD+LS setting
    # (CE 0.1 or 1, KD 9, T 2) is inside; kd's alpha stops at a 19:1 ratio at alpha 0.95.
    "kdw_ce_weight": ((0.05, 2.0), True),
    "kdw_kd_weight": ((0.5, 20.0), True),
    "kdw_temperature": ((1.0, 8.0), False),
    # Feature methods: the feature term's weight, log-sampled over about two decades around
    # the reference value (mdistiller CIFAR-100 configs: fitnet 100, at 1000, sp 3000,
    # pkt 30000, rkd 1, crd 0.8, reviewkd 1); the structural settings are pinned at the
    # references' (trainables/losses/<method>.py).
    "fitnet_weight": ((10.0, 1000.0), True),
    "fitnet_stage": (2, False),
    "at_weight": ((100.0, 10000.0), True),
    "at_p": (2.0, False),
    "sp_weight": ((300.0, 30000.0), True),
    "pkt_weight": ((3000.0, 300000.0), True),
    "rkd_weight": ((0.1, 10.0), True),
    "rkd_distance_weight": (25.0, False),
    "rkd_angle_weight": (50.0, False),
    "crd_weight": ((0.1, 8.0), True),
    # K = 16384 is the reference; a (B, K+1, 128) gather per bank per batch is 0.5 GB at
    # B = 64, so CPU presets pin it lower (the NCE term is normalised by K/N either way).
    "crd_negatives": (16384, False),
    "crd_temperature": (0.07, False),
    "crd_momentum": (0.5, False),
    "crd_dim": (128, False),
    "reviewkd_weight": ((0.1, 10.0), True),
    # ReviewKD warm-up in epochs: pinned like dkd_warmup (20 of mdistiller's 240).
    "reviewkd_warmup": (20, False),
}
INT_METHOD_DIMS = ("dkd_warmup", "fitnet_stage", "crd_negatives", "crd_dim", "reviewkd_warmup")
TEMPERATURE_DIMS = ("temperature", "dkd_temperature", "dist_temperature", "kdw_temperature",
                    "crd_temperature")  # must be > 0
BOOL_DIMS = ("logit_standardize",)
DIMENSIONS = tuple(FLOAT_DIMS) + SIZE_DIMS + tuple(METHOD_DIMS)
DEFAULT_METHODS = ("kd",)

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
    unknown = set(space) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown search dimension(s) {sorted(unknown)}; known: {list(DIMENSIONS)}")
    for name, (_default, log) in METHOD_DIMS.items():
        if name not in space:
            continue
        if name in BOOL_DIMS:
            value = space[name]
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if not values or not all(isinstance(v, bool) for v in values):
                raise ValueError(f"{name}: expected true, false or [false, true], got {value!r}")
            continue
        _check_dim(name, space[name], log, integer=name in INT_METHOD_DIMS)
        if _bounds(space[name])[0] < 0:
            raise ValueError(f"{name} must be >= 0, got {space[name]}")
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
    for name, lo_ok, hi_ok in (("alpha", 0.0, 1.0),):
        lo, hi = _bounds(space.get(name, FLOAT_DIMS[name][0]))
        if lo < lo_ok or hi > hi_ok:
            raise ValueError(f"alpha must lie in [0, 1], got {space[name]}")
    for name in TEMPERATURE_DIMS:
        default = FLOAT_DIMS[name][0] if name in FLOAT_DIMS else METHOD_DIMS[name][0]
        if _bounds(space.get(name, default))[0] <= 0:
            raise ValueError(f"{name} must be > 0, got {space[name]}")


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
        for name in FLOAT_DIMS:
            if name not in KD_DIMS:  # lr, weight_decay: every stage
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
        if name in FLOAT_DIMS:
            default, log = FLOAT_DIMS[name]
        else:
            default, log = METHOD_DIMS[name]
            if name not in self.space and not is_range(default):
                return
        value = self.space.get(name, default)
        if name in BOOL_DIMS:
            choices = sorted(set(value)) if isinstance(value, (list, tuple)) else [value]
            if len(choices) > 1:
                trial.suggest_categorical(name, choices)
            else:
                fixed[name] = bool(choices[0])
        elif is_range(value) and value[0] != value[1]:
            if name in INT_METHOD_DIMS:
                trial.suggest_int(name, int(value[0]), int(value[1]))
            else:
                trial.suggest_float(name, float(value[0]), float(value[1]), log=log)
        else:
            pinned = value[0] if is_range(value) else value
            fixed[name] = int(pinned) if name in INT_METHOD_DIMS else float(pinned)


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
