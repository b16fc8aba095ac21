"""Flexible ResNet for small images, registered as `resnet`.

    create_model("resnet", 10, (3, 32, 32), block="basic", layers=(2, 2, 2, 2), width=64)

Stem: a 3x3 stride-1 conv to `width` channels, no max-pool (28x28 / 32x32 inputs are too
small to downsample 4x up front). Then 3 or 4 stages of widths width, 2x, 4x, 8x (the first
at stride 1, the others at stride 2), global average pooling and a linear head, so any
input size works. `residual=False` gives the same net without skips (a plain CNN, for the
vanishing-gradient comparison); DropBlock, if on, follows the last two stages.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from kdtune.models.blocks import block_class, init_weights, make_stage
from kdtune.models.layers import DropBlock2d, conv3x3, first_weighted
from kdtune.models.registry import positive_int, register_model


class FlexibleResNet(nn.Module):
    """Stem -> stages -> global average pool -> fc. See the module docstring."""

    def __init__(self, in_channels: int, num_classes: int, block: str = "basic",
                 layers: Sequence[int] = (2, 2, 2, 2), width: int = 64, residual: bool = True,
                 zero_init_residual: bool = False, dropblock: float = 0.0,
                 dropblock_size: int = 3, factorized: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        block_cls = block_class(block)
        layers = _check_layers(layers)
        positive_int("width", width)
        if zero_init_residual and not residual:
            raise ValueError("zero_init_residual=True needs residual=True: without a skip, "
                             "a zeroed branch would output zeros")
        DropBlock2d(dropblock, dropblock_size)  # validates both values even when it is off
        self.stem = nn.Sequential(
            conv3x3(in_channels, width, 1, factorized),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, ch = [], width
        for i, n_blocks in enumerate(layers):
            stage, ch = make_stage(block_cls, ch, width * 2 ** i, n_blocks,
                                   stride=1 if i == 0 else 2, residual=residual,
                                   factorized=factorized)
            if dropblock > 0.0 and i >= len(layers) - 2:
                # Ghiasi et al. found DropBlock helps most on the later (lower-res) groups.
                stage.append(DropBlock2d(dropblock, dropblock_size))
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # Plain (element-wise) dropout before the classifier: the baseline DropBlock is compared to.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(ch, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))

    def gradient_probes(self) -> list[tuple[str, nn.Module]]:
        """Stem conv, the first conv of every block, fc: input to output."""
        probes = [("stem", first_weighted(self.stem[0]))]
        for s, stage in enumerate(self.stages):
            for b, blk in enumerate(stage):
                if hasattr(blk, "conv1"):
                    probes.append((f"stage{s + 1}.block{b}", first_weighted(blk.conv1)))
        probes.append(("fc", self.fc))
        return probes


@register_model
def resnet(num_classes: int, in_shape: tuple[int, int, int], block: str = "basic",
           layers: Sequence[int] = (2, 2, 2, 2), width: int = 64, residual: bool = True,
           zero_init_residual: bool = False, dropblock: float = 0.0, dropblock_size: int = 3,
           factorized: bool = False, dropout: float = 0.0) -> FlexibleResNet:
    """Flexible small-image ResNet; defaults give a ResNet-18-shaped net (11.2 M params)."""
    return FlexibleResNet(in_shape[0], num_classes, block, layers, width, residual,
                          zero_init_residual, dropblock, dropblock_size, factorized, dropout)


def _check_layers(layers: Sequence[int]) -> list[int]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) not in (3, 4):
        raise ValueError(f"layers must list 3 or 4 stage depths, e.g. (2, 2, 2, 2); got {layers!r}")
    for n in layers:
        positive_int("every entry of layers", n)
    return list(layers)
