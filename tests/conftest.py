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


@pytest.fixture(scope="session")
def small_search(tmp_path_factory):
    """One small finished search on digits (real CLI, in-process), shared by the end-to-end and
    analysis tests: teacher 3 epochs, 3 baselines, 6 distillation trials under ASHA (grace 1,
    rf 3, 4 epochs at most, so it has rungs to cut at), per-layer gradient norms on (for
    learning_curves' second plot), and the final stage: the best baseline and the best distilled
    config retrained over 2 seeds. Tests read the budget back from manifest.json's spec."""
    import yaml

    from search.preset_loader import PRESET_DIR
    from search.run_kd_search import main

    tmp = tmp_path_factory.mktemp("small_search")
    preset = yaml.safe_load((PRESET_DIR / "digits.yaml").read_text())
    preset["train"]["track_grad_norms"] = True
    (tmp / "digits_grads.yaml").write_text(yaml.safe_dump(preset))
    code = main(["--num-samples", "6", "--baseline-samples", "3", "--max-epochs", "4", "--grace-period", "1",
                 "--reduction-factor", "3", "--teacher-epochs", "3", "--max-concurrent", "2",
                 "--width", "16:64", "--depth", "1:2", "--preset", str(tmp / "digits_grads.yaml"),
                 "--final-seeds", "2", "--final-top-k", "1",
                 "--storage-path", str(tmp), "--name", "small"])
    assert code == 0
    return tmp / "small"


@pytest.fixture(scope="session")
def search_only(small_search, tmp_path_factory):
    """small_search as a run without a final stage (--final-seeds 0) would have left it."""
    import json
    import shutil

    copy = tmp_path_factory.mktemp("search_only") / small_search.name
    shutil.copytree(small_search, copy, ignore=shutil.ignore_patterns("final", "analysis*", "export"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["stages"]["final"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy
