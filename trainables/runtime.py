"""Where and how a trial computes: device, bf16 autocast, channels_last, CPU threads.

`Runtime.from_config(cfg)` resolves the config's "auto" choices once per trial:
- device "auto" -> cuda when available, else cpu;
- precision "auto" -> bf16 autocast on CUDA and on CPUs with native bf16 (AMX or
  avx512_bf16: 1.7-2.3x the fp32 images/s on a 2-core Xeon, docs/architecture.md), fp32 else;
- channels_last None -> on for conv nets (the fast layout for bf16 and fp32 convolutions),
  except on the CPU for nets with a strided 1x1 conv of < 8 input channels (a oneDNN crash);
- threads: cfg.num_threads, else the CPUs Tune reserved for the trial.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import nn

from kdtune.trainables import reporting
from kdtune.trainables.allocator import retain_freed_memory


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU executes bf16 matmuls natively (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:  # not Linux: trust torch's dispatch level instead
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype` on `device`'s type; a no-op for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def is_conv_net(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# torch 2.14.1's oneDNN crashes the process (heap corruption, SIGSEGV/SIGABRT) in the weight
# backward of a strided 1x1 convolution with fewer than 8 input channels in channels_last fp32 on
# an AVX2 CPU (jit_avx2_1x1_convolution_bwd_weights_t): e.g. a ResNet shortcut 4 -> 8 channels,
# stride 2, i.e. cifar_resnet width 4-7. Measured 2026-12-07 on a 2-core AMD EPYC (AVX2, no
# AVX-512): Conv2d(4, 8, 1, stride=2) and (6, 12, 1, 2) crash within 30 steps; (8, 16, 1, 2),
# (4, 8, 1, 1) and (4, 4, 3, 1) do not. Such nets train NCHW on the CPU instead.
NARROW_1X1_CHANNELS = 8


def has_narrow_strided_1x1(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
               and m.in_channels < NARROW_1X1_CHANNELS for m in model.modules())


def channels_last_safe(model: nn.Module, device: torch.device) -> bool:
    """Whether `model` may run channels_last on `device` (see NARROW_1X1_CHANNELS)."""
    return device.type != "cpu" or not has_narrow_strided_1x1(model)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    threads: int

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> "Runtime":
        return cls.resolve(cfg.device, cfg.precision, model, cfg.num_threads or reporting.trial_cpus(),
                           cfg.channels_last)

    @classmethod
    def resolve(cls, device: str, precision: str, model: nn.Module, threads: int,
                channels_last: bool | None = None) -> "Runtime":
        """The "auto" choices above for `model` (channels_last None: on for conv nets)."""
        dev = resolve_device(device)
        cl = (is_conv_net(model) and channels_last_safe(model, dev)) if channels_last is None else channels_last
        return cls(dev, resolve_autocast(precision, dev), cl, threads)

    def apply(self) -> None:
        """Set the trial process's process-wide state: torch's intra-op thread count, and the
        C allocator's keeping of freed memory (trainables/allocator.py)."""
        torch.set_num_threads(self.threads)
        retain_freed_memory()

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.autocast_dtype)

    @property
    def precision(self) -> str:
        return "fp32" if self.autocast_dtype is None else "bf16"
