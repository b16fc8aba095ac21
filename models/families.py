"""Student families: a registry of (name, size dimensions with ranges/steps/units, a builder).

A family is what the search sizes: it names the registered model it builds and the size
dimensions it takes. Every dimension is called `depth` or `width` (the two size keys a trial
config carries), but what it means, its default range, its grid and its unit are the family's:

    mlp               depth = hidden layers (1-4), width = units per hidden layer (16-1024)
    cifar_resnet      depth = layers, 6n+2 (8-56, step 6), width = first-stage channels (8-64)
    timm:resnet       timm's ResNet with BasicBlocks: depth = blocks per stage (1-3; 1 = ResNet-10),
                      width = channels of its first stage, doubled per stage (8-64; 64 = ResNet-18's)
    timm:mobilenetv3  timm's `_gen_mobilenet_v3("mobilenetv3_large_100", ...)` builder:
                      depth = depth multiplier in % (50-150, step 25), width = channel multiplier in %
                      (25-150, log-sampled)
    timm:efficientnet timm's `_gen_efficientnet("efficientnet_b0", ...)`: depth and width multipliers
                      in % (50-200 step 25 / 25-200; B1..B7 are multiplier pairs of this builder)

A registered model that is not a family is a student as it is: a family with no size
dimensions (`family("user_net")`), so `--students user_net` searches only its training.

    from kdtune.models.families import register_family, SizeDim
    register_family("my_net", model="my_net", dims=(SizeDim("width", (8, 128), log=True, unit="channels"),))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from kdtune.models.registry import count_params, create_model, flops_per_image, list_models

SIZE_NAMES = ("depth", "width")


@dataclass(frozen=True)
class SizeDim:
    """One size dimension of a family: its default [lo, hi] range, grid and unit.

    Values on the grid are start, start + step, ...; `log` samples it on a log scale.
    """

    name: str
    default: tuple[int, int]
    step: int = 1
    start: int = 1
    log: bool = False
    unit: str = ""

    def grid(self, lo: int, hi: int) -> tuple[int, int, int]:
        """Snap [lo, hi] onto the grid -> (first, last, step); ValueError when it holds no value."""
        first = max(lo, self.start)
        first += (self.start - first) % self.step
        last = hi - (hi - self.start) % self.step
        if first > last:
            raise ValueError(f"{self.name} range {lo}:{hi} holds no valid value ({self.start}, "
                             f"{self.start + self.step}, ...)")
        return first, last, self.step


@dataclass(frozen=True)
class Family:
    name: str
    model: str                          # the registered model it builds
    dims: tuple[SizeDim, ...] = ()

    def dim(self, name: str) -> SizeDim | None:
        return next((d for d in self.dims if d.name == name), None)

    def build(self, num_classes: int, in_shape: tuple[int, int, int], **sizes: int) -> nn.Module:
        return create_model(self.model, num_classes, tuple(in_shape), **sizes)

    def size(self, num_classes: int, in_shape: tuple[int, int, int], **sizes: int) -> tuple[int, int]:
        """(params, FLOPs per image) of one member, built on the meta device (no memory, no init)."""
        with torch.device("meta"):
            net = self.build(num_classes, in_shape, **sizes)
        params = count_params(net)
        try:
            flops = flops_per_image(net, in_shape)
        except Exception:  # an op without a meta kernel: count on the CPU instead
            flops = flops_per_image(self.build(num_classes, in_shape, **sizes), in_shape)
        return params, flops


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, model: str, dims: tuple[SizeDim, ...] = ()) -> Family:
    """Register a student family (a plugin may add its own); returns it."""
    for d in dims:
        if d.name not in SIZE_NAMES:
            raise ValueError(f"family {name!r}: size dimension {d.name!r} must be one of {SIZE_NAMES}")
        # One Optuna study samples every family's `depth` (and `width`) under one parameter
        # name, and Optuna refuses one name with two log settings: depth is linear (any
        # step), width log-scaled (step 1, Optuna's rule for log).
        if d.log != (d.name == "width") or (d.log and d.step != 1):
            raise ValueError(f"family {name!r}: {d.name} must be {'log-scaled with step 1' if d.name == 'width' else 'linear'}")
    fam = Family(name, model, tuple(dims))
    if name in _FAMILIES and _FAMILIES[name] != fam:
        raise ValueError(f"family {name!r} is already registered")
    _FAMILIES[name] = fam
    return fam


def list_families() -> list[str]:
    """Registered families and every other registered model (a student as it is), sorted."""
    return sorted(set(_FAMILIES) | set(list_models()))


def sized_families() -> list[str]:
    return sorted(_FAMILIES)


def family(name: str) -> Family:
    """The family `name`; a registered model that is not one is a family without size dimensions."""
    if name in _FAMILIES:
        return _FAMILIES[name]
    if name in list_models():
        return Family(name, name, ())
    raise ValueError(f"unknown student family {name!r}; families: {', '.join(sized_families())}; "
                     "or any registered model (kdtune.list_models())")


register_family("mlp", "mlp", (
    SizeDim("depth", (1, 4), unit="hidden layers"),
    SizeDim("width", (16, 1024), log=True, unit="units per hidden layer")))
register_family("cifar_resnet", "cifar_resnet", (
    SizeDim("depth", (8, 56), step=6, start=8, unit="layers (6n+2)"),
    SizeDim("width", (8, 64), log=True, unit="first-stage channels")))
register_family("timm:resnet", "timm:resnet", (
    SizeDim("depth", (1, 3), unit="BasicBlocks per stage"),
    SizeDim("width", (8, 64), log=True, unit="first-stage channels (x2 per stage)")))
register_family("timm:mobilenetv3", "timm:mobilenetv3", (
    SizeDim("depth", (50, 150), step=25, start=50, unit="% depth multiplier"),
    SizeDim("width", (25, 150), log=True, unit="% channel multiplier")))
register_family("timm:efficientnet", "timm:efficientnet", (
    SizeDim("depth", (50, 200), step=25, start=50, unit="% depth multiplier"),
    SizeDim("width", (25, 200), log=True, unit="% channel multiplier")))
