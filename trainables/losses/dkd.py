"""`dkd`: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022).

The KL of Hinton KD splits per example into a target-class term and a non-target term,

    KL(p^T || q^T) = TCKD + (1 - p_t^T) * NCKD,
    TCKD = KL([p_t, 1 - p_t] || [q_t, 1 - q_t])                 (binary: target vs the rest)
    NCKD = KL(p^T over the non-target classes, renormalised || q^T likewise)

(p teacher, q student, t the label, all at temperature T). DKD drops the (1 - p_t) factor that
suppresses NCKD for confident teachers and weights the two terms freely:

    loss = CE(s, y) + w * T^2 * (alpha * mean TCKD + beta * mean NCKD),
    w = min(progress / warmup_epochs, 1)            (warmup 0: w = 1)

progress being the epochs done at the end of the batch (epoch - 1 + the share of this epoch's
batches done, set by the loop). mdistiller's DKD (megvii-research/mdistiller,
mdistiller/distillers/DKD.py, epochs counted from 1) holds w = min(epoch / warmup, 1) for a
whole epoch; ours ramps within the epoch and reaches that value at its last batch. The
difference matters only for short runs: mdistiller's 20-epoch warm-up starts at 1/20, but a
1-epoch warm-up (a 12-epoch search's 1/12) would start at full weight, which is what made
DKD trials diverge in short searches (benchmarks/HISTORY.md, bench_methods). Computed in log space on the gathered non-target columns, so it is
exact and finite for extreme logits (the reference masks the target with -1000 and takes
log(softmax), which overflows to -inf there). With `standardize`, logits are z-scored first
(Sun et al. 2024 apply it to DKD the same way).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import LOGIT_STANDARDIZE, DistillationLoss, register_loss
from kdtune.trainables.losses.standardize import standardize as zscore


def _split_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) log [p_target, 1 - p_target] and (N, C-1) log-softmax over the non-target classes."""
    n, c = logits.shape
    target = logits.gather(1, labels.view(-1, 1))
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, labels.view(-1, 1), False)
    others = logits[keep].view(n, c - 1)
    lse_all = torch.logsumexp(logits, dim=1, keepdim=True)
    lse_others = torch.logsumexp(others, dim=1, keepdim=True)
    binary = torch.cat([target - lse_all, lse_others - lse_all], dim=1)
    return binary, others - lse_others


@register_loss
class DKDLoss(DistillationLoss):
    """Decoupled KD; defaults are mdistiller's (mdistiller/engine/cfg.py, CFG.DKD).

    alpha: TCKD weight (CFG.DKD.ALPHA = 1.0).
    beta: NCKD weight (CFG.DKD.BETA = 8.0; its per-pair CIFAR-100 configs change it, e.g.
        2.0 for resnet56 -> resnet20 in configs/cifar100/dkd/res56_res20.yaml).
    temperature: T (CFG.DKD.T = 4.0).
    warmup_epochs: epochs over which the KD term ramps linearly up to full weight
        (CFG.DKD.WARMUP = 20, of 240 training epochs; shorter runs want a shorter warm-up).
    standardize: z-score both logit vectors before T (Sun et al. 2024).
    The CE weight is 1 (CFG.DKD.CE_WEIGHT = 1.0).
    """

    name = "dkd"
    hyperparameters = (
        # log scale up to 20: DKD+LS (Sun et al. 2024) trains at alpha x 9.
        Hyperparameter("dkd_alpha", 1.0, low=0.0, search=(0.5, 20.0), log=True, kwarg="alpha",
                       source="mdistiller CFG.DKD.ALPHA, every CIFAR-100 pair (DKD+LS: 9x)",
                       help="TCKD (target-class) weight"),
        # log scale: the NCKD/CE ratio is what matters.
        # up to 100: DKD+LS (Sun et al. 2024) trains at beta x 9 (72 for beta 8).
        Hyperparameter("dkd_beta", 8.0, low=0.0, search=(1.0, 100.0), log=True, kwarg="beta",
                       source="mdistiller CFG.DKD.BETA (its per-pair configs use 2 to 8; DKD+LS: 9x)",
                       help="NCKD (non-target-class) weight"),
        # Its own temperature, not kd's: T^2 * beta * NCKD at kd's T = 20 is ~1e3 x CE and diverges.
        Hyperparameter("dkd_temperature", 4.0, low=0.0, low_open=True, search=(1.0, 4.0),
                       kwarg="temperature", short="T",
                       source="mdistiller CFG.DKD.T (CIFAR-100; 1 on ImageNet)",
                       help="softmax temperature of the decoupled terms"),
        # Pinned by default: 20 fits 240-epoch runs; presets set ~1/12 of their max_epochs.
        Hyperparameter("dkd_warmup", 20, kind="int", low=0, kwarg="warmup_epochs",
                       source="mdistiller CFG.DKD.WARMUP (of 240 epochs)",
                       help="epochs over which the KD term ramps up linearly"),
        LOGIT_STANDARDIZE,
    )

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: int = 20, label_smoothing: float = 0.0,
                 standardize: bool = False) -> None:
        super().__init__(label_smoothing)
        if alpha < 0 or beta < 0:
            raise ValueError(f"DKD weights must be >= 0, got alpha={alpha}, beta={beta}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = float(temperature)
        self.warmup_epochs = int(warmup_epochs)
        self.standardize = bool(standardize)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0.0 or self.beta > 0.0

    def warmup_weight(self) -> float:
        """min(progress / warmup_epochs, 1), progress = epochs done after this batch."""
        if self.warmup_epochs == 0:
            return 1.0
        return min(self.epochs_done / self.warmup_epochs, 1.0)

    def decoupled_terms(self, student: torch.Tensor, teacher: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example TCKD and NCKD (N,) at temperature T, without the T^2 factor."""
        s, t = student.float(), teacher.detach().float()
        if self.standardize:
            s, t = zscore(s), zscore(t)
        temp = self.temperature
        bin_s, rest_s = _split_log_probs(s / temp, labels)
        bin_t, rest_t = _split_log_probs(t / temp, labels)
        tckd = F.kl_div(bin_s, bin_t, reduction="none", log_target=True).sum(1)
        nckd = F.kl_div(rest_s, rest_t, reduction="none", log_target=True).sum(1)
        return tckd, nckd

    def combine(self, ce, student, teacher, labels):
        tckd, nckd = self.decoupled_terms(student, teacher, labels)
        temp2 = self.temperature ** 2
        kd = temp2 * (self.alpha * tckd.mean() + self.beta * nckd.mean())
        return ce + self.warmup_weight() * kd

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
                f"warmup_epochs={self.warmup_epochs}, standardize={self.standardize}")
