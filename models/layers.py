"""Layers shared by the ResNets: DropBlock, the (optionally factorized) 3x3 conv, probe lookup."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop contiguous block_size x block_size regions.

    Active only in training mode with drop_prob > 0; identity otherwise. Kept activations
    are rescaled so the expected sum of the feature map is unchanged (like dropout).
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"dropblock drop probability must be in [0, 1), got {drop_prob!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"dropblock block size must be a positive int, got {block_size!r}")
        self.drop_prob = float(drop_prob)
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        _, _, h, w = x.shape
        # Small maps (e.g. 1x1 after four stages of an 8x8 input) cap the block size.
        bs = min(self.block_size, h, w)
        # gamma: the seed rate that drops about drop_prob of the units (paper, eq. 1);
        # seeds are only placed where a whole block fits.
        gamma = self.drop_prob / (bs * bs) * (h * w) / ((h - bs + 1) * (w - bs + 1))
        lo, hi_off = bs - 1 - bs // 2, bs // 2  # seed margins so the block stays inside
        seeds = torch.zeros_like(x)
        seeds[:, :, lo: h - hi_off, lo: w - hi_off] = 1.0
        seeds = torch.bernoulli(seeds * gamma)
        # Grow each seed into a bs x bs block; crop back when bs is even.
        dropped = F.max_pool2d(seeds, kernel_size=bs, stride=1, padding=bs // 2)[:, :, :h, :w]
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


class FactorizedConv3x3(nn.Sequential):
    """A 3x3 conv replaced by a 3x1 conv then a 1x3 conv (Szegedy et al. 2016).

    Weights: 3*in*out + 3*out*out instead of 9*in*out (a third fewer when in == out).
    No nonlinearity in between: it is a low-rank stand-in for the one 3x3 conv.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, (3, 1), stride=(stride, 1), padding=(1, 0), bias=False),
            nn.Conv2d(out_ch, out_ch, (1, 3), stride=(1, stride), padding=(0, 1), bias=False),
        )


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, factorized: bool = False) -> nn.Module:
    """3x3 conv, padding 1, no bias (a BN follows); factorized into 3x1 + 1x3 if asked."""
    if factorized:
        return FactorizedConv3x3(in_ch, out_ch, stride)
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def first_weighted(module: nn.Module) -> nn.Module:
    """The first module (itself or a descendant) owning a >= 2-D weight: a gradient probe."""
    for m in module.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            return m
    raise ValueError(f"{type(module).__name__} has no weighted layer to probe")
