"""`rkd`: relational KD (Park et al., "Relational Knowledge Distillation", CVPR 2019).

    psi_D(i, j) = ||f_i - f_j|| / mu,  mu = mean of the batch's non-zero distances
    psi_A(i, j, k) = <e_ij, e_kj>, e_ij = (f_i - f_j) / ||f_i - f_j||
    loss = ce_weight * CE(s, y) + weight * (w_d * SmoothL1(psi_D^s, psi_D^t)
                                            + w_a * SmoothL1(psi_A^s, psi_A^t))

on the pooled feature, Euclidean (not squared) distances with eps 1e-12 and a zero diagonal,
SmoothL1 averaged over elements, as RepDistiller distiller_zoo/RKD.py (RKDLoss) and
mdistiller/distillers/RKD.py. No connectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.feature_base import FeatureLoss, Request
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss

EPS = 1e-12  # mdistiller CFG.RKD.PDIST.EPSILON


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=EPS).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))  # zero diagonal


def normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean()


def angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


@register_loss
class RKDLoss(FeatureLoss):
    """Relational KD (distance + angle).

    weight: 1 (mdistiller CFG.RKD.LOSS.FEAT_WEIGHT; RepDistiller's README `-b 1`).
    distance_weight: 25, angle_weight: 50 (mdistiller CFG.RKD.DISTANCE_WEIGHT/ANGLE_WEIGHT,
        RepDistiller RKDLoss(w_d=25, w_a=50), the paper's lambda_D and lambda_A).
    ce_weight: 1 (mdistiller CFG.RKD.LOSS.CE_WEIGHT).
    """

    name = "rkd"
    hyperparameters = (
        Hyperparameter("rkd_weight", 1.0, low=0.0, search=(0.1, 10.0), log=True, kwarg="weight",
                       source="mdistiller CFG.RKD.LOSS.FEAT_WEIGHT; RepDistiller -b 1",
                       help="weight of the relational term (CE weight 1)"),
        Hyperparameter("rkd_distance_weight", 25.0, low=0.0, kwarg="distance_weight",
                       source="mdistiller CFG.RKD.DISTANCE_WEIGHT; RepDistiller RKDLoss w_d",
                       help="lambda_D of the distance term"),
        Hyperparameter("rkd_angle_weight", 50.0, low=0.0, kwarg="angle_weight",
                       source="mdistiller CFG.RKD.ANGLE_WEIGHT; RepDistiller RKDLoss w_a",
                       help="lambda_A of the angle term"),
    )

    def __init__(self, weight: float = 1.0, distance_weight: float = 25.0,
                 angle_weight: float = 50.0, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def requests(self, s_info, t_info):
        return Request(pooled=True)

    def feature_term(self, batch):
        s, t = batch.student_pooled, batch.teacher_pooled
        loss_d = F.smooth_l1_loss(normalised_distances(s), normalised_distances(t))
        loss_a = F.smooth_l1_loss(angles(s), angles(t))
        return self.distance_weight * loss_d + self.angle_weight * loss_a
