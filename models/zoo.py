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
  zoo's weights by name (needs the network: offline it is one error line, at once: the hub
  is probed first and, unreachable, asked in its offline mode, which reads only the local
  cache instead of retrying each file for a minute).

Input normalisation: a named zoo model expects its inputs normalised its own way (timm's
`pretrained_cfg` mean/std, torchvision's weights' transforms: ImageNet's for most), while
kdtune's loaders normalise by the dataset's mean/std. Given the dataset's (`data_mean`,
`data_std`: the trainables pass them, `resolve_zoo_input`), ZooNet maps each batch to the
model's normalisation first (an affine map per channel: the same pixels, normalised the
model's way). A model that takes one size only (timm's `fixed_input_size`) refuses other
image sizes in one line.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from kdtune.models.registry import register_model_as, register_resolver


# How a model name asks for a zoo model ("timm:NAME", "torchvision:NAME"; sized families too).
ZOO_PREFIXES = ("timm:", "torchvision:")


class ZooRefusal(ValueError):
    """A zoo model's own refusal, one line that names the model ("timm:vit_...: ..."): its
    pretrained weights cannot be downloaded offline, or it takes one input size only. The
    search's pre-flight passes it on as is (search/input/validate.py)."""


class ZooNet(nn.Module):
    """A zoo model behind kdtune's interface: channel adaptation, linear-probe BatchNorm.

    `repeat_channels`: a 1-channel image fed to a net with a 3-channel stem (torchvision's
    fixed stems) is repeated over the three channels. With `frozen_backbone` everything but
    the classifier stays in eval mode (frozen BatchNorm statistics would otherwise drift).
    """

    def __init__(self, net: nn.Module, classifier: nn.Module, repeat_channels: int = 1,
                 frozen_backbone: bool = False, input_map: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.net, self.repeat_channels, self.frozen_backbone = net, repeat_channels, frozen_backbone
        # input_map: (scale, shift) per channel, x -> x * scale + shift (renormalise_map); not
        # in the state dict: rebuilt from the spec's data_mean / data_std like the architecture.
        self.renormalises = input_map is not None
        if input_map is not None:
            self.register_buffer("in_scale", input_map[0].reshape(1, -1, 1, 1), persistent=False)
            self.register_buffer("in_shift", input_map[1].reshape(1, -1, 1, 1), persistent=False)
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
        if self.renormalises:
            x = x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        return self.net(x)


def renormalise_map(data_mean: Sequence[float], data_std: Sequence[float], model_mean: Sequence[float],
                    model_std: Sequence[float], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel mapping (p - data_mean) / data_std to (p - model_mean) / model_std.

    Pixels p in [0, 1]: x_model = x_data * (data_std / model_std) + (data_mean - model_mean) / model_std.
    The dataset's values are broadcast over `channels` (a grey image repeated over an RGB stem);
    a model config with 3 values for a 1-channel stem (timm sums its RGB filters for in_chans 1)
    is averaged to one.
    """
    def fit(values: Sequence[float], what: str) -> torch.Tensor:
        t = torch.tensor([float(v) for v in values], dtype=torch.float32)
        if len(t) == channels:
            return t
        if len(t) == 1:
            return t.expand(channels).clone()
        if channels == 1:
            return t.mean().reshape(1)
        raise ValueError(f"{what} has {len(t)} values for a {channels}-channel input")

    dm, ds = fit(data_mean, "data_mean"), fit(data_std, "data_std")
    mm, ms = fit(model_mean, "the model's mean"), fit(model_std, "the model's std")
    return ds / ms, (dm - mm) / ms


def resolve_zoo_input(model: str, kwargs: dict, mean, std) -> dict:
    """`kwargs` for create_model plus the dataset's normalisation (data_mean / data_std) when
    `model` is a named zoo model ("timm:NAME", "torchvision:NAME") that takes it and kwargs
    do not set it: the model then sees its inputs normalised its own way. Others pass through."""
    if not str(model).startswith(ZOO_PREFIXES) or "data_mean" in kwargs:
        return kwargs
    from kdtune.models.registry import model_kwargs

    if "data_mean" not in model_kwargs(model):  # a sized family (timm:resnet): trained from scratch on these inputs
        return kwargs
    return {**kwargs, "data_mean": [float(m) for m in mean], "data_std": [float(s) for s in std]}


def _check_input_size(zoo: str, arch: str, cfg: dict, in_shape: tuple[int, int, int]) -> None:
    """One line for a model that takes one image size only (timm's fixed_input_size) and another size."""
    size = tuple(cfg.get("input_size") or ())
    if cfg.get("fixed_input_size") and len(size) == 3 and tuple(size[1:]) != tuple(in_shape[1:]):
        raise ZooRefusal(f"{zoo}:{arch} cannot take {in_shape[1]}x{in_shape[2]} images: it takes {size[1]}x{size[2]} "
                         f"only (its pretrained_cfg input_size is {size}, fixed_input_size); resize the images "
                         "(image_folder's --image-size) or choose another model")


# ---- the Hugging Face hub, offline ---------------------------------------------------------------

def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host (HF_ENDPOINT, else huggingface.co) opens within
    `timeout` seconds (the name lookup included: it runs in a thread that is not waited for)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)


@contextlib.contextmanager
def hub_offline_unless_reachable() -> Iterator[bool]:
    """Inside: the hub in its offline mode (local cache only, no request, no retries) when it is
    not reachable now; yields whether it was put offline. The hub reads HF_HUB_OFFLINE once, at
    import, so the module constant is switched (and restored), not the environment."""
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: timm downloads through torch.hub, which fails fast
        yield False
        return
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield bool(constants.HF_HUB_OFFLINE)
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False


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


def _offline(zoo: str, arch: str, exc: Exception) -> ZooRefusal:
    return ZooRefusal(f"{zoo}:{arch}: pretrained weights could not be downloaded ({type(exc).__name__}); "
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
              freeze_backbone: bool = False, pretrained: bool = False, drop_rate: float = 0.0,
              data_mean: list[float] | None = None, data_std: list[float] | None = None) -> nn.Module:
        try:
            with hub_offline_unless_reachable() if pretrained else contextlib.nullcontext():
                net = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes,
                                        in_chans=in_shape[0], drop_rate=drop_rate)
        except (OSError, RuntimeError) as exc:  # the hub's LocalEntryNotFoundError is an OSError
            if pretrained:
                raise _offline("timm", arch, exc) from None
            raise
        cfg = dict(getattr(net, "pretrained_cfg", None) or {})
        _check_input_size("timm", arch, cfg, in_shape)
        head = net.get_classifier()
        if weights_path:
            load_zoo_weights(net, _classifier_keys(net, head), weights_path)
        input_map = None
        if data_mean is not None and cfg.get("mean") and cfg.get("std"):
            input_map = renormalise_map(data_mean, data_std or [1.0], cfg["mean"], cfg["std"], in_shape[0])
        return ZooNet(net, head, frozen_backbone=freeze_backbone, input_map=input_map)

    build.__doc__ = f"timm's {arch} (timm.create_model), classifier sized to the dataset."
    return build


def torchvision_named(arch: str):
    """The model function of "torchvision:ARCH"."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {arch!r} "
                         "(torchvision.models.list_models() lists them)")

    def build(num_classes: int, in_shape: tuple[int, int, int], weights_path: str | None = None,
              freeze_backbone: bool = False, pretrained: bool = False,
              data_mean: list[float] | None = None, data_std: list[float] | None = None) -> nn.Module:
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
        repeat = 3 if in_shape[0] == 1 else 1
        channels = in_shape[0] * repeat
        input_map = None
        norm = _torchvision_normalisation(arch) if data_mean is not None else None
        if norm is not None:
            input_map = renormalise_map(data_mean, data_std or [1.0], norm[0], norm[1], channels)
        return ZooNet(net, head, repeat_channels=repeat, frozen_backbone=freeze_backbone,
                      input_map=input_map)

    build.__doc__ = f"torchvision's {arch}, classifier sized to the dataset."
    return build


def _torchvision_normalisation(arch: str) -> tuple[list[float], list[float]] | None:
    """(mean, std) of torchvision's default weights for `arch` (their transforms; nothing is
    downloaded), None for an architecture without published weights."""
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    return (list(mean), list(std)) if mean is not None and std is not None else None


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
