"""Batched, on-device augmentation of uint8 image batches (no per-sample Python loop).

`crop_flip` is the standard CIFAR recipe: zero-pad 4 pixels, take a random crop of the
original size, flip horizontally with probability 1/2. Crop and flip are one `torch.gather`
over the padded batch. Random draws come from a CPU `torch.Generator` and are then moved
to the batch's device, so the same generator state gives the same pixels on CPU and GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_PADDING = 4  # pixels of zero padding on each side before the random crop


def crop_flip(images: torch.Tensor, generator: torch.Generator,
              padding: int = CROP_PADDING) -> torch.Tensor:
    """Random crop (same H, W) from `padding`-pixel zero padding + random horizontal flip.

    images: uint8 (B, C, H, W) on any device; returns a new tensor of the same shape/dtype.
    """
    b, c, h, w = images.shape
    dev = images.device
    span = 2 * padding + 1  # possible offsets per axis: 0 .. 2 * padding
    offsets = torch.randint(0, span, (b, 2), generator=generator).to(dev)
    flips = torch.randint(0, 2, (b,), generator=generator).to(dev).bool()

    padded = F.pad(images, (padding, padding, padding, padding))  # zeros, uint8 kept
    pw = w + 2 * padding
    rows = offsets[:, :1] + torch.arange(h, device=dev)  # (B, H) rows in padded coords
    col_ids = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], w - 1 - col_ids, col_ids) + offsets[:, 1:]  # (B, W)
    flat = (rows[:, :, None] * pw + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat)
    return out.view(b, c, h, w)


def apply_augment(name: str, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dispatch on the bundle's `augment` name ("none" returns the batch unchanged)."""
    if name == "none":
        return images
    if name == "crop_flip":
        return crop_flip(images, generator)
    raise ValueError(f"unknown augment {name!r}; expected 'none' or 'crop_flip'")
