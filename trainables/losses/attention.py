"""`at`: attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention",
ICLR 2017).

    a(F) = normalize(mean_c F_c^p, flattened)              (N, H*W), L2 per row
    loss = ce_weight * CE(s, y) + weight * sum_k mean((a(F_s^k) - a(F_t^k))^2)

over every stage k with spatial maps (mdistiller/distillers/AT.py reads feats[1:], the stage
outputs; RepDistiller distiller_zoo/AT.py feat[1:-1]); a student map of another size than the
teacher's is average-pooled to it first (RepDistiller's at_loss). No connectors: the attention
map has no channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.feature_base import FeatureLoss, Request, spatial_stages
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """normalize(mean over channels of f^p), one row per example."""
    return F.normalize(f.pow(p).mean(1).flatten(1))


@register_loss
class ATLoss(FeatureLoss):
    """Attention transfer.

    weight: 1000 (mdistiller CFG.AT.LOSS.FEAT_WEIGHT; RepDistiller's README `-b 1000`).
    ce_weight: 1 (mdistiller CFG.AT.LOSS.CE_WEIGHT).
    p: 2 (mdistiller CFG.AT.P; RepDistiller Attention(p=2); the paper's "F^2" maps).
    """

    name = "at"
    hyperparameters = (
        Hyperparameter("at_weight", 1000.0, low=0.0, search=(100.0, 10000.0), log=True, kwarg="weight",
                       source="mdistiller CFG.AT.LOSS.FEAT_WEIGHT; RepDistiller -b 1000",
                       help="weight of the attention-map loss summed over stages (CE weight 1)"),
        Hyperparameter("at_p", 2.0, low=0.0, low_open=True, kwarg="p",
                       source="mdistiller CFG.AT.P; RepDistiller Attention(p=2)",
                       help="exponent of the attention map mean_c F^p"),
    )

    def __init__(self, weight: float = 1000.0, p: float = 2.0, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)
        self.p = float(p)

    def requests(self, s_info, t_info):
        s, t = spatial_stages(s_info), spatial_stages(t_info)
        if not s or not t:
            raise ValueError("at matches spatial attention maps; the student or the teacher has "
                             "none (an MLP): use a logit method or pkt, rkd, crd")
        n = min(len(s), len(t))  # pair the last n stages of each
        return Request(student_stages=tuple(s[-n:]), teacher_stages=tuple(t[-n:]))

    def feature_term(self, batch):
        total = 0.0
        for fs, ft in zip(batch.student, batch.teacher):
            if fs.shape[2] > ft.shape[2]:
                fs = F.adaptive_avg_pool2d(fs, ft.shape[2:])
            elif fs.shape[2] < ft.shape[2]:
                ft = F.adaptive_avg_pool2d(ft, fs.shape[2:])
            total = total + (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()
        return total

    def extra_repr(self) -> str:
        return f"weight={self.weight}, p={self.p}, ce_weight={self.ce_weight}"
