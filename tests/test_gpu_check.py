"""benchmarks/gpu_check.py --dry-run: every step of the prepared GPU check runs on the CPU
(tiny sizes) and prints its figures, so the script is known to work before a card is lent."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ray
@pytest.mark.timeout(1200)
def test_gpu_check_dry_run_runs_every_step():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1100)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for step in ("throughput", "bf16", "cache_sync", "scaling"):
        assert f"== {step}: " in out, step  # each step finished
    assert "ratio kdtune/seed resnet56 -> resnet20" in out
    assert "bf16: bf16 / fp32: " in out and "cache_sync: after / before: " in out
    assert "ratio trials/hour 2 vs 1 concurrent" in out


def test_gpu_check_refuses_to_run_without_a_gpu_unless_dry():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--steps", "bf16"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr
