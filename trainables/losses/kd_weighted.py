"""`kd_weighted`: Hinton KD with separate CE and KD weights (no convex blend).

    loss = ce_weight * CE(s, y) + kd_weight * T^2 * KL(softmax(t / T) || softmax(s / T))

`kd`'s (1 - alpha) CE + alpha T^2 KL caps the KD:CE ratio at alpha / (1 - alpha) (19:1 at
alpha 0.95); logit standardisation (Sun et al., "Logit Standardization in Knowledge
Distillation", CVPR 2024) is tuned at KD weight 9 with CE 0.1 (a 90:1 ratio) or 1.0, T = 2.
This form reaches those settings; with `standardize` both logit vectors are z-scored first
(standardize.py). The soft term is exactly KDLoss.soft_term.
"""
from __future__ import annotations

from kdtune.trainables.losses.kd import KDLoss
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import LOGIT_STANDARDIZE, DistillationLoss, register_loss


@register_loss
class WeightedKDLoss(DistillationLoss):
    """KD with free CE and KD weights.

    ce_weight: 0.1, kd_weight: 9, temperature: 2 — the KD+LS CIFAR-100 setting of Sun et al.'s
        code (sunshangquan/logit-standardization-KD, configs/cifar100/kd*.yaml with
        LOSS.CE_WEIGHT 0.1, LOSS.KD_WEIGHT 9, KD.TEMPERATURE 2 and logit_stand on); their
        README's other CIFAR setting uses CE 1.0.
    standardize: off by default (the original loss); `logit_standardize` turns it on.
    """

    name = "kd_weighted"
    hyperparameters = (
        # log scales: the KD:CE ratio is what matters; kd's alpha stops at 19:1 (alpha 0.95)
        Hyperparameter("kdw_ce_weight", 0.1, low=0.0, search=(0.05, 2.0), log=True, kwarg="ce_weight",
                       source="Sun et al. 2024 KD+LS CIFAR-100 (LOSS.CE_WEIGHT 0.1; also 1.0)",
                       help="weight of the cross-entropy on the labels"),
        Hyperparameter("kdw_kd_weight", 9.0, low=0.0, search=(0.5, 20.0), log=True, kwarg="kd_weight",
                       source="Sun et al. 2024 KD+LS CIFAR-100 (LOSS.KD_WEIGHT 9)",
                       help="weight of T^2 KL(teacher || student)"),
        Hyperparameter("kdw_temperature", 2.0, low=0.0, low_open=True, search=(1.0, 8.0),
                       kwarg="temperature", short="T",
                       source="Sun et al. 2024 KD+LS CIFAR-100 (T = 2)",
                       help="softmax temperature of teacher and student"),
        LOGIT_STANDARDIZE,
    )

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 9.0, temperature: float = 2.0,
                 label_smoothing: float = 0.0, standardize: bool = False) -> None:
        super().__init__(label_smoothing)
        if ce_weight < 0 or kd_weight < 0:
            raise ValueError(f"kd_weighted weights must be >= 0, got {ce_weight}, {kd_weight}")
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        # the soft term, shared with kd (alpha unused there: only soft_term is called)
        self.soft = KDLoss(alpha=1.0, temperature=temperature, standardize=standardize)

    @property
    def uses_teacher(self) -> bool:
        return self.kd_weight > 0.0

    def combine(self, ce, student, teacher, labels):
        return self.ce_weight * ce + self.kd_weight * self.soft.soft_term(student, teacher)

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}"
