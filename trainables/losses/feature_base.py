"""The base of feature-based distillation losses: taps, connectors, CE + weight * feature term.

    loss = ce_weight * CE(s, y) + weight * ramp(epoch) * feature_term(student taps, teacher taps)

A feature loss is called like every loss, `loss(student_logits, labels, teacher_logits)`, but
it must first be bound to the two models (`bind`, done once by the trial, trial.py): it then
puts FeatureTaps (models/features.py: forward hooks, the forward itself unchanged) on the
student and the teacher, measures their stage shapes with one probe forward, and builds its
connectors (trainables/connectors.py) from them. After each training forward of the student
and of the teacher (the teacher runs online on the same augmented batch: feature_teacher.py)
the taps hold that batch's maps, and `feature_term` reads them.

Teacher maps come from an inference-mode forward: they are copied to ordinary float32
tensors before use (autograd cannot save inference tensors) and never receive gradients.
Student maps keep their graph, so the feature term trains the student and the connectors.

Subclasses set `name`, `hyperparameters` (their declarations, hyperparameters.py) and
implement `requests(s_info, t_info)` (which stages, pooled, teacher pre-activation),
`build(...)` (connectors) and `feature_term(...)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.models.features import FeatureTap, StageInfo, feature_info, pooled_dim
from kdtune.trainables.losses.registry import DistillationLoss


@dataclass(frozen=True)
class Request:
    """What a method reads: 1-based stage numbers of each model, the pooled features, and
    whether the teacher's stages are read before their final ReLU (ReviewKD)."""

    student_stages: tuple[int, ...] = ()
    teacher_stages: tuple[int, ...] = ()
    pooled: bool = False
    teacher_preact: bool = False


@dataclass
class Batch:
    """One training batch's features: student maps (with graph), teacher maps (float32
    copies, no graph), pooled features (None unless requested), row keys and labels."""

    student: list[torch.Tensor]
    teacher: list[torch.Tensor]
    student_pooled: torch.Tensor | None
    teacher_pooled: torch.Tensor | None
    idx: torch.Tensor | None
    labels: torch.Tensor


def teacher_copy(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor outside inference mode, detached (a teacher map, usable by autograd)."""
    return t.detach().to(torch.float32, copy=True)


class FeatureLoss(DistillationLoss):
    """ce_weight * CE + weight * ramp * feature_term; see the module docstring."""

    needs = ("logits", "features")
    needs_features = True  # shorthand for "features" in needs

    def __init__(self, weight: float, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 warmup: int = 0) -> None:
        super().__init__(label_smoothing)
        if weight < 0 or ce_weight < 0:
            raise ValueError(f"{self.name} weights must be >= 0, got weight={weight}, ce_weight={ce_weight}")
        self.weight, self.ce_weight, self.warmup = float(weight), float(ce_weight), int(warmup)
        self.student_tap: FeatureTap | None = None
        self.teacher_tap: FeatureTap | None = None
        self.source = None  # the teacher source: its `last_idx` is the batch's row keys

    @property
    def uses_teacher(self) -> bool:
        return self.weight > 0.0

    # ---- binding ---------------------------------------------------------------------------
    def bind(self, student: nn.Module, teacher: nn.Module, in_shape, *, source=None,
             train_labels: torch.Tensor | None = None) -> "FeatureLoss":
        """Tap `student` and `teacher`, build the connectors on the student's device."""
        s_info, t_info = feature_info(student, in_shape), feature_info(teacher, in_shape)
        req = self.requests(s_info, t_info)
        self.request = req
        self.student_tap = FeatureTap(student, req.student_stages, pooled=req.pooled)
        self.teacher_tap = FeatureTap(teacher, req.teacher_stages, pooled=req.pooled,
                                      preact=req.teacher_preact)
        dims = (pooled_dim(student), pooled_dim(teacher)) if req.pooled else (None, None)
        self.build(s_info, t_info, dims, train_labels)
        self.source = source
        param = next(student.parameters())
        self.to(param.device)
        return self

    def requests(self, s_info: list[StageInfo], t_info: list[StageInfo]) -> Request:
        raise NotImplementedError

    def build(self, s_info: list[StageInfo], t_info: list[StageInfo],
              pooled_dims: tuple[int | None, int | None], train_labels) -> None:
        """Create connectors (nn.Modules / buffers on self); none by default."""

    # ---- the loss ---------------------------------------------------------------------------
    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=self.label_smoothing)
        if teacher_logits is None or not self.uses_teacher:
            return ce
        if self.student_tap is None:
            raise RuntimeError(f"the {self.name!r} loss was not bound to a student and a teacher "
                               "(FeatureLoss.bind): it needs their features")
        batch = self.batch(labels)
        return self.ce_weight * ce + self.weight * self.ramp() * self.feature_term(batch)

    def ramp(self) -> float:
        """min(epochs done / warmup, 1) (ReviewKD's warm-up, per batch); 1 without warm-up."""
        return 1.0 if self.warmup <= 0 else min(self.epochs_done / self.warmup, 1.0)

    def batch(self, labels: torch.Tensor) -> Batch:
        s, t = self.student_tap, self.teacher_tap
        return Batch(
            student=[f.float() for f in s.features()],
            teacher=[teacher_copy(f) for f in t.features()],
            student_pooled=s.pooled().float() if self.request.pooled else None,
            teacher_pooled=teacher_copy(t.pooled()) if self.request.pooled else None,
            idx=getattr(self.source, "last_idx", None),
            labels=labels,
        )

    def feature_term(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}, ce_weight={self.ce_weight}"


def last_spatial(info: list[StageInfo], who: str, method: str) -> int:
    """1-based number of the last stage with (H, W) maps; a clear error for an MLP."""
    spatial = [k for k, s in enumerate(info, start=1) if s.spatial]
    if not spatial:
        raise ValueError(f"{method} matches spatial feature maps; the {who} has none "
                         "(an MLP): use a logit method or a pooled-feature one (pkt, rkd, crd)")
    return spatial[-1]


def spatial_stages(info: list[StageInfo]) -> list[int]:
    return [k for k, s in enumerate(info, start=1) if s.spatial]
