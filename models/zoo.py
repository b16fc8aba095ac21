"""Models from the timm and torchvision zoos: sized student families and named teachers.

Registered here (timm is imported only when one is built, so `import kdtune.models` stays fast):
- the sized families of models/families.py: "timm:resnet" (timm's `ResNet` with BasicBlocks,
  `layers=[depth] * 4`, `channels=(w, 2w, 4w, 8w)`), "timm:mobilenetv3" and
  "timm:efficientnet" (timm's private `_gen_mobilenet_v3` / `_gen_efficientnet` builders, which
  take `depth_multiplier` and `channel_multiplier`: so depth and width are multipliers, given
  in percent to keep the trial config's integer size keys);
- any "timm:NAME" or "torchvision:NAME" (a teacher, usually): the zoo's own architecture with
  its classifier sized to the dataset, weights from a local file (`weights_path`: a state dict
  or a timm checkpoint; the classifier keys, whose shape differs, are left at their
  initialisation and trained), `freeze_backbone` for a linear probe, `pretrained` for the
  zoo's weights by name (needs the network: offline it is one error line).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdtune.models.registry import register_model_as, register_resolver


class ZooNet(nn.Module):
    """A zoo model behind kdtune's interface: channel adaptation, linear-probe BatchNorm.

    `repeat_channels`: a 1-channel image fed to a net with a 3-channel stem (torchvision's
    fixed stems) is repeated over the three channels. With `frozen_backbone` everything but
    the classifier stays in eval mode (frozen BatchNorm statistics would otherwise drift).
    """

    def __init__(self, net: nn.Module, classifier: nn.Module, repeat_channels: int = 1,
                 frozen_backbone: bool = False):
        super().__init__()
        self.net, self.repeat_channels, self.frozen_backbone = net, repeat_channels, frozen_backbone
        self._classifier_ids = {id(m) for m in classifier.modules()}
        if frozen_backbone:
            for m in net.modules():
                if id(m) not in self._classifier_ids:
                    for p in m.parameters(recurse=False):
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ZooNet":
        super().train(mode)
        if self.frozen_backbone:
            for m in self.net.modules():
                if id(m) not in self._classifier_ids:
                    m.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_channels > 1:
            x = x.expand(-1, self.repeat_channels, -1, -1)
        return self.net(x)


def _state_dict_of(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file or a timm checkpoint ({"state_dict"|"model"|"state_dict_ema": ...})."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights_path {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds neither a state dict nor a timm checkpoint")
    # timm's train.py saves DataParallel / torch.compile prefixes as they were.
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_zoo_weights(net: nn.Module, classifier_keys: set[str], path: str | Path) -> list[str]:
    """Load `path` into `net`; classifier keys of another shape (the zoo's 1000 classes) are
    skipped, every other key must match (ValueError otherwise). Returns the skipped keys."""
    state, own = _state_dict_of(path), net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    skipped = [k for k in own if k in state and state[k].shape != own[k].shape]
    bad = [k for k in skipped if k not in classifier_keys]
    if missing or unexpected or bad:
        raise ValueError(f"{path} does not match {type(net).__name__}: missing keys {missing[:3]}, "
                         f"unexpected keys {unexpected[:3]}, shape mismatches {bad[:3]}")
    net.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def _offline(zoo: str, arch: str, exc: Exception) -> ValueError:
    return ValueError(f"{zoo}:{arch}: pretrained weights could not be downloaded ({type(exc).__name__}); "
                      "offline, give a local file with --teacher-weights instead")


def _classifier_keys(net: nn.Module, classifier: nn.Module) -> set[str]:
    ids = {id(p) for p in classifier.parameters()} | {id(b) for b in classifier.buffers()}
    return {k for k, v in net.state_dict(keep_vars=True).items() if id(v) in ids}


def timm_named(arch: str):
    """The model function of "timm:ARCH" (ValueError for a name timm does not know)."""
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"timm has no model {arch!r} (timm.list_models() lists them)")

    def build(num_classes: int, in_shape: tuple[int, int, int], weights_path: str | None = None,
              freeze_backbone: bool = False, pretrained: bool = False, drop_rate: float = 0.0) -> nn.Module:
        try:
            net = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes,
                                    in_chans=in_shape[0], drop_rate=drop_rate)
        except (OSError, RuntimeError) as exc:
            if pretrained:
                raise _offline("timm", arch, exc) from None
            raise
        head = net.get_classifier()
        if weights_path:
            load_zoo_weights(net, _classifier_keys(net, head), weights_path)
        return ZooNet(net, head, frozen_backbone=freeze_backbone)

    build.__doc__ = f"timm's {arch} (timm.create_model), classifier sized to the dataset."
    return build


def torchvision_named(arch: str):
    """The model function of "torchvision:ARCH"."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {arch!r} "
                         "(torchvision.models.list_models() lists them)")

    def build(num_classes: int, in_shape: tuple[int, int, int], weights_path: str | None = None,
              freeze_backbone: bool = False, pretrained: bool = False) -> nn.Module:
        if pretrained:
            try:
                net = torchvision.models.get_model(arch, weights="DEFAULT")
            except (OSError, RuntimeError) as exc:
                raise _offline("torchvision", arch, exc) from None
            _resize_head(net, num_classes)
        else:
            net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        head = _torchvision_head(net)
        if weights_path:
            load_zoo_weights(net, _classifier_keys(net, head), weights_path)
        # torchvision's stems take 3 channels: a grey image is repeated over them.
        return ZooNet(net, head, repeat_channels=3 if in_shape[0] == 1 else 1, frozen_backbone=freeze_backbone)

    build.__doc__ = f"torchvision's {arch}, classifier sized to the dataset."
    return build


