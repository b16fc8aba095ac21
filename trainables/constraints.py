"""Weight constraints applied after every optimiser step.

`max_norm` (Srivastava et al. 2014, section 5.1; Hinton et al. 2015's MNIST teacher): each
hidden unit's incoming weight vector is projected back onto the L2 ball of radius `c`
whenever a step takes it outside (a projection, not a penalty: weights inside the ball are
untouched). For a Linear weight (out, in) that is each row; for a conv weight (out, in, kh,
kw) each output channel's filter. Srivastava et al. found c in 3-4 best on MNIST.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

CONSTRAINED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def max_norm_constraint(model: nn.Module, max_norm: float | None) -> Callable[[], None] | None:
    """A function that renormalises `model`'s constrained weights in place (None: no constraint)."""
    if max_norm is None:
        return None
    weights = [m.weight for m in model.modules()
               if isinstance(m, CONSTRAINED) and m.weight.requires_grad]

    @torch.no_grad()
    def apply() -> None:
        for w in weights:
            # renorm rescales each sub-tensor along dim 0 whose norm exceeds maxnorm to maxnorm.
            torch.renorm(w, p=2, dim=0, maxnorm=max_norm, out=w)

    return apply
