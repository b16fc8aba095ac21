"""A toy KD method in one file, registered on import: the whole cost of adding a method.

`toy`: (1 - toy_weight) * CE + toy_weight * toy_scale * mean |s - t| on the logits. Its two
hyperparameters are declared once, here; tests/test_method_plugins.py checks that the config,
the search space, the summaries and an end-to-end Ray search take them from this declaration.
Ray workers import this module through Ray's worker_process_setup_hook (`register`), the test
naming it in ray.init(runtime_env=...) with the repository root on the workers' PYTHONPATH.
"""
from __future__ import annotations

import torch

from kdtune.trainables.losses import Hyperparameter, register_loss
from kdtune.trainables.losses.registry import AlphaBlendLoss, loss_class

TOY_WEIGHT = Hyperparameter("toy_weight", 0.5, low=0.0, high=1.0, search=(0.2, 0.8),
                            kwarg="alpha", source="a test's choice", help="weight of the L1 term")
TOY_SCALE = Hyperparameter("toy_scale", 2, kind="int", low=1, search=(1, 4), kwarg="scale",
                           short="s", source="a test's choice", help="integer multiplier of the L1 term")


class ToyLoss(AlphaBlendLoss):
    name = "toy"
    needs = ("logits",)
    hyperparameters = (TOY_WEIGHT, TOY_SCALE)

    def __init__(self, alpha: float = 0.5, scale: int = 2, label_smoothing: float = 0.0) -> None:
        super().__init__(alpha, label_smoothing)
        self.scale = int(scale)

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.scale * (student - teacher).abs().mean()


def register() -> None:
    """Register `toy` once per process (Ray's worker_process_setup_hook calls this)."""
    try:
        if loss_class("toy") is ToyLoss:
            return
    except ValueError:
        pass
    register_loss(ToyLoss)


register()
