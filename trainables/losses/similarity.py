"""`sp`: similarity-preserving KD (Tung & Mori, "Similarity-Preserving Knowledge
Distillation", ICCV 2019).

    G(F) = row-L2-normalised (F F^T), F the (N, C*H*W) flattened last-stage map   (N, N)
    loss = ce_weight * CE(s, y) + weight * ||G(F_s) - G(F_t)||_F^2 / N^2

As RepDistiller distiller_zoo/SP.py (Similarity.similarity_loss) and
mdistiller/distillers/SP.py, on the last stage (feats[-1] before pooling; an MLP's last hidden
layer). No connectors: the N x N Gram matrices compare whatever the widths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.feature_base import FeatureLoss, Request
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss


def batch_similarity(f: torch.Tensor) -> torch.Tensor:
    f = f.flatten(1)
    return F.normalize(f @ f.t())


@register_loss
class SPLoss(FeatureLoss):
    """Similarity preserving.

    weight: 3000 (mdistiller CFG.SP.LOSS.FEAT_WEIGHT; RepDistiller's README `-b 3000`).
    ce_weight: 1 (mdistiller CFG.SP.LOSS.CE_WEIGHT).
    """

    name = "sp"
    hyperparameters = (
        Hyperparameter("sp_weight", 3000.0, low=0.0, search=(300.0, 30000.0), log=True, kwarg="weight",
                       source="mdistiller CFG.SP.LOSS.FEAT_WEIGHT; RepDistiller -b 3000",
                       help="weight of the Gram-matrix loss (CE weight 1)"),
    )

    def __init__(self, weight: float = 3000.0, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)

    def requests(self, s_info, t_info):
        return Request(student_stages=(len(s_info),), teacher_stages=(len(t_info),))

    def feature_term(self, batch):
        fs, ft = batch.student[0], batch.teacher[0]
        n = fs.shape[0]
        diff = batch_similarity(ft) - batch_similarity(fs)
        return diff.pow(2).sum() / (n * n)
