"""Frozen per-stage configs: the only reader of a trial's raw config dict.

A trainable's first line is `cfg = DistillConfig.from_dict(config)`. Keys are flat and are
the names search spaces use; unknown keys are rejected (a typo in a search space must not
silently train the default). Values coming from samplers (numpy ints/floats) are coerced
to Python types, so `to_dict()` is plain JSON-able data.

    python -c "from trainables.config import DistillConfig; print(DistillConfig().to_dict())"
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")
TEACHER_LOGITS = ("auto", "cached", "online")


def _freeze(value: Any) -> Any:
    """Lists/dicts -> tuples so a frozen config stays hashable."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _int(name: str, value: Any, minimum: int | None = None, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)  # 10.0 from a YAML file or a float sampler
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), list(choices), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown {name} {value!r}{extra}; known: {', '.join(choices)}")
    return value


def _check_model_kwargs(field_name: str, model: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse kwargs that model `model` does not take (a typo such as `dropuot` would
    otherwise pass every check here and fail inside the trial that builds the model)."""
    from kdtune.models.registry import model_kwargs

    accepted = set(model_kwargs(model))
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        hints = [h for key in unknown for h in difflib.get_close_matches(key, sorted(accepted), n=1)]
        hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
        raise ValueError(f"{field_name} {unknown} are not options of model {model!r}{hint}; "
                         f"it accepts: {', '.join(sorted(accepted)) or 'no kwargs'}")
    if model == "mlp":  # a bad fill name fails here, not in the trial that resolves it
        from kdtune.models.mlp import check_input_fill_name

        try:
            check_input_fill_name(kwargs.get("input_fill"))
        except ValueError as exc:
            raise ValueError(f"{field_name} {exc}") from None



def unknown_keys_error(config: str, unknown: list[str], valid: list[str]) -> ValueError:
    """One error naming every unknown key, each with its closest valid key as a hint."""
    msgs = []
    for key in unknown:
        hint = difflib.get_close_matches(str(key), valid, n=1)
        msgs.append(f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return ValueError(f"unknown {config} key(s): {', '.join(msgs)}; valid keys: {', '.join(valid)}")

@dataclass(frozen=True)
class TrainConfig:
    """Fields shared by every stage (teacher, baseline and distilled students)."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    subset: int | None = None  # keep only this many training images (quick runs)
    image_size: int | None = None  # image_folder: side length images are resized to (pixels)
    seed: int = 0
    # Augmented datasets: cycle through this many fixed augmented views per image instead of
    # a fresh one every epoch, so a frozen teacher's logits can be cached per view (FKD,
    # Shen & Xing 2022). None = a fresh view every epoch. Ignored without augmentation.
    augment_views: int | None = None
    # Training augmentation of this stage: none, crop_flip or jitter (datasets/augment.py);
    # None = the dataset's own (crop_flip for CIFAR, none for MNIST). augment_pixels is its
    # crop padding / largest shift in pixels, None = that augmentation's default (4 / 2).
    # Hinton et al. (2015) jitter the MNIST teacher's inputs, not the students'.
    augment: str | None = None
    augment_pixels: int | None = None
    # model: create_model(model, num_classes, in_shape, depth=, width=, **model_kwargs)
    model: str = "mlp"
    depth: int | None = None
    width: int | None = None
    model_kwargs: Any = field(default_factory=dict)  # stored as sorted (key, value) pairs
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()  # epochs at which `step` multiplies lr by gamma
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global L2 norm of the gradients
    # Max-norm weight constraint (Srivastava et al. 2014, used with dropout): after every
    # optimiser step each unit's incoming weight vector (a row of a Linear weight, one
    # output channel of a conv) is rescaled to L2 norm <= max_norm. None = unconstrained.
    max_norm: float | None = None
    # execution
    precision: str = "auto"  # auto = bf16 autocast where the hardware has it
    channels_last: bool | None = None  # None = on for conv nets
    track_grad_norms: bool = False
    num_threads: int | None = None  # None = the trial's CPUs
    device: str = "auto"
    # Data-parallel workers of the trial (DDP through Ray Train, trainables/distributed.py);
    # batch_size is per worker, so a step sees batch_size x workers images. 1: one process.
    workers: int = 1

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("val_fraction", _float("val_fraction", self.val_fraction))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        set_("subset", _int("subset", self.subset, 1, optional=True))
        set_("image_size", _int("image_size", self.image_size, 1, optional=True))
        set_("seed", _int("seed", self.seed, 0))
        set_("augment_views", _int("augment_views", self.augment_views, 1, optional=True))
        if self.augment is not None:
            from kdtune.datasets.augment import AUGMENTS, resolve_pixels

            _choice("augment", self.augment, AUGMENTS)
            set_("augment_pixels", _int("augment_pixels", self.augment_pixels, 1, optional=True))
            resolve_pixels(self.augment, self.augment_pixels)
        elif self.augment_pixels is not None:
            raise ValueError("augment_pixels is set but augment is not: name the augmentation "
                             "(crop_flip or jitter) the pixels are for")
        set_("depth", _int("depth", self.depth, 1, optional=True))
        set_("width", _int("width", self.width, 1, optional=True))
        if not isinstance(self.model_kwargs, (Mapping, tuple, list)):
            raise ValueError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        set_("model_kwargs", _freeze(dict(self.model_kwargs)))
        clash = {"depth", "width", "num_classes", "in_shape"} & dict(self.model_kwargs).keys()
        if clash:
            raise ValueError(f"model_kwargs must not set {sorted(clash)}: use the top-level keys")
        set_("epochs", _int("epochs", self.epochs, 1))
        set_("batch_size", _int("batch_size", self.batch_size, 1))
        set_("lr", _float("lr", self.lr))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        set_("momentum", _float("momentum", self.momentum))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        set_("weight_decay", _float("weight_decay", self.weight_decay))
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        set_("milestones", tuple(_int("milestones", m, 1) for m in self.milestones))
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones must be increasing epochs, got {self.milestones}")
        set_("gamma", _float("gamma", self.gamma))
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        set_("label_smoothing", _float("label_smoothing", self.label_smoothing))
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        set_("grad_clip", _float("grad_clip", self.grad_clip, optional=True))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        set_("max_norm", _float("max_norm", self.max_norm, optional=True))
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {self.max_norm}")
        _choice("precision", self.precision, PRECISIONS)
        set_("num_threads", _int("num_threads", self.num_threads, 1, optional=True))
        set_("workers", _int("workers", self.workers, 1))
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for flag in ("download", "nesterov", "track_grad_norms"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ValueError("channels_last must be true, false or null, "
                             f"got {self.channels_last!r}")
        self._check_registries()

    def _check_registries(self) -> None:
        from kdtune import datasets  # lazy: the registries import torch and the architectures
        from kdtune import models
        from kdtune.trainables import optim

        models.registry.resolve(self.model)  # timm:NAME / torchvision:NAME: registered on first use
        _choice("model", self.model, list(models.list_models()))
        _choice("dataset", self.dataset, list(datasets.list_datasets()))
        _check_model_kwargs("model_kwargs", self.model, dict(self.model_kwargs))
        sizes = {k: v for k, v in (("depth", self.depth), ("width", self.width)) if v is not None}
        _check_model_kwargs("depth/width", self.model, sizes)
        _choice("optimizer", self.optimizer, optim.list_optimizers())
        _choice("schedule", self.schedule, optim.list_schedules())

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "TrainConfig") -> "TrainConfig":
        """Build from a flat dict, rejecting unknown keys (with a close match if any)."""
        if isinstance(d, cls):
            return d
        if isinstance(d, TrainConfig):
            d = d.to_dict()
        valid = cls.keys()
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise unknown_keys_error(cls.__name__, unknown, valid)
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Flat dict with model_kwargs as a dict again; from_dict(to_dict()) == self."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model_kwargs"] = self.model_kwargs_dict()
        return out

    def model_kwargs_dict(self) -> dict[str, Any]:
        return dict(self.model_kwargs)

    def model_build_kwargs(self) -> dict[str, Any]:
        """kwargs for models.create_model: depth/width when set, plus model_kwargs."""
        kw = self.model_kwargs_dict()
        if self.depth is not None:
            kw["depth"] = self.depth
        if self.width is not None:
            kw["width"] = self.width
        return kw


