"""Shared pytest set-up: CPU only, quiet local Ray, repo root importable."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Local test clusters need no token auth (STACK_NOTES: every ray.init writes ~/.ray/auth_token).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="session")
def bundle():
    """The offline digits set, decoded once for every test that trains on it."""
    import datasets

    return datasets.create_dataset("digits", val_fraction=0.1, seed=0)
