"""torchvision's ResNet-18 / ResNet-50 adapted to small images, registered as resnet18 / resnet50.

    create_model("resnet50", 100, (3, 32, 32), weights_path="r50.pt", freeze_backbone=True)

The nets are torchvision's own (`torchvision.models.ResNet` with its BasicBlock/Bottleneck,
as `resnet18(weights=None)` builds them), with conv1 replaced by a 3x3 stride-1 conv over
in_shape[0] channels and the max-pool removed: a 7x7/2 conv + pool would shrink a 32x32
image to 8x8 before the first stage. Pretrained weights only ever come from a local
state-dict file (`weights_path`); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdtune.models.registry import register_model

# torchvision is imported when a net is built (models/small_image_resnet.py says why).

# Keys allowed to differ in shape from a checkpoint: the stem we replace and the head.
_RESHAPABLE = ("conv1.weight", "fc.weight", "fc.bias")


def build(block: str, layers: list[int], num_classes: int,
          in_shape: tuple[int, int, int], weights_path: str | None,
          freeze_backbone: bool) -> nn.Module:
    """A small-image torchvision ResNet (`block` "basic" or "bottleneck"), optionally
    warm-started and/or frozen but for fc."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from kdtune.models.small_image_resnet import SmallImageResNet

    blocks = {"basic": BasicBlock, "bottleneck": Bottleneck}
    model = SmallImageResNet(blocks[block], layers, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    if weights_path is not None:
        load_matching(model, weights_path)
    if freeze_backbone:
        # Linear probing: only the head learns, and the backbone's BN statistics stay put
        # (SmallImageResNet.train keeps it in eval mode).
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("fc.")
        model.frozen_backbone = True
        model.train(model.training)
    return model


def load_matching(model: nn.Module, weights_path: str | Path) -> list[str]:
    """Load a local state dict into `model`, skipping conv1/fc keys whose shapes differ.

    Every other key must be present with the same shape (ValueError otherwise): a
    checkpoint of another architecture should not half-load silently. Returns the skipped keys.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights_path {str(path)!r} does not exist (a local state-dict "
                                "file saved with torch.save(model.state_dict(), path) is expected)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    skipped = [k for k in own if k in state and state[k].shape != own[k].shape]
    bad = [k for k in skipped if k not in _RESHAPABLE]
    if missing or unexpected or bad:
        raise ValueError(
            f"{path} does not match {type(model).__name__}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, shape mismatches {bad[:5]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


@register_model
def resnet18(num_classes: int, in_shape: tuple[int, int, int], weights_path: str | None = None,
             freeze_backbone: bool = False) -> nn.Module:
    """torchvision ResNet-18, small-image stem (11.2 M params for 10 classes)."""
    return build("basic", [2, 2, 2, 2], num_classes, in_shape, weights_path, freeze_backbone)


@register_model
def resnet50(num_classes: int, in_shape: tuple[int, int, int], weights_path: str | None = None,
             freeze_backbone: bool = False) -> nn.Module:
    """torchvision ResNet-50, small-image stem (23.5 M params for 10 classes)."""
    return build("bottleneck", [3, 4, 6, 3], num_classes, in_shape, weights_path, freeze_backbone)
