"""`kd`: the Hinton et al. (2015) loss, "Distilling the Knowledge in a Neural Network".

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

KL is averaged over the batch ("batchmean", the true KL per example). The T^2 factor keeps the
soft term's gradient magnitude roughly independent of T (its gradient scales as 1/T^2 for large
T), so alpha keeps its meaning across temperatures. With `standardize` both logit vectors are
z-scored first (Sun et al. 2024, see standardize.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import ALPHA, LOGIT_STANDARDIZE, AlphaBlendLoss, register_loss
from kdtune.trainables.losses.standardize import standardize as zscore


TEMPERATURE = Hyperparameter(
    "temperature", 4.0, low=0.0, low_open=True, search=(1.0, 10.0), short="T",
    source="mdistiller CFG.KD.TEMPERATURE; Hinton et al. 2015 used up to 20 on MNIST",
    help="softmax temperature of teacher and student, unitless; below 1 sharpens (not useful)")


@register_loss
class KDLoss(AlphaBlendLoss):
    """Hinton KD.

    alpha: weight of the soft term, 1 - alpha on the labels, in [0, 1]; alpha = 0 is plain
        cross-entropy. Default 0.9: mdistiller's KD config (mdistiller/engine/cfg.py,
        CFG.KD.LOSS: CE_WEIGHT 0.1, KD_WEIGHT 0.9); searches sample it (presets: 0.1-0.95).
    temperature: T > 0. Default 4: mdistiller's CFG.KD.TEMPERATURE.
    standardize: z-score both logit vectors before T (Sun et al. 2024; off by default, which is
        the original loss; their CIFAR-100 KD experiments are tagged T = 2 with it).
    label_smoothing: on the CE term only.
    """

    name = "kd"
    hyperparameters = (ALPHA, TEMPERATURE, LOGIT_STANDARDIZE)

    def __init__(self, alpha: float = 0.9, temperature: float = 4.0, label_smoothing: float = 0.0,
                 standardize: bool = False) -> None:
        super().__init__(alpha, label_smoothing)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.standardize = bool(standardize)

    def soft_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """T^2 * KL(p_teacher^T || p_student^T), batch mean, float32."""
        s, t = student_logits.float(), teacher_logits.detach().float()
        if self.standardize:
            s, t = zscore(s), zscore(t)
        temp = self.temperature
        log_p_s = F.log_softmax(s / temp, dim=1)
        log_p_t = F.log_softmax(t / temp, dim=1)
        # log_target avoids exp -> log round trips: exact zeros stay finite for extreme logits.
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return kl * (temp * temp)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, temperature={self.temperature}, "
                f"standardize={self.standardize}, label_smoothing={self.label_smoothing}")
