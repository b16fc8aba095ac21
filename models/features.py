"""Feature taps: a model's named stages, read with forward hooks (the plain forward is unchanged).

Feature-based distillation methods (trainables/losses/feature_*.py) ask for "stage k" or "the
pooled feature" of any model, never for a model's own attributes:

    stages = feature_info(model, in_shape)      # [StageInfo('stage1', 'stages.0', 16, 1, ...), ...]
    tap = FeatureTap(model, stages=(1, 2, 3), pooled=True, preact=False)
    logits = model(x)                           # the plain forward: exports and checkpoints unchanged
    tap.stage(3), tap.pooled()                  # what that forward produced
    tap.remove()                                # the hooks go away

How a model names its stages (first match wins), so built-in, timm and user models plug in:
1. `model.feature_stages()` -> list of module paths (a user-registered model may define it);
2. timm models: `model.feature_info` (timm's FeatureInfo or its list of dicts, each with a
   'module' path; timm's `forward_intermediates` computes the same maps, the hooks need no
   second forward);
3. built-in models: a `stages` nn.Sequential (cifar_resnet, resnet), torchvision's
   layer1..layer4 (resnet18/50), an MLP's `blocks` (hidden layers: (N, width) "stages").
The pooled feature is the input of the classifier (`fc`, `head`, or timm's
`get_classifier()`): mdistiller's `pooled_feat` (the global-average-pooled last stage of a
CNN, the last hidden layer of an MLP).

Channels, spatial size and stride (`reduction`, input size / map size, timm's term) are
measured by one probe forward on a zero batch of two images in eval mode (train mode is
restored), so no model has to declare them.

Pre-activation maps (mdistiller's `preact_feats`: a residual stage's output before its final
ReLU; ReviewKD reads the teacher's) are tapped at the input of the stage's last block's
`relu` module on its last call (BasicBlock/Bottleneck here and in torchvision apply `relu`
last). That input is cloned, because the ReLU is in-place. A model without such a module has
no pre-activation tap: `preact_available` is False and the tap returns the stage output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class StageInfo:
    """One tappable stage: its name ('stage1', ...), module path, channels (C of the
    (N, C, H, W) map, or the width of an MLP's (N, width) hidden layer), spatial size
    (H, W; None for an MLP) and reduction (input height / map height; 1 for an MLP)."""

    name: str
    module: str
    channels: int
    size: tuple[int, int] | None
    reduction: int

    @property
    def spatial(self) -> bool:
        return self.size is not None


def stage_modules(model: nn.Module) -> list[str]:
    """Module paths of `model`'s stages, input to output (see the module docstring)."""
    own = getattr(model, "feature_stages", None)
    if callable(own):
        return list(own())
    info = getattr(model, "feature_info", None)  # timm
    if info is not None and not callable(info):
        entries = info.info if hasattr(info, "info") else info
        paths = [e["module"] for e in entries if e.get("module")]
        if paths:
            return paths
    if isinstance(getattr(model, "stages", None), nn.Sequential):
        return [f"stages.{i}" for i in range(len(model.stages))]
    layers = [f"layer{i}" for i in range(1, 5) if hasattr(model, f"layer{i}")]
    if layers:
        return layers
    if isinstance(getattr(model, "blocks", None), nn.Sequential):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    raise ValueError(f"{type(model).__name__} has no stages a feature method can tap: give it a "
                     "`feature_stages()` method returning module paths (see models/features.py)")


def classifier(model: nn.Module) -> nn.Module:
    """The final linear layer, whose input is the pooled feature."""
    get = getattr(model, "get_classifier", None)  # timm
    if callable(get):
        return get()
    for name in ("fc", "head", "classifier"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"{type(model).__name__} has no classifier (fc, head, get_classifier()) "
                     "whose input would be the pooled feature")


def feature_info(model: nn.Module, in_shape: Sequence[int]) -> list[StageInfo]:
    """Every stage of `model` with channels, size and reduction, from one probe forward."""
    paths = stage_modules(model)
    tap = FeatureTap(model, stages=range(1, len(paths) + 1), pooled=False)
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *in_shape, device=param.device, dtype=param.dtype))
        out = []
        for k, path in enumerate(paths, start=1):
            f = tap.stage(k)
            if f.dim() == 4:
                size = (int(f.shape[2]), int(f.shape[3]))
                out.append(StageInfo(f"stage{k}", path, int(f.shape[1]), size,
                                     max(1, int(in_shape[1]) // size[0])))
            else:
                out.append(StageInfo(f"stage{k}", path, int(f.shape[1]), None, 1))
        return out
    finally:
        tap.remove()
        model.train(was_training)


def pooled_dim(model: nn.Module) -> int:
    """Width of the pooled feature (the classifier's input features)."""
    head = classifier(model)
    if not hasattr(head, "in_features"):
        raise ValueError(f"the classifier of {type(model).__name__} is not a linear layer")
    return int(head.in_features)


class FeatureTap:
    """Forward hooks on a model's stages (1-based `stages`) and classifier input.

    Each forward overwrites what the previous one left, so a tap holds one batch's features
    (the last forward's), and holds them only until the next forward: no growth over an epoch.
    """

    def __init__(self, model: nn.Module, stages: Sequence[int] = (), pooled: bool = False,
                 preact: bool = False) -> None:
        self.paths = stage_modules(model)
        self.stages = tuple(int(k) for k in stages)
        bad = [k for k in self.stages if not 1 <= k <= len(self.paths)]
        if bad:
            raise ValueError(f"{type(model).__name__} has stages 1..{len(self.paths)}; asked for {bad}")
        modules = dict(model.named_modules())
        self._out: dict[int, torch.Tensor] = {}
        self._pooled: torch.Tensor | None = None
        self._handles = []
        self.preact_available = False
        for k in self.stages:
            stage = modules[self.paths[k - 1]]
            relu = _last_relu(stage) if preact else None
            if relu is not None:
                self.preact_available = True
                self._handles.append(relu.register_forward_pre_hook(self._keeper_pre(k)))
            else:
                self._handles.append(stage.register_forward_hook(self._keeper(k)))
        if pooled:
            self._handles.append(classifier(model).register_forward_pre_hook(self._keep_pooled))

    def _keeper(self, k: int):
        def hook(_module, _inputs, output):
            self._out[k] = output
        return hook

    def _keeper_pre(self, k: int):
        def hook(_module, inputs):
            # in-place ReLU overwrites its input: keep a copy; the last call is the block's end
            self._out[k] = inputs[0].clone()
        return hook

    def _keep_pooled(self, _module, inputs):
        self._pooled = torch.flatten(inputs[0], 1)

    def stage(self, k: int) -> torch.Tensor:
        if k not in self._out:
            raise RuntimeError(f"stage {k} was not tapped, or the model has not run forward yet")
        return self._out[k]

    def features(self) -> list[torch.Tensor]:
        """The tapped stages' maps of the last forward, in the order asked for."""
        return [self.stage(k) for k in self.stages]

    def pooled(self) -> torch.Tensor:
        if self._pooled is None:
            raise RuntimeError("the pooled feature was not tapped, or the model has not run forward yet")
        return self._pooled

    def clear(self) -> None:
        self._out.clear()
        self._pooled = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()


def _last_relu(stage: nn.Module) -> nn.Module | None:
    """The `relu` module of a stage's last block (the ReLU it applies last), if any."""
    blocks = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
    relu = getattr(blocks[-1], "relu", None) if blocks else None
    return relu if isinstance(relu, nn.ReLU) else None
