"""Learnable connectors of feature-based distillation, built from measured feature shapes.

A connector maps a student feature to the teacher's shape (or both to a shared space). It is
owned by the method's loss module (trainables/losses/feature_base.py), so its parameters are
optimised with the student's (trial.py adds the loss's parameters to the optimiser), its
state goes into the trial checkpoint under `connectors`, and it is never part of the student:
checkpoint.load_model / analysis/export.py rebuild the student from its own state_dict only.

    ConvRegressor(s_channels, s_size, t_channels, t_size)   FitNets' regressor
    Embed(in_dim, out_dim)                                  CRD's linear + L2 normalisation
    ABF(in_ch, mid_ch, out_ch, fuse)                        ReviewKD's attention-based fusion
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvRegressor(nn.Module):
    """FitNets' regressor as RepDistiller's models/util.py ConvReg (and mdistiller's
    mdistiller/distillers/FitNet.py, which imports it): a conv that maps the student map to
    the teacher's channels and size, then BN and ReLU. Size rules, as the reference:
    s = 2t: 3x3 conv stride 2; 2s = t: 4x4 transposed conv stride 2; s >= t: a valid conv of
    kernel 1 + s - t. A student map smaller than a quarter of the teacher's is refused."""

    def __init__(self, s_channels: int, s_size: tuple[int, int], t_channels: int,
                 t_size: tuple[int, int]) -> None:
        super().__init__()
        (s_h, s_w), (t_h, t_w) = s_size, t_size
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_channels, t_channels, 3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_channels, t_channels, 4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_channels, t_channels, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"FitNets regressor: student map {s_size} is too small for the "
                             f"teacher's {t_size} (the reference handles s >= t and 2s = t)")
        self.bn = nn.BatchNorm2d(t_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class LinearRegressor(nn.Module):
    """FitNets' regressor for (N, width) hidden layers (an MLP student): linear, BN, ReLU."""

    def __init__(self, s_dim: int, t_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(s_dim, t_dim)
        self.bn = nn.BatchNorm1d(t_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.linear(x)))


class Embed(nn.Module):
    """CRD's embedding (RepDistiller crd/criterion.py Embed): linear to `out_dim`, then L2
    normalisation of each row."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2, dim=1)


class ABF(nn.Module):
    """ReviewKD's attention-based fusion (mdistiller/distillers/ReviewKD.py ABF, from
    dvlab-research/ReviewKD): 1x1 conv + BN to `mid`, fused with the upsampled residual of the
    deeper level through two sigmoid attention maps, resized to `out_size`, 3x3 conv + BN to
    the teacher's channels. Returns (output, residual for the next, shallower level)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(mid_channels * 2, 2, 1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)  # as the reference
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, (h, w), mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + residual * z[:, 1].view(n, 1, h, w)
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x
