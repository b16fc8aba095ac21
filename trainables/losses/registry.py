"""The loss registry (timm style) and the base class every distillation loss derives from.

    @register_loss
    class MyLoss(DistillationLoss):
        name = "my"
        needs = ("logits",)                      # teacher outputs it reads (TEACHER_OUTPUTS)
        hyperparameters = (
            Hyperparameter("my_weight", 1.0, low=0.0, search=(0.1, 10.0), log=True, kwarg="weight",
                           source="paper X, section 4", help="weight of the soft term"),
            TEMPERATURE_KD,                      # a shared declaration: the same key as kd's
        )
        def __init__(self, weight=1.0, temperature=4.0, label_smoothing=0.0): ...
        def combine(self, ce, student, teacher, labels): ...

That one class is the whole method: DistillConfig accepts `my_weight` (checked against the
declaration), the search samples it on its declared scale when `--methods my` is given,
summaries print it, analysis tables and fANOVA list it (hyperparameters.py says how each field
is used). register_loss refuses a class whose __init__ defaults disagree with its declarations,
whose declarations clash with another method's under the same key, or
whose defaults lie outside their own ranges.

    create_loss("dkd", beta=2.0)         # an instance; unknown names list the known ones
    list_losses()                        # ['dist', 'dkd', 'kd', 'mse']
    loss_from_config(distill_config)     # the loss a trial trains with (cfg.kd_method + fields)

Every loss is called as `loss(student_logits, labels, teacher_logits=None)`: class logits only,
so a loss works unchanged with the driver's cached logits, the fixed-views cache, an online
teacher and a teacher-assistant chain (each is just a different source of teacher logits).
Without teacher logits, or when its soft weights are zero (`uses_teacher` False), a loss is
plain cross-entropy on the labels, so the teacher and the baseline use the same module.

A loss whose weights change with training progress (DKD's warm-up) reads `self.epoch`, which
the loop sets with `set_epoch(epoch)` (1-based) before every epoch, resumed runs included, and
`self.epoch_fraction`, the share of the current epoch's batches done after this one (the loop
sets it before every batch; 1.0 when nothing drives it, i.e. per-epoch semantics).

`needs`: the teacher outputs the loss reads, names from hyperparameters.TEACHER_OUTPUTS
("logits", "features"). A method that needs an output no teacher source provides is refused by
`loss_from_config` with a message, instead of silently training on logits only. "features":
the feature methods (feature_base.FeatureLoss: fitnet, at, sp, pkt, rkd, crd, reviewkd) read
the student's and the teacher's stage maps through taps (models/features.py) that the trial
binds to both models (trial.py), the teacher run online per batch (feature_teacher.py); their
connectors are their own parameters, optimised and checkpointed with the student.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.trainables.losses.hyperparameters import TEACHER_OUTPUTS, Hyperparameter

# Shared declarations: kd and mse blend CE and a soft term with one `alpha`.
ALPHA = Hyperparameter(
    "alpha", 0.9, low=0.0, high=1.0, search=(0.0, 1.0),
    source="mdistiller CFG.KD (CE_WEIGHT 0.1, KD_WEIGHT 0.9); Hinton et al. 2015 sec. 2.1: "
           "best with a considerably lower weight on the hard targets",
    help="weight of the soft (teacher) term, 1 - alpha on the labels; 0 = plain cross-entropy")
LOGIT_STANDARDIZE = Hyperparameter(
    "logit_standardize", False, kind="bool", kwarg="standardize", short="std",
    source="off = the original losses; Sun et al. 2024 turn it on",
    help="z-score student and teacher logits before the temperature (Sun et al. 2024)")

# How error messages describe a teacher output.
OUTPUT_NAMES = {"logits": "class logits", "features": "penultimate features"}

_REGISTRY: dict[str, type["DistillationLoss"]] = {}


class DistillationLoss(nn.Module):
    """CE on the labels plus a method's soft term; subclasses implement `combine`."""

    name: ClassVar[str] = ""
    # The method's own hyperparameters (hyperparameters.py): flat DistillConfig keys and
    # search dimensions, in the order the search samples them.
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = ()
    # Teacher outputs the loss reads (names from TEACHER_OUTPUTS).
    needs: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.epoch = 1  # 1-based training epoch, set by the loop
        self.epoch_fraction = 1.0  # (batch index + 1) / batches of this epoch, set by the loop

    @property
    def uses_teacher(self) -> bool:
        """False when the soft term has zero weight: the loop then skips teacher logits."""
        return True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.epoch_fraction = 1.0

    def set_epoch_fraction(self, fraction: float) -> None:
        self.epoch_fraction = float(fraction)

    @property
    def epochs_done(self) -> float:
        """Training progress in epochs at the end of the current batch: epoch - 1 + fraction."""
        return self.epoch - 1 + self.epoch_fraction

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        # float32 throughout: bf16 logits from autocast (or a bf16 view cache) are upcast first.
        s = student_logits.float()
        ce = F.cross_entropy(s, labels, label_smoothing=self.label_smoothing)
        if teacher_logits is None or not self.uses_teacher:
            return ce
        # The teacher never receives gradients (frozen, cached, or an online teacher's
        # detached logits): detached here as well, whatever the caller passed.
        return self.combine(ce, s, teacher_logits.detach().float(), labels)

    def combine(self, ce: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AlphaBlendLoss(DistillationLoss):
    """(1 - alpha) * CE + alpha * soft_term(student, teacher), alpha in [0, 1] (kd, mse):
    subclasses implement `soft_term`; alpha == 0 needs no teacher."""

    def __init__(self, alpha: float, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0.0

    def combine(self, ce, student, teacher, labels):
        return (1.0 - self.alpha) * ce + self.alpha * self.soft_term(student, teacher)

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# Keys of the config every stage shares: a method must not declare one as its own.
RESERVED = ("kd_method", "label_smoothing", "lr", "weight_decay", "depth", "width", "model", "seed",
            "epochs", "teacher_checkpoint", "teacher_logits", "online_teacher")


def register_loss(cls: type[DistillationLoss]) -> type[DistillationLoss]:
    """Class decorator: register `cls` under `cls.name` after checking its declarations."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"loss {cls.name!r} is registered twice "
                         f"({_REGISTRY[cls.name].__name__} and {cls.__name__})")
    _check_declarations(cls)
    _REGISTRY[cls.name] = cls
    return cls


def _check_declarations(cls: type[DistillationLoss]) -> None:
    """One key, one declaration; __init__ defaults equal the declared ones; needs are provided."""
    names = [hp.name for hp in cls.hyperparameters]
    if len(set(names)) != len(names):
        raise ValueError(f"loss {cls.name!r} declares a hyperparameter twice: {names}")
    params = inspect.signature(cls.__init__).parameters
    for hp in cls.hyperparameters:
        if not isinstance(hp, Hyperparameter):
            raise ValueError(f"loss {cls.name!r}: hyperparameters must be Hyperparameter objects, got {hp!r}")
        if hp.name in RESERVED:
            raise ValueError(f"loss {cls.name!r}: {hp.name!r} is a shared config key, not a method's own")
        other = all_hyperparameters().get(hp.name)
        if other is not None and other != hp:
            raise ValueError(f"loss {cls.name!r} declares {hp.name!r} differently from another method; "
                             "share the declaration object or use a key of its own")
        if hp.keyword not in params:
            raise ValueError(f"loss {cls.name!r}: __init__ takes no keyword {hp.keyword!r} for {hp.name!r}")
        default = params[hp.keyword].default
        if default is not inspect.Parameter.empty and default != hp.default:
            raise ValueError(f"loss {cls.name!r}: __init__ defaults {hp.keyword}={default!r} but "
                             f"{hp.name!r} is declared with default {hp.default!r}")


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return sorted(_REGISTRY)


def loss_class(name: str) -> type[DistillationLoss]:
    """The registered class of `name`; an unknown name lists the known ones."""
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown KD method {name!r}{extra}; known: {', '.join(list_losses())}")
    return _REGISTRY[name]


def create_loss(name: str, **kwargs: Any) -> DistillationLoss:
    """An instance of the loss registered as `name`, built with `kwargs`."""
    return loss_class(name)(**kwargs)


def method_hyperparameters(name: str) -> tuple[Hyperparameter, ...]:
    """The declarations of method `name`, in its sampling order."""
    return tuple(loss_class(name).hyperparameters)


def method_fields(name: str) -> tuple[str, ...]:
    """The DistillConfig keys method `name` reads (its searchable hyperparameters)."""
    return tuple(hp.name for hp in method_hyperparameters(name))


def all_hyperparameters() -> dict[str, Hyperparameter]:
    """Every registered method's declarations by key, in registration order (shared keys once)."""
    out: dict[str, Hyperparameter] = {}
    for cls in _REGISTRY.values():
        for hp in cls.hyperparameters:
            out.setdefault(hp.name, hp)
    return out


def methods_reading(key: str) -> list[str]:
    """The registered methods that declare `key`."""
    return [n for n in list_losses() if key in method_fields(n)]


def method_settings(name: str, values: Mapping[str, Any]) -> str:
    """Method `name`'s own hyperparameters in `values` (a config or a table row), e.g.
    "dkd_alpha=1, dkd_beta=4.2, T=3.1". A field that is missing, None or NaN was pinned at the
    config's default and left out of the trial's config, so it is not shown."""
    parts = []
    for hp in method_hyperparameters(name):
        value = values.get(hp.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{hp.label}={shown}")
    return ", ".join(parts)


def loss_from_config(cfg) -> DistillationLoss:
    """The loss of a DistillConfig: `cfg.kd_method` built from the fields it declares."""
    cls = loss_class(cfg.kd_method)
    missing = [n for n in cls.needs if n not in TEACHER_OUTPUTS]
    if missing:
        described = ", ".join(OUTPUT_NAMES.get(n, n) for n in missing)
        raise ValueError(f"KD method {cls.name!r} needs the teacher's {described}, which no teacher "
                         "source provides yet; use a method that reads only "
                         + ", ".join(TEACHER_OUTPUTS) + ": "
                         + ", ".join(n for n in list_losses() if set(_REGISTRY[n].needs) <= set(TEACHER_OUTPUTS)))
    kwargs = {hp.keyword: getattr(cfg, hp.name) for hp in cls.hyperparameters}
    return cls(label_smoothing=cfg.label_smoothing, **kwargs)


def supervised_loss(label_smoothing: float = 0.0) -> DistillationLoss:
    """Plain cross-entropy (the Hinton loss with alpha = 0): teachers and baselines."""
    return create_loss("kd", alpha=0.0, temperature=1.0, label_smoothing=label_smoothing)
