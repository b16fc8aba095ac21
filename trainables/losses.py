"""Knowledge-distillation loss of Hinton et al. (2015), one nn.Module for every stage.

    loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

KL is averaged over the batch ("batchmean", the true KL per example). The T^2 factor keeps
the soft term's gradient magnitude roughly independent of T (its gradient scales as 1/T^2
for large T), so alpha keeps its meaning across temperatures. Everything is computed in
float32: bf16 logits from autocast are upcast first. With alpha == 0 or no teacher logits
only the cross-entropy is computed, so teacher training and the baseline use the same module.

    python -m pytest tests/test_losses.py -q
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KDLoss(nn.Module):
    """Hinton KD loss; `forward(student_logits, labels, teacher_logits=None)` -> scalar."""

    def __init__(self, alpha: float, temperature: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0.0

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        s = student_logits.float()
        ce = F.cross_entropy(s, labels, label_smoothing=self.label_smoothing)
        if teacher_logits is None or self.alpha == 0.0:
            return ce
        return (1.0 - self.alpha) * ce + self.alpha * self.soft_term(s, teacher_logits)

    def soft_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """T^2 * KL(p_teacher^T || p_student^T), batch mean, float32."""
        t = self.temperature
        log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
        # The teacher never receives gradients (frozen, and cached logits are constants).
        log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
        # log_target avoids exp -> log round trips: exact zeros stay finite for extreme logits.
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return kl * (t * t)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, temperature={self.temperature}, "
                f"label_smoothing={self.label_smoothing}")