def _torchvision_head(net: nn.Module) -> nn.Module:
    for name in ("fc", "classifier", "head", "heads"):
        if isinstance(getattr(net, name, None), nn.Module):
            return getattr(net, name)
    raise ValueError(f"{type(net).__name__}: no classifier attribute (fc, classifier, head, heads) to size")


def _resize_head(net: nn.Module, num_classes: int) -> None:
    head = _torchvision_head(net)
    linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__}: its classifier has no Linear layer to resize")
    name, last = linears[-1]
    new = nn.Linear(last.in_features, num_classes)
    if name:
        parent = head.get_submodule(name.rpartition(".")[0]) if "." in name else head
        setattr(parent, name.rpartition(".")[2], new)
    else:
        for attr in ("fc", "classifier", "head", "heads"):
            if getattr(net, attr, None) is head:
                setattr(net, attr, new)


register_resolver("timm", timm_named)
register_resolver("torchvision", torchvision_named)


# ---- sized student families -------------------------------------------------------------------

def timm_resnet(num_classes: int, in_shape: tuple[int, int, int], depth: int = 2, width: int = 64) -> nn.Module:
    """timm ResNet with BasicBlocks: `depth` blocks per stage (2 = ResNet-18), stage widths
    (width, 2w, 4w, 8w) (64 = ResNet-18). timm's 7x7/2 stem and max-pool are kept: a 28x28
    image reaches the last stage at 1x1, a 32x32 one at 1x1."""
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [int(depth)] * 4, num_classes=num_classes, in_chans=in_shape[0],
                  channels=tuple(int(width) * m for m in (1, 2, 4, 8)), stem_width=int(width),
                  # Every block's last BatchNorm at its usual init (timm zeroes it by default,
                  # which leaves each residual branch without gradient at step 0; kdtune's
                  # cifar_resnet does not zero it either, so the families start alike).
                  zero_init_last=False)


def timm_mobilenetv3(num_classes: int, in_shape: tuple[int, int, int], depth: int = 100,
                     width: int = 100) -> nn.Module:
    """timm MobileNetV3-Large built by `_gen_mobilenet_v3` with depth/channel multipliers in %."""
    from timm.models.mobilenetv3 import _gen_mobilenet_v3

    return _gen_mobilenet_v3("mobilenetv3_large_100", channel_multiplier=width / 100,
                             depth_multiplier=depth / 100, num_classes=num_classes, in_chans=in_shape[0])


def timm_efficientnet(num_classes: int, in_shape: tuple[int, int, int], depth: int = 100,
                      width: int = 100) -> nn.Module:
    """timm EfficientNet built by `_gen_efficientnet` with depth/channel multipliers in %
    (B0 = 100/100, B1 = 110/100, ..., the compound-scaled variants)."""
    from timm.models.efficientnet import _gen_efficientnet

    return _gen_efficientnet("efficientnet_b0", channel_multiplier=width / 100,
                             depth_multiplier=depth / 100, num_classes=num_classes, in_chans=in_shape[0])


register_model_as("timm:resnet", timm_resnet)
register_model_as("timm:mobilenetv3", timm_mobilenetv3)
register_model_as("timm:efficientnet", timm_efficientnet)
