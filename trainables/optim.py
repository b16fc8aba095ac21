"""Optimisers and learning-rate schedules: two registries, like the model and dataset ones.

Optimisers sgd (momentum, nesterov), adam, adamw; schedules cosine, step, onecycle, constant.
A config names one of each (`optimizer`, `schedule`); `create_optimizer(cfg, model)` and
`create_schedule(cfg, optimizer, steps_per_epoch)` build them, and an unknown name is a
ValueError listing the known ones. A new optimiser is one decorated function:

    @register_optimizer
    def rmsprop(cfg, params):
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

Every built-in optimiser runs torch's fused implementation (one kernel per parameter tensor
for the whole update) where torch has one for all the parameters (floating point on CPU or
CUDA), else torch's default (foreach). On a 2-core EPYC the fused update is 2.2-6.0x faster
than foreach for SGD (nesterov, weight decay) and AdamW, from an 8 x 8 digits MLP to a CIFAR
ResNet-20, and a whole training step of an MLP 1.2-1.4x (benchmarks/README.md, bench_optim).
The update is the same arithmetic in another order: one step agrees with foreach to rounding
(<= ~1e-8; SGD on those models bitwise); over a run of a deep net the two drift apart like runs
on different thread counts do.

The returned `Schedule` says whether to step after every batch (cosine, onecycle: smooth in
the step count, so the last partial epoch is not a cliff) or after every epoch (step: its
milestones are epochs). `constant` has no scheduler at all.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

OptimizerFn = Callable[..., torch.optim.Optimizer]  # (cfg, params) -> optimiser
_OPTIMIZERS: dict[str, OptimizerFn] = {}


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


ScheduleFn = Callable[..., Schedule]  # (cfg, optimizer, total_steps) -> Schedule
_SCHEDULES: dict[str, ScheduleFn] = {}


def _register(registry: dict, kind: str, fn: Callable) -> Callable:
    if fn.__name__ in registry and registry[fn.__name__] is not fn:
        raise ValueError(f"{kind} {fn.__name__!r} is already registered")
    registry[fn.__name__] = fn
    return fn


def _lookup(registry: dict, kind: str, name: str) -> Callable:
    if name not in registry:
        hint = difflib.get_close_matches(str(name), list(registry), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown {kind} {name!r}{extra}; known: {', '.join(sorted(registry))}")
    return registry[name]


def register_optimizer(fn: OptimizerFn) -> OptimizerFn:
    """Decorator: register `fn(cfg, params)` under its own name; returns `fn` unchanged."""
    return _register(_OPTIMIZERS, "optimizer", fn)


def register_schedule(fn: ScheduleFn) -> ScheduleFn:
    """Decorator: register `fn(cfg, optimizer, total_steps)` under its own name."""
    return _register(_SCHEDULES, "schedule", fn)


def list_optimizers() -> list[str]:
    return sorted(_OPTIMIZERS)


def list_schedules() -> list[str]:
    return sorted(_SCHEDULES)


# Device types whose fused SGD / Adam / AdamW kernels kdtune uses (torch has them on both since
# 2.4); elsewhere (MPS, XPU, ...) torch's default applies. Not torch's own list
# (torch.utils._foreach_utils._get_fused_kernels_supported_devices): that one is private.
FUSED_DEVICE_TYPES = ("cpu", "cuda")


def fused(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """{"fused": True} when every parameter can take torch's fused optimiser kernel (floating
    point, on a FUSED_DEVICE_TYPES device), else {} (torch's default, foreach): the keyword
    arguments to build a torch optimiser with. torch checks the same condition only at the
    first step, so a parameter that fails it would otherwise fail the trial there."""
    ok = bool(params) and all(p.device.type in FUSED_DEVICE_TYPES and torch.is_floating_point(p)
                              for p in params)
    return {"fused": True} if ok else {}


def create_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser `cfg.optimizer` over every trainable parameter of `model`, weight decay
    on all of them (as in the classic KD recipes the presets reproduce)."""
    fn = _lookup(_OPTIMIZERS, "optimizer", cfg.optimizer)
    return fn(cfg, [p for p in model.parameters() if p.requires_grad])


def create_schedule(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Schedule:
    """The schedule `cfg.schedule` over the whole run (cfg.epochs x steps_per_epoch steps)."""
    fn = _lookup(_SCHEDULES, "schedule", cfg.schedule)
    return fn(cfg, optimizer, max(1, cfg.epochs * steps_per_epoch))


# ---- optimisers: fn(cfg, params) ------------------------------------------------------------
@register_optimizer
def sgd(cfg, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    nesterov = cfg.nesterov and cfg.momentum > 0  # torch rejects nesterov without momentum
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov,
                           weight_decay=cfg.weight_decay, **fused(params))


@register_optimizer
def adam(cfg, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused(params))


@register_optimizer
def adamw(cfg, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused(params))


# ---- schedules: fn(cfg, optimizer, total_steps), total_steps = optimiser steps of the run -----
@register_schedule
def cosine(cfg, optimizer: torch.optim.Optimizer, total_steps: int) -> Schedule:
    return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps),
                    per_batch=True)


@register_schedule
def onecycle(cfg, optimizer: torch.optim.Optimizer, total_steps: int) -> Schedule:
    # Momentum is not cycled: it is a searched hyperparameter and must keep its value.
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                        cycle_momentum=False), per_batch=True)


@register_schedule
def step(cfg, optimizer: torch.optim.Optimizer, total_steps: int) -> Schedule:
    # Milestones are epochs: stepped once per epoch.
    return Schedule(torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                         gamma=cfg.gamma), per_batch=False)


@register_schedule
def constant(cfg, optimizer: torch.optim.Optimizer, total_steps: int) -> Schedule:
    return Schedule(None, per_batch=False)
