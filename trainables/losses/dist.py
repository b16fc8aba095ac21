"""`dist`: DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022).

Instead of matching probabilities exactly (KL), DIST matches their *relations* with Pearson
correlation, which is invariant to shifts and positive scalings of the predictions:

    Y_s = softmax(s / tau), Y_t = softmax(t / tau)                    (N, C)
    inter = 1 - mean_i rho(Y_s[i, :], Y_t[i, :])     per example, across its classes
    intra = 1 - mean_c rho(Y_s[:, c], Y_t[:, c])     per class, across the batch
    loss  = CE(s, y) + tau^2 * (beta * inter + gamma * intra)

rho(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + eps), eps = 1e-8, as the
official code (hunto/image_classification_sota, lib/models/losses/dist_kd.py). The intra term
needs a batch of at least 2. CE weight 1, as the official training recipes (the DIST term is
added to the task loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import DistillationLoss, register_loss

EPS = 1e-8  # the official code's eps in the correlation's denominator


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (N, K) tensors -> (N,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


@register_loss
class DISTLoss(DistillationLoss):
    """DIST.

    beta: inter-class relation weight; gamma: intra-class relation weight; temperature: tau.
    Defaults beta = gamma = 2: the loss weights of the official training recipes
    (hunto/DIST_KD, ImageNet and CIFAR-100: the DIST term enters with beta = gamma = 2; the
    DIST class's own keyword defaults of 1 are not what its recipes train with). tau = 1 is
    the official ImageNet setting; its CIFAR-100 recipe uses tau = 4. kdtune's presets
    search beta, gamma and tau around these.
    """

    name = "dist"
    hyperparameters = (
        Hyperparameter("dist_beta", 2.0, low=0.0, search=(0.5, 4.0), log=True, kwarg="beta",
                       source="official DIST training recipes (ImageNet and CIFAR-100): beta = 2",
                       help="inter-class relation weight"),
        Hyperparameter("dist_gamma", 2.0, low=0.0, search=(0.5, 4.0), log=True, kwarg="gamma",
                       source="official DIST training recipes (ImageNet and CIFAR-100): gamma = 2",
                       help="intra-class relation weight"),
        Hyperparameter("dist_temperature", 1.0, low=0.0, low_open=True, search=(1.0, 4.0),
                       kwarg="temperature", short="T",
                       source="official DIST tau (ImageNet); CIFAR-100 ports use 4",
                       help="softmax temperature tau"),
    )

    def __init__(self, beta: float = 2.0, gamma: float = 2.0, temperature: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        if beta < 0 or gamma < 0:
            raise ValueError(f"DIST weights must be >= 0, got beta={beta}, gamma={gamma}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.beta, self.gamma, self.temperature = float(beta), float(gamma), float(temperature)

    @property
    def uses_teacher(self) -> bool:
        return self.beta > 0.0 or self.gamma > 0.0

    def relations(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inter, intra) relation losses at temperature tau, without the tau^2 factor."""
        tau = self.temperature
        y_s = F.softmax(student.float() / tau, dim=1)
        y_t = F.softmax(teacher.detach().float() / tau, dim=1)
        inter = 1.0 - pearson(y_s, y_t).mean()
        intra = 1.0 - pearson(y_s.t(), y_t.t()).mean()
        return inter, intra

    def combine(self, ce, student, teacher, labels):
        inter, intra = self.relations(student, teacher)
        return ce + self.temperature ** 2 * (self.beta * inter + self.gamma * intra)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"