@dataclass(frozen=True)
class TeacherConfig(TrainConfig):
    """Teacher stage: plain supervised training with the shared fields."""


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Student stage; the undistilled baseline when alpha == 0 or there is no teacher."""

    # KD method: a name from trainables.losses.list_losses(). Its hyperparameters are not
    # written here: every registered loss declares its own (trainables/losses/hyperparameters.py;
    # kd: alpha, temperature, logit_standardize; dkd: dkd_*; dist: dist_*; mse: alpha), and
    # they are flat keys of this config all the same (DistillConfig(kd_method="dkd",
    # dkd_beta=2.0), cfg.dkd_beta, to_dict()), kept in `method_params` and checked against the
    # declarations. A method registered later (a plugin, a test's toy method) adds its keys.
    kd_method: str = "kd"
    # Every registered method's hyperparameters as sorted (key, value) pairs, declared defaults
    # filled in; pass them as flat keyword arguments, not through this field.
    method_params: Any = field(default_factory=dict)
    teacher_checkpoint: str | None = None  # path to a kdtune checkpoint file or directory
    teacher_logits: str = "auto"  # auto = cached when the dataset is not augmented
    # Online distillation (Zhang et al. 2018): a model name from models.list_models(), trained
    # from scratch in this trial next to the student (CE on the labels, with the student's
    # optimiser, lr, schedule, weight decay, label smoothing and grad_clip) instead of loading
    # teacher_checkpoint. Its kwargs (depth and width included) go to create_model as given.
    online_teacher: str | None = None
    online_teacher_kwargs: Any = field(default_factory=dict)  # sorted (key, value) pairs
    # Final-stage retraining: keep the best-val epoch's weights and evaluate them once on the
    # TEST split after the last epoch (test_acc, test_loss, best_epoch, best_val_acc). Searches
    # leave it off: they never touch the test split.
    test_best_epoch: bool = False

    def __post_init__(self) -> None:
        self._check_method_params()
        if self.teacher_checkpoint is not None and not isinstance(self.teacher_checkpoint, str):
            object.__setattr__(self, "teacher_checkpoint", str(self.teacher_checkpoint))
        _choice("teacher_logits", self.teacher_logits, TEACHER_LOGITS)
        if not isinstance(self.test_best_epoch, bool):
            raise ValueError(f"test_best_epoch must be true or false, got {self.test_best_epoch!r}")
        self._check_online_teacher()
        super().__post_init__()

    def _check_method_params(self) -> None:
        """Fill every declared method hyperparameter (given value or declared default) and
        check it against its declaration; a key no method declares is unknown."""
        from kdtune.trainables.losses import all_hyperparameters

        given = dict(self.method_params)
        declared = all_hyperparameters()
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise unknown_keys_error(type(self).__name__, unknown, self.keys())
        values = {name: hp.check(given.get(name, hp.default)) for name, hp in declared.items()}
        object.__setattr__(self, "method_params", tuple(sorted(values.items())))

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a method hyperparameter read as cfg.<key>.
        if name.startswith("__") or name == "method_params":
            raise AttributeError(name)
        params = dict(object.__getattribute__(self, "method_params"))
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @classmethod
    def keys(cls) -> list[str]:
        from kdtune.trainables.losses import all_hyperparameters

        core = [k for k in super().keys() if k != "method_params"]
        return core + [k for k in all_hyperparameters() if k not in core]

    def _check_online_teacher(self) -> None:
        kw = self.online_teacher_kwargs
        if not isinstance(kw, (Mapping, tuple, list)):
            raise ValueError(f"online_teacher_kwargs must be a mapping, got {kw!r}")
        object.__setattr__(self, "online_teacher_kwargs", _freeze(dict(kw)))
        if self.online_teacher is None:
            if self.online_teacher_kwargs:
                raise ValueError("online_teacher_kwargs is set but online_teacher is not: "
                                 "name the online teacher's model")
            return
        if self.teacher_checkpoint is not None:
            raise ValueError("online_teacher and teacher_checkpoint are both set: a trial either "
                             "trains its teacher online or loads a trained one, not both")
        if self.teacher_logits == "cached":
            raise ValueError("teacher_logits='cached' cannot be used with online_teacher: the "
                             "online teacher changes every batch (use 'auto' or 'online')")
        clash = {"num_classes", "in_shape"} & dict(self.online_teacher_kwargs).keys()
        if clash:
            raise ValueError(f"online_teacher_kwargs must not set {sorted(clash)}: "
                             "they come from the dataset")

    def _check_registries(self) -> None:
        super()._check_registries()
        from kdtune.trainables.losses import all_hyperparameters, list_losses, method_fields, methods_reading

        _choice("kd_method", self.kd_method, list_losses())
        # A method's hyperparameter set away from its default under another method would be
        # accepted and ignored: refuse bool switches (e.g. logit_standardize for dist).
        for name, hp in all_hyperparameters().items():
            if hp.kind == "bool" and getattr(self, name) != hp.default \
                    and name not in method_fields(self.kd_method):
                raise ValueError(f"{name} applies to KD methods {', '.join(methods_reading(name))}, "
                                 f"not to {self.kd_method!r}")
        if self.online_teacher is None:
            return
        from kdtune.trainables.losses import loss_class

        if "features" in loss_class(self.kd_method).needs:
            raise ValueError(f"KD method {self.kd_method!r} reads a frozen teacher's features; "
                             "it does not run with online_teacher (use a logit method, or "
                             "teacher_checkpoint)")
        from kdtune import models

        models.registry.resolve(self.online_teacher)
        _choice("online_teacher", self.online_teacher, list(models.list_models()))
        _check_model_kwargs("online_teacher_kwargs", self.online_teacher, dict(self.online_teacher_kwargs))

    def to_dict(self) -> dict[str, Any]:
        """Flat: the method hyperparameters are top-level keys, as in from_dict's input."""
        out = super().to_dict()
        out["online_teacher_kwargs"] = self.online_teacher_kwargs_dict()
        out.update(dict(out.pop("method_params")))
        return out

    def online_teacher_kwargs_dict(self) -> dict[str, Any]:
        return dict(self.online_teacher_kwargs)

    @property
    def is_baseline(self) -> bool:
        """True when no soft term is trained (no teacher, or the method's soft weights are 0:
        alpha == 0 for kd and mse)."""
        from kdtune.trainables.losses import loss_from_config

        no_teacher = self.teacher_checkpoint is None and self.online_teacher is None
        return no_teacher or not loss_from_config(self).uses_teacher


def _accept_method_keywords(init):
    """DistillConfig's __init__ takes method hyperparameters as flat keywords and moves them
    into `method_params` (their set is the registry's, so they cannot be dataclass fields)."""
    import functools

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        fields = {f.name for f in dataclasses.fields(DistillConfig)}
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields}
        if extra:
            kwargs["method_params"] = {**dict(kwargs.get("method_params", {})), **extra}
        init(self, *args, **kwargs)

    return wrapped


DistillConfig.__init__ = _accept_method_keywords(DistillConfig.__init__)
