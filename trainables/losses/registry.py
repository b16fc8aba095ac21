"""The loss registry (timm style) and the base class every distillation loss derives from.

    @register_loss
    class MyLoss(DistillationLoss):
        name = "my"
        config_fields = (("alpha", "alpha"), ("temperature", "temperature"))
        ...

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

`needs_features`: a feature method (fitnet, at, sp, pkt, rkd, crd, reviewkd; the base class
is feature_base.FeatureLoss) declares it True. Such a loss reads the student's and the
teacher's feature maps through taps (models/features.py) that `bind` puts on both models;
the trial binds it (trial.py) and runs the teacher online on each batch
(trainables/feature_teacher.py). Its connectors are its own parameters: the trial optimises
and checkpoints them with the student.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

_REGISTRY: dict[str, type["DistillationLoss"]] = {}


class DistillationLoss(nn.Module):
    """CE on the labels plus a method's soft term; subclasses implement `combine`."""

    name: ClassVar[str] = ""
    # (DistillConfig field, __init__ keyword): what a trial's config sets for this method.
    config_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    needs_features: ClassVar[bool] = False

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


def register_loss(cls: type[DistillationLoss]) -> type[DistillationLoss]:
    """Class decorator: register `cls` under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"loss {cls.name!r} is registered twice "
                         f"({_REGISTRY[cls.name].__name__} and {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


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


def method_fields(name: str) -> tuple[str, ...]:
    """The DistillConfig fields method `name` reads (its searchable hyperparameters)."""
    return tuple(field for field, _ in loss_class(name).config_fields)


# Short names of config fields in settings strings: every method's temperature reads as T.
SHORT_NAMES = {"temperature": "T", "dkd_temperature": "T", "dist_temperature": "T",
               "kdw_temperature": "T", "logit_standardize": "std"}


def method_settings(name: str, values: Mapping[str, Any]) -> str:
    """Method `name`'s own hyperparameters in `values` (a config or a table row), e.g.
    "dkd_alpha=1, dkd_beta=4.2, T=3.1". A field that is missing, None or NaN was pinned at the
    config's default and left out of the trial's config, so it is not shown."""
    parts = []
    for field in method_fields(name):
        value = values.get(field)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{SHORT_NAMES.get(field, field)}={shown}")
    return ", ".join(parts)


def loss_from_config(cfg) -> DistillationLoss:
    """The loss of a DistillConfig: `cfg.kd_method` built from the fields it declares."""
    cls = loss_class(cfg.kd_method)
    kwargs = {kw: getattr(cfg, field) for field, kw in cls.config_fields}
    return cls(label_smoothing=cfg.label_smoothing, **kwargs)


def supervised_loss(label_smoothing: float = 0.0) -> DistillationLoss:
    """Plain cross-entropy (the Hinton loss with alpha = 0): teachers and baselines."""
    return create_loss("kd", alpha=0.0, temperature=1.0, label_smoothing=label_smoothing)
