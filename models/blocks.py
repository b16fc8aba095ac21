"""Residual blocks (He et al. 2016) shared by the flexible ResNet and the CIFAR ResNets.

Both blocks take `residual`: False drops the skip path entirely (no shortcut module, no
projection), giving the "plain" network of the paper; `factorized` swaps each 3x3 conv for
3x1 + 1x3. Shortcuts that change shape use a 1x1 conv + BN projection ("option B").
"""
from __future__ import annotations

import torch
from torch import nn

from kdtune.models.layers import conv3x3


def _shortcut(in_ch: int, out_ch: int, stride: int, residual: bool) -> nn.Module | None:
    if not residual:
        return None
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (conv-BN-ReLU-conv-BN), plus the skip, then ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1,
                 residual: bool = True, factorized: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = conv3x3(in_ch, planes, stride, factorized)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, factorized)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_ch, planes, stride, residual)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zeroed by zero_init_residual)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1,
                 residual: bool = True, factorized: bool = False) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, factorized)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_ch, out_ch, stride, residual)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def block_class(block: str) -> type[nn.Module]:
    """'basic' or 'bottleneck' -> the block class; anything else -> ValueError."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {sorted(BLOCKS)}")
    return BLOCKS[block]


def make_stage(block: type[nn.Module], in_ch: int, planes: int, n_blocks: int, stride: int,
               residual: bool = True, factorized: bool = False) -> tuple[nn.Sequential, int]:
    """`n_blocks` blocks, the first carrying `stride`; returns the stage and its out channels."""
    layers = []
    for i in range(n_blocks):
        layers.append(block(in_ch, planes, stride if i == 0 else 1, residual, factorized))
        in_ch = planes * block.expansion
    return nn.Sequential(*layers), in_ch


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal convs (fan_out, as torchvision), BN gamma 1 / beta 0.

    zero_init_residual zeroes the last BN gamma of each residual branch, so every block
    starts as the identity (Goyal et al. 2017).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)
