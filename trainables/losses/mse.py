"""`mse`: logit matching by mean squared error (Kim et al., "Comparing Kullback-Leibler
Divergence and Mean Squared Error Loss in Knowledge Distillation", IJCAI 2021).

    loss = (1 - alpha) * CE(s, y) + alpha * mean_{i,c} (s_ic - t_ic)^2

Kim et al. show KL at T -> infinity becomes logit matching, and that MSE on the logits
(no temperature) distils at least as well as KL at the usual temperatures; their best CIFAR-100
results use alpha = 1 (no label term). The mean runs over the batch and the classes, as
torch's MSELoss that their code calls.
"""
from __future__ import annotations

import torch.nn.functional as F

from kdtune.trainables.losses.registry import ALPHA, AlphaBlendLoss, register_loss


@register_loss
class MSELoss(AlphaBlendLoss):
    """Logit MSE.

    alpha: weight of the MSE term, 1 - alpha on the labels, in [0, 1]. Shares the config's
        `alpha` declaration (registry.ALPHA, default 0.9) with `kd`: one key, one default.
        Kim et al.'s best CIFAR-100 setting is 1.0; searches range over it.
    """

    name = "mse"
    hyperparameters = (ALPHA,)

    def __init__(self, alpha: float = 0.9, label_smoothing: float = 0.0) -> None:
        super().__init__(alpha, label_smoothing)

    def soft_term(self, student, teacher):
        return F.mse_loss(student, teacher)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
