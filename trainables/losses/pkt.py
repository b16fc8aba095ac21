"""`pkt`: probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep Representations
with Probabilistic Knowledge Transfer", ECCV 2018).

    c_ij = (cos(f_i, f_j) + 1) / 2,  P_ij = c_ij / sum_j c_ij      over the batch, per model
    loss = ce_weight * CE(s, y) + weight * mean_ij P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))

f = the pooled feature (the classifier's input), eps = 1e-7, rows normalised by
(norm + eps) with NaNs set to 0, as RepDistiller distiller_zoo/PKT.py
(cosine_similarity_loss) and mdistiller/distillers/PKT.py. No connectors.
"""
from __future__ import annotations

import torch

from kdtune.trainables.losses.feature_base import FeatureLoss, Request
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss

EPS = 1e-7  # the reference's eps


def conditional_probabilities(f: torch.Tensor) -> torch.Tensor:
    f = f / (f.norm(dim=1, keepdim=True) + EPS)
    f = torch.nan_to_num(f, nan=0.0)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


@register_loss
class PKTLoss(FeatureLoss):
    """Probabilistic knowledge transfer.

    weight: 30000 (mdistiller CFG.PKT.LOSS.FEAT_WEIGHT; RepDistiller's README `-b 30000`).
    ce_weight: 1 (mdistiller CFG.PKT.LOSS.CE_WEIGHT).
    """

    name = "pkt"
    hyperparameters = (
        Hyperparameter("pkt_weight", 30000.0, low=0.0, search=(3000.0, 300000.0), log=True, kwarg="weight",
                       source="mdistiller CFG.PKT.LOSS.FEAT_WEIGHT; RepDistiller -b 30000",
                       help="weight of the KL between similarity distributions (CE weight 1)"),
    )

    def __init__(self, weight: float = 30000.0, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)

    def requests(self, s_info, t_info):
        return Request(pooled=True)

    def feature_term(self, batch):
        p_s = conditional_probabilities(batch.student_pooled)
        p_t = conditional_probabilities(batch.teacher_pooled)
        return torch.mean(p_t * torch.log((p_t + EPS) / (p_s + EPS)))
