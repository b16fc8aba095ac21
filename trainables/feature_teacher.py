"""The teacher of a feature-based method: run online on every training batch, with taps.

Feature methods (trainables/losses/feature_base.py) read the teacher's stage maps of the very
batch the student sees (augmented pixels included), so the teacher runs online, not from the
logit cache: spatial maps of every training image would not fit (resnet32x4's three stages
on CIFAR-100: 50,000 x (64x32x32 + 128x16x16 + 256x8x8) x 4 B = 26 GB per view). The pooled
methods (pkt, rkd, crd) could read a cache of pooled features (50,000 x 256 x 4 B = 51 MB
for resnet32x4), but kdtune runs them online too, one code path for every feature method;
the cost is one teacher forward per batch (benchmarks/bench_feature_methods.py measures it).
The validation logits (for `agreement`) still come from the search's cache when it has them.

The teacher is loaded unfused (trainables/teacher_logits.load_teacher, not for_inference's
torch.fx BatchNorm folding), because the traced module no longer calls its stage modules,
which is where the taps hook in. It runs under inference_mode; the loss copies its maps.

`last_idx` holds the current batch's row keys (CRD's memory bank indexes by them).
"""
from __future__ import annotations

import torch

from kdtune.trainables.runtime import Runtime
from kdtune.trainables.teacher_logits import TeacherLogits, compute_logits, load_teacher


class FeatureTeacher(TeacherLogits):
    """A frozen teacher run online per batch (never from a logit cache); remembers the keys."""

    def __init__(self, teacher: torch.nn.Module, *, val_logits: torch.Tensor | None,
                 autocast_dtype: torch.dtype | None) -> None:
        super().__init__(teacher, train_cache=None, val_logits=val_logits,
                         autocast_dtype=autocast_dtype)
        self.last_idx: torch.Tensor | None = None

    def train_logits(self, x: torch.Tensor, idx: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        self.last_idx = idx
        return super().train_logits(x, idx, y)


def feature_teacher(path: str, bundle, rt: Runtime, val_logits: torch.Tensor | None,
                    eval_batch: int) -> FeatureTeacher:
    """The teacher of checkpoint `path` for `bundle`, ready to be tapped; val logits computed
    here unless given (a search's cache)."""
    teacher = rt.prepare(load_teacher(path, "cpu", bundle.meta()))
    if val_logits is None:
        val_logits = compute_logits(teacher, bundle.val, eval_batch, rt.device, mean=bundle.mean,
                                    std=bundle.std, autocast_dtype=rt.autocast_dtype,
                                    channels_last=rt.channels_last)
    return FeatureTeacher(teacher, val_logits=val_logits, autocast_dtype=rt.autocast_dtype)
