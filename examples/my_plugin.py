"""A worked kdtune plugin: one student model and one distillation loss, loaded with --import.

    kdtune search --dataset digits --import examples/my_plugin.py \
        --students tiny_cnn,mlp --methods kd,cosine --num-samples 6 --smoke-test

`tiny_cnn` is registered as a model; it is no sized family, so the search trains it as it is
(only its training hyperparameters are searched). `cosine` is a loss the search samples
beside kd, with its own hyperparameter (the config's `alpha`). The file is imported in the
driver and in every Ray worker, and recorded in the experiment's manifest, so --resume, the
analysis scripts and `kdtune export` find `tiny_cnn` without being told.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

import kdtune


@kdtune.register_model
def tiny_cnn(num_classes: int, in_shape: tuple[int, int, int], channels: int = 16) -> nn.Module:
    """Two 3x3 convolutions, global average pooling and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1, stride=2), nn.BatchNorm2d(2 * channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, num_classes))


@kdtune.register_loss
class CosineLogitLoss(kdtune.AlphaBlendLoss):
    """(1 - alpha) * CE + alpha * (1 - cos(student logits, teacher logits)), averaged over the batch."""

    name = "cosine"
    config_fields = (("alpha", "alpha"),)

    def __init__(self, alpha: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__(alpha, label_smoothing)

    def soft_term(self, student, teacher):
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
