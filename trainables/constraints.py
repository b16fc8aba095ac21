"""Weight constraints applied after every optimiser step.

`max_norm` (Srivastava et al. 2014, section 5.1; Hinton et al. 2015's MNIST teacher): each
hidden unit's incoming weight vector is projected back onto the L2 ball of radius `c`
whenever a step takes it outside (a projection, not a penalty: weights inside the ball are
untouched). For a Linear weight (out, in) that is each row; for a conv weight (out, in, kh,
kw) each output channel's filter. Srivastava et al. found c in 3-4 best on MNIST.
"""
from __future__ import annotations

import torch
from torch import nn

CONSTRAINED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MaxNorm:
    """The max-norm projection of a model's constrained weights (call it after a step), and how
    much it binds: whether a radius is active depends on the input scaling and the lr (with
    inputs standardised, MNIST's pixels span ~3.2x their [0, 1] range, so first-layer rows need
    ~1/3.2 of the norm Srivastava et al.'s c was chosen for)."""

    def __init__(self, weights: list[torch.Tensor], radius: float) -> None:
        self.weights, self.radius = weights, radius

    @torch.no_grad()
    def __call__(self) -> None:
        for w in self.weights:
            # renorm rescales each sub-tensor along dim 0 whose norm exceeds maxnorm to maxnorm.
            torch.renorm(w, p=2, dim=0, maxnorm=self.radius, out=w)

    @torch.no_grad()
    def bound_fraction(self) -> float:
        """The share of constrained rows (hidden units, output classes, conv filters) whose norm
        is at the radius (within 0.1%): 0.0 means the constraint did nothing since the last step."""
        norms = torch.cat([w.flatten(1).float().norm(dim=1) for w in self.weights])
        return float((norms >= self.radius * (1 - 1e-3)).float().mean()) if len(norms) else 0.0


def max_norm_constraint(model: nn.Module, max_norm: float | None) -> MaxNorm | None:
    """The constraint on `model`'s constrained weights (None: no constraint)."""
    if max_norm is None:
        return None
    return MaxNorm([m.weight for m in model.modules()
                    if isinstance(m, CONSTRAINED) and m.weight.requires_grad], max_norm)
