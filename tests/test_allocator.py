"""trainables/allocator.py: after `retain_freed_memory` (which Runtime.apply calls in every
trial), a freed 16 MiB block is reused without page faults; with glibc's defaults it is not.
Each case runs in a fresh interpreter, since the settings are process-wide."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

# malloc, touch every page, free, twice; the page faults of each round (ru_minflt).
PROBE = """
import ctypes, json, resource, sys
if sys.argv[1] == "retain":
    from kdtune.trainables.allocator import retain_freed_memory
    assert retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size, faults = 16 << 20, []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""
PAGES = (16 << 20) // 4096


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_retained_memory_is_reused_without_page_faults():
    first, second = _faults("retain")
    assert first > PAGES // 2  # fresh memory faults in once
    assert second < PAGES // 20  # then it is reused: no page goes back to the kernel


def test_glibc_defaults_fault_the_block_in_again():
    """The control: without the settings the same second round faults most pages again
    (the first 16 MiB block is mapped on its own and unmapped on free)."""
    assert _faults("default")[1] > PAGES // 2


def test_runtime_apply_retains_freed_memory(monkeypatch):
    from kdtune.trainables import runtime
    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runtime.torch, "set_num_threads", lambda n: calls.append(n))
    runtime.Runtime(runtime.torch.device("cpu"), None, False, 3).apply()
    assert calls == [3, 1]
