"""`fitnet`: FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    loss = ce_weight * CE(s, y) + weight * mean((r(F_s^k) - F_t^k)^2)

F^k is stage k's output map (the "hint"/"guided" layer); r is the learnable regressor
(trainables/connectors.py ConvRegressor, BN + ReLU after the conv, as RepDistiller's ConvReg;
a linear one for MLP hidden layers); the mean runs over every element (nn.MSELoss).
Trained in one stage with CE, as mdistiller (mdistiller/distillers/FitNet.py) and RepDistiller
(distiller_zoo/FitNet.py HintLoss, train_student.py --distill hint), not Romero's two stages.
"""
from __future__ import annotations

import torch.nn.functional as F

from kdtune.trainables.connectors import ConvRegressor, LinearRegressor
from kdtune.trainables.losses.feature_base import FeatureLoss, Request
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss


@register_loss
class FitNetLoss(FeatureLoss):
    """FitNets hint loss.

    weight: 100 (mdistiller CFG.FITNET.LOSS.FEAT_WEIGHT; RepDistiller's README runs `-b 100`).
    ce_weight: 1 (mdistiller CFG.FITNET.LOSS.CE_WEIGHT).
    stage: 2, the middle of three CIFAR stages (mdistiller CFG.FITNET.HINT_LAYER = 2, an index
        into [stem, stage1, stage2, stage3]; RepDistiller's --hint_layer 2).
    """

    name = "fitnet"
    # log-sampled over two decades around the reference: feature-loss scales differ by decades
    hyperparameters = (
        Hyperparameter("fitnet_weight", 100.0, low=0.0, search=(10.0, 1000.0), log=True, kwarg="weight",
                       source="mdistiller CFG.FITNET.LOSS.FEAT_WEIGHT; RepDistiller -b 100",
                       help="weight of the hint MSE (CE weight 1)"),
        Hyperparameter("fitnet_stage", 2, kind="int", low=1, kwarg="stage",
                       source="mdistiller CFG.FITNET.HINT_LAYER; RepDistiller --hint_layer 2",
                       help="1-based stage whose output is the hint (same stage in both models)"),
    )

    def __init__(self, weight: float = 100.0, stage: int = 2, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)
        self.stage = int(stage)

    def requests(self, s_info, t_info):
        for who, info in (("student", s_info), ("teacher", t_info)):
            if not 1 <= self.stage <= len(info):
                raise ValueError(f"fitnet_stage {self.stage}: the {who} has stages 1..{len(info)}")
        return Request(student_stages=(self.stage,), teacher_stages=(self.stage,))

    def build(self, s_info, t_info, pooled_dims, train_labels):
        s, t = s_info[self.stage - 1], t_info[self.stage - 1]
        if s.spatial and t.spatial:
            self.regressor = ConvRegressor(s.channels, s.size, t.channels, t.size)
        elif not s.spatial and not t.spatial:
            self.regressor = LinearRegressor(s.channels, t.channels)
        else:
            raise ValueError(f"fitnet: stage {self.stage} is a map in one model and a vector "
                             "in the other; pick models of the same kind (conv or MLP)")

    def feature_term(self, batch):
        return F.mse_loss(self.regressor(batch.student[0]), batch.teacher[0])
