"""CIFAR ResNets of He et al. 2016 (sec. 4.2) and the wide ones of the CRD/DKD repos.

    create_model("cifar_resnet", 10, (3, 32, 32), depth=20, width=16)   # == resnet20
    create_model("resnet32x4", 100, (3, 32, 32))                          # CRD teacher

Three stages of width w, 2w, 4w (bottleneck: inner widths w, 2w, 4w, outputs x4) after a
3x3 stem; depth = 6n+2 (basic) or 9n+2 (bottleneck) counts every conv and the fc.
Shape-changing shortcuts are 1x1 conv + BN projections ("option B"); they add 2,752
parameters to resnet20 (272,474 vs 269,722 with the paper's parameter-free option A).
resnet8x4 / resnet32x4 follow HobbitLong/RepDistiller: a 32-channel stem, then stages of
64, 128, 256 channels (1.2 M / 7.4 M parameters for 100 classes).
The student search varies `depth` and `width` of `cifar_resnet`.
"""
from __future__ import annotations

import torch
from torch import nn

from kdtune.models.blocks import block_class, init_weights, make_stage
from kdtune.models.layers import first_weighted
from kdtune.models.registry import positive_int, register_model


class CifarResNet(nn.Module):
    """3x3 stem -> 3 stages (stride 1, 2, 2) -> global average pool -> fc."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 20, width: int = 16,
                 block: str = "basic", stem_width: int | None = None,
                 residual: bool = True) -> None:
        super().__init__()
        block_cls = block_class(block)
        n = blocks_per_stage(depth, block)
        positive_int("width", width)
        stem_width = positive_int("stem_width", width if stem_width is None else stem_width)
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        stages, ch = [], stem_width
        for i in range(3):
            stage, ch = make_stage(block_cls, ch, width * 2 ** i, n,
                                   stride=1 if i == 0 else 2, residual=residual)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    def gradient_probes(self) -> list[tuple[str, nn.Module]]:
        """Stem conv, the first conv of every block, fc: input to output."""
        probes = [("stem", first_weighted(self.stem[0]))]
        for s, stage in enumerate(self.stages):
            for b, blk in enumerate(stage):
                probes.append((f"stage{s + 1}.block{b}", first_weighted(blk.conv1)))
        probes.append(("fc", self.fc))
        return probes


def blocks_per_stage(depth: int, block: str) -> int:
    """n from depth = 6n+2 (basic: 2 convs a block) or 9n+2 (bottleneck: 3 convs)."""
    per_block = 2 if block == "basic" else 3
    step = 3 * per_block
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < step + 2 or (depth - 2) % step:
        valid = ", ".join(str(step * k + 2) for k in range(1, 5))
        raise ValueError(f"cifar_resnet depth with block={block!r} must be {step}n+2 "
                         f"(e.g. {valid}, ...), got {depth!r}")
    return (depth - 2) // step


@register_model
def cifar_resnet(num_classes: int, in_shape: tuple[int, int, int], depth: int = 20,
                 width: int = 16, block: str = "basic", stem_width: int | None = None,
                 residual: bool = True) -> CifarResNet:
    """He et al.'s CIFAR ResNet of any depth 6n+2 / 9n+2 and base width (stem = width)."""
    return CifarResNet(in_shape[0], num_classes, depth, width, block, stem_width, residual)


@register_model
def resnet20(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """ResNet-20 (0.27 M params for 10 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=20, width=16, residual=residual)


@register_model
def resnet32(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """ResNet-32 (0.47 M params for 10 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=32, width=16, residual=residual)


@register_model
def resnet44(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """ResNet-44 (0.66 M params for 10 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=44, width=16, residual=residual)


@register_model
def resnet56(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """ResNet-56 (0.86 M params for 10 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=56, width=16, residual=residual)


@register_model
def resnet110(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """ResNet-110 (1.7 M params for 10 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=110, width=16, residual=residual)


@register_model
def resnet8x4(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """CRD's resnet8x4: stem 32, stages 64/128/256, one block each (1.2 M params, 100 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=8, width=64, stem_width=32, residual=residual)


@register_model
def resnet32x4(num_classes: int, in_shape: tuple[int, int, int], residual: bool = True) -> CifarResNet:
    """CRD's resnet32x4: stem 32, stages 64/128/256, five blocks each (7.4 M params, 100 classes)."""
    return cifar_resnet(num_classes, in_shape, depth=32, width=64, stem_width=32, residual=residual)
