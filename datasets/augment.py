"""Batched, on-device augmentation of uint8 image batches (no per-sample Python loop).

`crop_flip` is the standard CIFAR recipe: zero-pad 4 pixels, take a random crop of the
original size, flip horizontally with probability 1/2. `jitter` is the MNIST one of Hinton et
al. (2015, section 3): translate each image by up to 2 pixels in x and in y (zero fill, no
flip), which is a crop of the zero-padded image at a random offset. Both are one
`torch.gather` over the padded batch; `draw_params` / `apply_params` split the draws from the gather, so a
loader can draw one set per image for a whole epoch. Random draws come from a CPU `torch.Generator` and are then moved
to the batch's device, so the same generator state gives the same pixels on CPU and GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip", "jitter")  # the names a DatasetBundle's `augment` may take
CROP_PADDING = 4  # pixels of zero padding on each side before the random crop
JITTER_PIXELS = 2  # largest shift in x and in y (Hinton et al. 2015: "up to two pixels")
# The default `pixels` of each augmentation: crop padding, or largest jitter shift.
DEFAULT_PIXELS = {"none": 0, "crop_flip": CROP_PADDING, "jitter": JITTER_PIXELS}


def crop_flip_params(n: int, generator: torch.Generator,
                     padding: int = CROP_PADDING) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (n, 2) in 0 .. 2 * padding and flip flags (n,), on CPU."""
    span = 2 * padding + 1  # possible offsets per axis: 0 .. 2 * padding
    offsets = torch.randint(0, span, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    return offsets, flips


def jitter_params(n: int, generator: torch.Generator,
                  pixels: int = JITTER_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifts of up to `pixels` in each axis, as crop offsets (n, 2) in 0 .. 2 * pixels into
    the `pixels`-padded image (offset `pixels` = no shift), and no flips; on CPU."""
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    return offsets, torch.zeros(n, dtype=torch.bool)


def crop_flip_at(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                 padding: int = CROP_PADDING) -> torch.Tensor:
    """Crop (same H, W) from `padding`-pixel zero padding, then flip horizontally: image i is
    cropped at offsets[i] and flipped if flips[i] (from `crop_flip_params`).

    images: uint8 (B, C, H, W) on any device; returns a new tensor of the same shape/dtype.
    """
    b, c, h, w = images.shape
    dev = images.device
    offsets, flips = offsets.to(dev), flips.to(dev)
    padded = F.pad(images, (padding, padding, padding, padding))  # zeros, uint8 kept
    pw = w + 2 * padding
    rows = offsets[:, :1] + torch.arange(h, device=dev)  # (B, H) rows in padded coords
    col_ids = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], w - 1 - col_ids, col_ids) + offsets[:, 1:]  # (B, W)
    flat = (rows[:, :, None] * pw + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat)
    return out.view(b, c, h, w)


# Per-image parameters, drawn for a whole split at once: image i's view then depends only on
# the generator and i, not on the batch it lands in (what a cache of teacher logits per
# augmented view needs, see DeviceLoader's `views`).
AugmentParams = tuple[torch.Tensor, ...]


def resolve_pixels(name: str, pixels: int | None) -> int:
    """`pixels` checked for augmentation `name`; None = its default (DEFAULT_PIXELS)."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment {name!r}; expected one of {AUGMENTS}")
    if pixels is None:
        return DEFAULT_PIXELS[name]
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < (1 if name != "none" else 0):
        raise ValueError(f"augment pixels for {name!r} must be a positive integer, got {pixels!r}")
    return pixels


def draw_params(name: str, n: int, generator: torch.Generator,
                pixels: int | None = None) -> AugmentParams:
    """Parameters of augmentation `name` (one of AUGMENTS) for n images, on CPU;
    `pixels`: crop padding (crop_flip) or largest shift (jitter), None = the default."""
    pixels = resolve_pixels(name, pixels)
    if name == "crop_flip":
        return crop_flip_params(n, generator, pixels)
    if name == "jitter":
        return jitter_params(n, generator, pixels)
    return ()


def apply_params(name: str, images: torch.Tensor, params: AugmentParams,
                 pixels: int | None = None) -> torch.Tensor:
    """Augment a batch with its rows of `draw_params` output (already indexed to the batch);
    `pixels` must be the value the parameters were drawn with."""
    if name == "none":
        return images
    return crop_flip_at(images, *params, padding=resolve_pixels(name, pixels))
