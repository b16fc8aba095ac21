"""Flexible MLP on flattened images, registered as `mlp`.

    create_model("mlp", 10, (1, 28, 28), width=1200, depth=2)   # Hinton's MNIST teacher

`depth` hidden blocks of `width` units (Linear [-> BN] -> activation [-> Dropout]), then a
linear head. `input_dropout` drops input pixels before the first block, `dropout` the hidden
units (Srivastava et al. 2014 used 0.2 and 0.5 on MNIST, as did Hinton et al. 2015's teacher). With residual=True every hidden block after the first adds its input (the
first maps C*H*W -> width, so it has no skip). 2x1200 on MNIST: 2,395,210 parameters.

A dropped input takes the value `input_fill` (in the units the model sees; one value, or one
per channel), and the kept ones are scaled about it: x -> fill + dropout(x - fill). Srivastava
et al. dropped raw pixels to black; the inputs here are standardised, where 0 is the dataset's
mean (grey on MNIST) and black is -mean/std. `resolve_input_fill` turns input_fill "black"
(what the trainables use unless a config says otherwise) or "mean" into those numbers.
"""
from __future__ import annotations

import torch
from torch import nn

from kdtune.models.registry import positive_int, register_model

INPUT_FILLS = ("black", "mean")  # input_fill's names; resolve_input_fill turns them into values

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """Activation module by name; unknown name -> ValueError listing the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class HiddenBlock(nn.Module):
    """Linear [-> BatchNorm1d] -> activation [-> Dropout], with an optional skip."""

    def __init__(self, in_f: int, out_f: int, activation: str, batch_norm: bool,
                 dropout: float, residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_f, out_f)
        self.norm = nn.BatchNorm1d(out_f) if batch_norm else nn.Identity()
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # A skip needs matching widths; the caller only asks for one when in_f == out_f.
        self.residual = residual and in_f == out_f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.norm(self.linear(x))))
        return x + out if self.residual else out


class FlexibleMLP(nn.Module):
    """Flatten -> `depth` hidden blocks -> linear head. See the module docstring."""

    def __init__(self, in_features: int, num_classes: int, width: int = 256, depth: int = 2,
                 residual: bool = False, batch_norm: bool = False, dropout: float = 0.0,
                 activation: str = "relu", input_dropout: float = 0.0,
                 input_fill: torch.Tensor | float = 0.0) -> None:
        super().__init__()
        positive_int("width", width)
        positive_int("depth (number of hidden layers)", depth)
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        make_activation(activation)  # fail on a bad name before building anything
        self.input_drop = nn.Dropout(float(input_dropout)) if input_dropout > 0 else nn.Identity()
        fill = torch.as_tensor(input_fill, dtype=torch.float32).flatten()
        if fill.numel() not in (1, in_features):
            raise ValueError(f"input_fill needs 1 or {in_features} values, got {fill.numel()}")
        # Not saved in state_dict: it comes from the spec, and checkpoints from before it load as they were.
        self.register_buffer("input_fill", fill, persistent=False)
        self.blocks = nn.Sequential(*[
            HiddenBlock(in_features if i == 0 else width, width, activation, batch_norm,
                        float(dropout), residual and i > 0)
            for i in range(depth)
        ])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        if self.training and isinstance(self.input_drop, nn.Dropout):  # eval: the identity either way
            x = self.input_fill + self.input_drop(x - self.input_fill)
        return self.head(self.blocks(x))

    def gradient_probes(self) -> list[tuple[str, nn.Module]]:
        """Every Linear, hidden ones then the head, named layer00, layer01, ..."""
        linears = [blk.linear for blk in self.blocks] + [self.head]
        return [(f"layer{i:02d}", m) for i, m in enumerate(linears)]


@register_model
def mlp(num_classes: int, in_shape: tuple[int, int, int], width: int = 256, depth: int = 2,
        residual: bool = False, batch_norm: bool = False, dropout: float = 0.0,
        activation: str = "relu", input_dropout: float = 0.0,
        input_fill: float | list[float] = 0.0) -> FlexibleMLP:
    """MLP over the C*H*W flattened image; `input_fill`: one value, or one per channel."""
    c, h, w = in_shape
    if isinstance(input_fill, str):
        raise ValueError(f"input_fill {input_fill!r} needs the data's normalisation: "
                         f"resolve it with models.mlp.resolve_input_fill first")
    fill = torch.as_tensor(input_fill, dtype=torch.float32).flatten()
    if fill.numel() not in (1, c):
        raise ValueError(f"input_fill needs 1 value or one per channel ({c}), got {fill.numel()}")
    if fill.numel() == c > 1:  # flattening is channel-major: channel k owns inputs k*H*W .. (k+1)*H*W - 1
        fill = fill.repeat_interleave(h * w)
    return FlexibleMLP(c * h * w, num_classes, width, depth, residual, batch_norm, dropout, activation,
                       input_dropout, fill)


def check_input_fill_name(fill):
    """`fill` back, unless it is a string that is not one of INPUT_FILLS (ValueError)."""
    if isinstance(fill, str) and fill not in INPUT_FILLS:
        raise ValueError(f"input_fill must be a number or one of {INPUT_FILLS}, got {fill!r}")
    return fill


def resolve_input_fill(model: str, kwargs: dict, mean, std) -> dict:
    """`kwargs` for create_model with input_fill as numbers for data normalised by mean / std
    (per channel, [0, 1] pixel units): "black" -> -mean/std, "mean" -> 0. An mlp with input
    dropout and no input_fill gets "black", the pixels Srivastava et al. dropped. Other models,
    and numbers, pass through."""
    fill = kwargs.get("input_fill")
    if model != "mlp" or not (isinstance(fill, str) or (fill is None and kwargs.get("input_dropout", 0) > 0)):
        return kwargs
    fill = check_input_fill_name(fill or "black")
    values = [-m / s if fill == "black" else 0.0 for m, s in zip(mean, std)]
    return {**kwargs, "input_fill": values}
