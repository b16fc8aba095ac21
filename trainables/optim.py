"""Optimiser and learning-rate schedule from a config.

Optimisers sgd (momentum, nesterov), adam, adamw; schedules cosine, step, onecycle, constant.

`build_optimizer(cfg, model)` and `build_schedule(cfg, optimizer, steps_per_epoch)`; the
returned `Schedule` says whether to step after every batch (cosine, onecycle: smooth in
the step count, so the last partial epoch is not a cliff) or after every epoch (step: its
milestones are epochs). `constant` has no scheduler at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser over every trainable parameter, weight decay on all of them
    (as in the classic KD recipes the seeds reproduce)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0  # torch rejects nesterov without momentum
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


@dataclass
class Schedule:
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        return None if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def build_schedule(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Schedule:
    total = max(1, cfg.epochs * steps_per_epoch)  # optimiser steps in the whole run
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return Schedule(sched.CosineAnnealingLR(optimizer, T_max=total), per_batch=True)
    if cfg.schedule == "onecycle":
        # Momentum is not cycled: it is a searched hyperparameter and must keep its value.
        return Schedule(sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
                                         cycle_momentum=False), per_batch=True)
    if cfg.schedule == "step":
        return Schedule(sched.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                          gamma=cfg.gamma), per_batch=False)
    if cfg.schedule == "constant":
        return Schedule(None, per_batch=False)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
