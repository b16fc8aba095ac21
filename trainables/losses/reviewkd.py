"""`reviewkd`: knowledge review (Chen et al., "Distilling Knowledge via Knowledge Review",
CVPR 2021).

Student levels (the stage maps and the pooled feature as a 1x1 map) are fused from the
deepest up by attention-based fusion modules (trainables/connectors.py ABF): level l's output
mixes the student's level-l map with the fused residual of the deeper levels, then is
resized and projected to the teacher's level l. The teacher's levels are its stages *before
their final ReLU* (mdistiller's preact_feats) and its pooled feature. The hierarchical context
loss compares each pair at full size and average-pooled to 4x4, 2x2, 1x1 (each smaller than
the map), weights halving:

    HCL(a, b) = (mse(a, b) + sum_l 2^-l mse(pool_l a, pool_l b)) / (1 + sum_l 2^-l)
    loss = ce_weight * CE(s, y) + weight * min(epochs done / warmup, 1) * sum_levels HCL

as mdistiller/distillers/ReviewKD.py (hcl_loss, ABF, mid channels min(512, the student's
pooled width); from dvlab-research/ReviewKD). The student's levels are its post-activation
stage outputs (mdistiller's CFG.REVIEWKD.STU_PREACT False). The warm-up is per batch here
(the reference steps it per epoch, 1/20 at epoch 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.trainables.connectors import ABF
from kdtune.trainables.losses.feature_base import FeatureLoss, Request, spatial_stages
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss

MAX_MID_CHANNELS = 512  # mdistiller: mid_channel = min(512, in_channels[-1])


def hcl_loss(students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for fs, ft in zip(students, teachers):
        h = fs.shape[2]
        loss, weight, norm = F.mse_loss(fs, ft), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size),
                                              F.adaptive_avg_pool2d(ft, size))
            norm += weight
        total = total + loss / norm
    return total


@register_loss
class ReviewKDLoss(FeatureLoss):
    """Knowledge review.

    weight: 1 (mdistiller CFG.REVIEWKD.REVIEWKD_WEIGHT). ce_weight: 1 (CFG.REVIEWKD.CE_WEIGHT).
    warmup: 20 epochs (CFG.REVIEWKD.WARMUP_EPOCHS, of 240; presets scale it to their epochs).
    """

    name = "reviewkd"
    hyperparameters = (
        Hyperparameter("reviewkd_weight", 1.0, low=0.0, search=(0.1, 10.0), log=True, kwarg="weight",
                       source="mdistiller CFG.REVIEWKD.REVIEWKD_WEIGHT",
                       help="weight of the hierarchical context loss (CE weight 1)"),
        Hyperparameter("reviewkd_warmup", 20, kind="int", low=0, kwarg="warmup",
                       source="mdistiller CFG.REVIEWKD.WARMUP_EPOCHS (of 240 epochs)",
                       help="epochs over which the review term ramps up linearly"),
    )

    def __init__(self, weight: float = 1.0, warmup: int = 20, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing, warmup=warmup)

    def requests(self, s_info, t_info):
        s, t = spatial_stages(s_info), spatial_stages(t_info)
        if not s or not t:
            raise ValueError("reviewkd fuses spatial maps; the student or the teacher has none "
                             "(an MLP): use a logit method or pkt, rkd, crd")
        n = min(len(s), len(t))
        return Request(student_stages=tuple(s[-n:]), teacher_stages=tuple(t[-n:]), pooled=True,
                       teacher_preact=True)

    def build(self, s_info, t_info, pooled_dims, train_labels):
        s_pool, t_pool = pooled_dims
        req = self.request
        s_maps = [s_info[k - 1] for k in req.student_stages]
        t_maps = [t_info[k - 1] for k in req.teacher_stages]
        mid = min(MAX_MID_CHANNELS, s_pool)
        # deepest first: the pooled level (no fusion), then the stages from the last
        levels = [ABF(s_pool, mid, t_pool, fuse=False)]
        self.out_sizes: list[tuple[int, int]] = [(1, 1)]
        for s, t in zip(reversed(s_maps), reversed(t_maps)):
            levels.append(ABF(s.channels, mid, t.channels, fuse=True))
            self.out_sizes.append(t.size)
        self.abfs = nn.ModuleList(levels)

    def fused(self, maps: list[torch.Tensor], pooled: torch.Tensor) -> list[torch.Tensor]:
        """The student's levels through the ABFs, shallow to deep (the teacher's order)."""
        x = [pooled[:, :, None, None]] + list(reversed(maps))
        out, residual = self.abfs[0](x[0], out_size=self.out_sizes[0])
        results = [out]
        for feat, abf, size in zip(x[1:], self.abfs[1:], self.out_sizes[1:]):
            out, residual = abf(feat, residual, size)
            results.insert(0, out)
        return results

    def feature_term(self, batch):
        students = self.fused(batch.student, batch.student_pooled)
        teachers = batch.teacher + [batch.teacher_pooled[:, :, None, None]]
        return hcl_loss(students, teachers)
