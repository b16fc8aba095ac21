"""Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024).

    z_std = (z - mean(z)) / (std(z) + eps)        per example, over the classes

applied to the student's and the teacher's logits before the temperature, so the student
matches the teacher's logit *relations* rather than their range and variance. Its output does
not change when a logit vector is shifted or scaled by a positive factor. Sun et al.'s code
(logit-standardization-KD, `normalize` in mdistiller/distillers/KD.py and DKD.py) uses the
unbiased standard deviation and eps = 1e-7; so does this. It is an option of `kd` and `dkd`
(`logit_standardize`), not a loss of its own.
"""
from __future__ import annotations

import torch

EPS = 1e-7  # as the reference code: keeps a constant logit vector finite (it maps to 0)


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Z-score each row of `logits` (N, C) over its C classes (unbiased std, as Sun et al.)."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + EPS)
