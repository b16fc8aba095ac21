"""Bad input: one line, exit code 2, before Ray starts, nothing written to the storage path."""
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from search.run_kd_search import main
from tests import fakedata

ROOT = Path(__file__).resolve().parents[1]


def _not_kdtune(tmp: Path) -> str:
    path = tmp / "random.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return str(path)


def _foreign_teacher(tmp: Path) -> str:
    """A real kdtune checkpoint, made for 3x32x32 / 100-class data (digits is 1x8x8 / 10)."""
    from trainables.checkpoint import save_checkpoint
    import models

    model = models.create_model("resnet20", num_classes=100, in_shape=(3, 32, 32))
    meta = {"name": "cifar100", "num_classes": 100, "in_shape": [3, 32, 32]}
    save_checkpoint(tmp / "foreign", model=model, dataset_meta=meta, config={"dataset": "cifar100"},
                    epoch=1, metrics={})
    return str(tmp / "foreign" / "checkpoint.pt")


def _missing_mnist(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


def _truncated_mnist(tmp: Path) -> str:
    root = tmp / "trunc"
    fakedata.write_mnist(root, n_train=64, n_test=16)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return str(root)


def _bad_yaml(tmp: Path) -> str:
    path = tmp / "bad.yaml"
    path.write_text("dataset: digits\nsearch: {num_samples: [1,\n")
    return str(path)


def _preset_with(tmp: Path, search: str) -> str:
    path = tmp / "p.yaml"
    path.write_text(f"dataset: digits\nsearch: {{{search}}}\n")
    return str(path)


def _file_as_storage(tmp: Path) -> str:
    (tmp / "afile").write_text("x")
    return str(tmp / "afile" / "runs")


# (id, argv builder, expected message fragment)
CASES = [
    ("unknown-dataset", lambda t: ["--dataset", "imagenet22k"], "unknown dataset 'imagenet22k'"),
    ("unknown-teacher-model", lambda t: ["--teacher", "resnet9000"], "resnet9000"),
    ("unknown-student-family", lambda t: ["--students", "transformer"], "unknown student family"),
    ("unknown-preset", lambda t: ["--preset", "nope"], "unknown preset 'nope'"),
    ("alpha-above-1", lambda t: ["--alpha", "1.5"], "alpha must lie in [0, 1]"),
    ("alpha-range-below-0", lambda t: ["--alpha=-0.1:0.5"], "alpha must lie in [0, 1]"),
    ("temperature-zero", lambda t: ["--temperature", "0"], "temperature must be > 0"),
    ("zero-epochs", lambda t: ["--max-epochs", "0"], "must be >= 1"),
    ("zero-samples", lambda t: ["--num-samples", "0"], "must be >= 1"),
    ("negative-teacher-epochs", lambda t: ["--teacher-epochs", "-3"], "must be >= 1"),
    ("grace-above-max", lambda t: ["--grace-period", "9", "--max-epochs", "3"], "larger than --max-epochs"),
    ("too-many-gpus", lambda t: ["--gpus-per-trial", "64"], "--gpus-per-trial 64.0 but this machine has"),
    ("too-many-cpus", lambda t: ["--cpus-per-trial", "4096"], "--cpus-per-trial 4096.0 but this machine has"),
    ("teacher-ckpt-missing", lambda t: ["--teacher-checkpoint", str(t / "nope.pt")], "--teacher-checkpoint"),
    ("teacher-ckpt-not-kdtune", lambda t: ["--teacher-checkpoint", _not_kdtune(t)], "not a kdtune checkpoint"),
    ("teacher-ckpt-other-dataset", lambda t: ["--teacher-checkpoint", _foreign_teacher(t)], "classes"),
    ("data-folder-missing", lambda t: ["--dataset", "mnist", "--data-dir", _missing_mnist(t)], "--download"),
    ("data-file-truncated", lambda t: ["--dataset", "mnist", "--data-dir", _truncated_mnist(t)], "train-images"),
    ("storage-unwritable", lambda t: ["--storage-path", _file_as_storage(t)], "not writable"),
    ("resume-nothing", lambda t: ["--resume", "--name", "ghost"], "holds no kdtune run"),
    ("malformed-preset", lambda t: ["--preset", _bad_yaml(t)], "not valid YAML"),
    ("views-without-augmentation", lambda t: ["--augment-views", "4"], "digits is not augmented"),
    ("zero-views", lambda t: ["--augment-views", "0"], "must be >= 1"),
    ("negative-final-seeds", lambda t: ["--final-seeds", "-1"], "--final-seeds: must be >= 0"),
    ("zero-final-top-k", lambda t: ["--final-top-k", "0"], "--final-top-k: must be >= 1"),
    ("final-top-k-above-samples", lambda t: ["--final-top-k", "5", "--num-samples", "4"],
     "--final-top-k 5 is larger than --num-samples 4"),
    ("preset-final-seeds-negative", lambda t: ["--preset", _preset_with(t, "final_seeds: -2")],
     "--final-seeds must be an integer >= 0"),
    ("preset-final-top-k-fraction", lambda t: ["--preset", _preset_with(t, "final_top_k: 1.5")],
     "--final-top-k must be an integer >= 1, got 1.5"),
]


@pytest.mark.parametrize("case_id, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_before_any_work(case_id, build, message, tmp_path, capsys):
    storage = tmp_path / "storage"
    argv = ["--storage-path", str(storage), *build(tmp_path)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert not ray.is_initialized()
    assert not storage.exists() or not any(storage.iterdir()), "wrote into the storage path"


def test_real_process_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run_kd_search.py"), "--alpha", "2",
                           "--storage-path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "alpha" in proc.stderr


def test_existing_experiment_needs_resume_or_new_name(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "manifest.json").write_text("{}")
    assert main(["--storage-path", str(tmp_path), "--name", "taken"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
