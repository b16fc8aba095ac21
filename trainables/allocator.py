"""Keep a training process's freed heap memory for reuse (glibc malloc settings).

Every training step frees and allocates again the same megabyte-sized buffers: the batch
(14 MB of float32 for 128 x 3 x 96 x 96), activations, gradients. With glibc's defaults,
freed memory at the top of the heap beyond a dynamic threshold (twice the largest chunk
freed so far, ~28 MB here) goes back to the kernel, so the next batch takes a page fault on
each 4 KiB page again. Measured in a trial's loop (benchmarks/README.md, bench_image_store):
~1,700 faults a batch in DeviceLoader and ~1,500 in the model step; with these settings ~100
and ~35, the loader 9.1 -> 5.5-6.4 ms a batch, the epoch +6% img/s, the process 26 MiB
larger and flat over 300 batches. PyTorch's CPU tuning guides get the same effect by
preloading jemalloc or tcmalloc; glibc's own knobs need no extra library.
"""
from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap, whose free memory is kept and reused; above it
# each gets its own mapping, returned on free (so one huge tensor is not kept for good).
# 32 MiB is the largest value glibc accepts on 64-bit; setting it also stops the dynamic
# adjustment that ties the trim threshold to it.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Apply the settings to this process; False where the C library is not glibc (nothing
    changed). Idempotent; process-wide, so it belongs to a process kdtune runs (a trial)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
