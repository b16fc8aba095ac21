"""Model registry (timm style): one function per architecture, name = function name.

Teachers and students are both built here, so a config names a model and its kwargs and
nothing else. Every model built by `create_model` carries a JSON-able `kdtune_spec`;
checkpoints store it and `create_from_spec` rebuilds the architecture from it (a teacher is
rebuilt from its metadata, never from its checkpoint path: docs/architecture.md).

    from kdtune.models import create_model, count_params
    net = create_model("resnet20", num_classes=10, in_shape=(3, 32, 32))
    count_params(net)  # 272474
"""
from __future__ import annotations

import difflib
import inspect
import json
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ModelFn = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFn] = {}

# Every registered function takes these two positionally-named arguments first.
_FIXED_ARGS = ("num_classes", "in_shape")

# Kwargs that only say where initial weights come from. They are left out of the spec:
# the checkpoint that carries the spec holds the weights, and the file may not exist on
# the machine that rebuilds the model.
LOAD_ONLY_KWARGS = frozenset({"weights_path", "pretrained"})


def register_model(fn: ModelFn) -> ModelFn:
    """Decorator: register `fn` under its own name; returns `fn` unchanged."""
    return register_model_as(fn.__name__, fn)


# Name prefixes resolved on first use ("timm:resnet18", "torchvision:resnet50"): a zoo has
# hundreds of names, so they are built by a factory, not registered one by one.
_RESOLVERS: dict[str, Callable[[str], ModelFn]] = {}


def register_resolver(prefix: str, factory: Callable[[str], ModelFn]) -> None:
    """Models named PREFIX:ARCH are built by `factory(ARCH)` (a model function) when first used."""
    _RESOLVERS[prefix] = factory


def register_model_as(name: str, fn: ModelFn) -> ModelFn:
    """Register `fn` under `name` (names such as "timm:resnet" are not Python identifiers)."""
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    params = list(inspect.signature(fn).parameters)
    if tuple(params[:2]) != _FIXED_ARGS:
        raise TypeError(f"model function {name!r} must start with (num_classes, in_shape, ...)")
    no_default = [
        p.name for p in list(inspect.signature(fn).parameters.values())[2:]
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    if no_default:
        # Every kwarg needs a default: the spec records resolved values and configs may omit any.
        raise TypeError(f"model function {name!r}: kwargs {no_default} need defaults")
    _REGISTRY[name] = fn
    return fn


def resolve(name: str) -> bool:
    """Register a PREFIX:ARCH zoo name now if a resolver knows it; True when `name` is a model.
    (A zoo name is registered in the process that first uses it: a Ray worker resolves it again.)"""
    try:
        _lookup(name)
    except ValueError:
        return False
    return True


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments model `name` accepts, with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in _FIXED_ARGS and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def create_model(name: str, num_classes: int, in_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build registered model `name` for `num_classes` outputs on inputs of shape (C, H, W).

    Raises ValueError for an unknown name, an unknown kwarg, or a bad value.
    """
    fn = _lookup(name)
    num_classes = positive_int("num_classes", num_classes)
    shape = _check_in_shape(in_shape)
    accepted = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hints = [h for k in unknown for h in difflib.get_close_matches(k, accepted, n=1)]
        hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
        raise ValueError(
            f"model {name!r} got unknown kwargs {unknown}{hint}; "
            f"it accepts: {sorted(accepted) or 'no kwargs'}"
        )
    model = fn(num_classes, shape, **kwargs)
    # Record every kwarg with its default filled in, so a checkpoint still rebuilds the
    # same net if a default changes later.
    resolved = {**accepted, **kwargs}
    spec_kwargs = {k: _jsonable(k, v) for k, v in resolved.items() if k not in LOAD_ONLY_KWARGS}
    model.kdtune_spec = {
        "name": name,
        "num_classes": num_classes,
        "in_shape": list(shape),
        "kwargs": spec_kwargs,
    }
    return model


def create_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from the `kdtune_spec` dict that `create_model` attached to it.

    Only the architecture is rebuilt: the weights come from the checkpoint holding the spec.
    """
    missing = [k for k in ("name", "num_classes", "in_shape") if k not in spec]
    if missing:
        raise ValueError(f"model spec is missing {missing}: {dict(spec)!r}")
    extra = sorted(set(spec) - {"name", "num_classes", "in_shape", "kwargs"})
    if extra:
        raise ValueError(f"model spec has unknown keys {extra}")
    return create_model(
        spec["name"], spec["num_classes"], tuple(spec["in_shape"]), **dict(spec.get("kwargs") or {})
    )


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once); only requires_grad ones if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_image(model: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """FLOPs of one eval-mode forward pass on one (C, H, W) image.

    Counted by torch's FlopCounterMode, which counts a multiply-add as 2 FLOPs and covers
    matmuls and convolutions (not BN, activations or pooling). Every module's train/eval
    mode is restored afterwards.
    """
    shape = _check_in_shape(in_shape)
    modes = {m: m.training for m in model.modules()}
    ref = next(model.parameters(), None)
    x = torch.zeros(1, *shape, device=ref.device if ref is not None else "cpu",
                    dtype=ref.dtype if ref is not None else torch.float32)
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for m, training in modes.items():
            m.training = training
    return int(counter.get_total_flops())


def gradient_probes(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ordered (input -> output) layers whose weight-gradient norms a training loop tracks.

    Uses the model's own `gradient_probes()` when it has one; otherwise every module that
    owns a weight of 2 or more dimensions (Linear, Conv), in registration order.
    Each probe is a module with a >= 2-D `.weight`.
    """
    method = getattr(model, "gradient_probes", None)
    if callable(method):
        return list(method())
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2
    ]


def positive_int(name: str, value: object) -> int:
    """`value` if it is an int >= 1 (bools refused), else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _lookup(name: str) -> ModelFn:
    prefix, sep, arch = str(name).partition(":")
    if name not in _REGISTRY and sep and prefix in _RESOLVERS and arch:
        register_model_as(name, _RESOLVERS[prefix](arch))  # ValueError for an unknown arch
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def _check_in_shape(in_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(in_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"in_shape must be three positive ints (C, H, W), got {in_shape!r}")
    return shape  # type: ignore[return-value]


def _jsonable(key: str, value: Any) -> Any:
    """Tuples become lists so the spec survives a JSON round trip unchanged."""
    if isinstance(value, tuple):
        value = [_jsonable(key, v) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ValueError(f"model kwarg {key}={value!r} is not JSON-serialisable; "
                         "checkpoints store model kwargs as JSON") from None
    return value
