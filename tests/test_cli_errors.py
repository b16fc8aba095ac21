"""Bad input: one line, exit code 2, before Ray starts, nothing written to the storage path."""
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from kdtune.search.run_kd_search import main
from tests import fakedata

ROOT = Path(__file__).resolve().parents[1]


def _not_kdtune(tmp: Path) -> str:
    path = tmp / "random.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return str(path)


def _foreign_teacher(tmp: Path) -> str:
    """A real kdtune checkpoint, made for 3x32x32 / 100-class data (digits is 1x8x8 / 10)."""
    from kdtune.trainables.checkpoint import save_checkpoint
    from kdtune import models

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


def _preset_with(tmp: Path, space: dict) -> str:
    """The digits preset with `space` entries added."""
    import yaml

    from kdtune.search.input.preset_loader import PRESET_DIR

    preset = yaml.safe_load((PRESET_DIR / "digits.yaml").read_text())
    preset["space"].update(space)
    path = tmp / "custom.yaml"
    path.write_text(yaml.safe_dump(preset))
    return str(path)


def _preset_with_search(tmp: Path, search: str) -> str:
    path = tmp / "p.yaml"
    path.write_text(f"dataset: digits\nsearch: {{{search}}}\n")
    return str(path)


def _file_as_storage(tmp: Path) -> str:
    (tmp / "afile").write_text("x")
    return str(tmp / "afile" / "runs")


def _digits_preset(tmp: Path, edit) -> str:
    """The bundled digits preset with `edit(preset)` applied, as a YAML file."""
    import yaml
    from kdtune.search.input.preset_loader import PRESET_DIR

    preset = yaml.safe_load((PRESET_DIR / "digits.yaml").read_text())
    edit(preset)
    path = tmp / "edited.yaml"
    path.write_text(yaml.safe_dump(preset))
    return str(path)


def _teacher_kwarg_typo(p):
    p["teacher"]["model_kwargs"] = {"dropuot": 0.1}


def _student_kwarg_typo(p):
    p["teacher"]["model_kwargs"] = {}
    p["train"]["model_kwargs"] = {"batchnorm": True}


def _unread_key(p):
    p["search"]["teacher_samples"] = 2


def _state_dict_of_mlp(tmp: Path) -> str:
    from kdtune import models

    path = tmp / "mlp.pth"
    torch.save(models.create_model("mlp", 10, (1, 8, 8)).state_dict(), path)
    return str(path)


def _digits_teacher(tmp: Path, seed: int) -> str:
    """A kdtune checkpoint of a digits teacher whose split was drawn with `seed`."""
    from kdtune import datasets
    from kdtune import models
    from kdtune.trainables.checkpoint import save_checkpoint

    bundle = datasets.create_dataset("digits", val_fraction=0.2, seed=seed)
    model = models.create_model("mlp", bundle.num_classes, bundle.in_shape, depth=1, width=8)
    save_checkpoint(tmp / f"seed{seed}", model=model, dataset_meta=bundle.meta(),
                    config={"dataset": "digits", "seed": seed}, epoch=1, metrics={})
    return str(tmp / f"seed{seed}" / "checkpoint.pt")


# (id, argv builder, expected message fragment)
CASES = [
    ("unknown-dataset", lambda t: ["--dataset", "imagenet22k"], "unknown dataset 'imagenet22k'"),
    ("unknown-teacher-model", lambda t: ["--teacher", "resnet9000"], "unknown model 'resnet9000'"),
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
    ("teacher-ckpt-missing", lambda t: ["--teacher-checkpoint", str(t / "nope.pt")], "no checkpoint at"),
    ("teacher-ckpt-not-kdtune", lambda t: ["--teacher-checkpoint", _not_kdtune(t)], "not a kdtune checkpoint"),
    ("teacher-ckpt-other-dataset", lambda t: ["--teacher-checkpoint", _foreign_teacher(t)], "classes"),
    ("data-folder-missing", lambda t: ["--dataset", "mnist", "--data-dir", _missing_mnist(t), "--no-download"],
     "files not found in"),
    ("data-file-truncated", lambda t: ["--dataset", "mnist", "--data-dir", _truncated_mnist(t)], "train-images"),
    ("storage-unwritable", lambda t: ["--storage-path", _file_as_storage(t)], "not writable"),
    ("resume-nothing", lambda t: ["--resume", "--name", "ghost"], "holds no kdtune run"),
    ("malformed-preset", lambda t: ["--preset", _bad_yaml(t)], "not valid YAML"),
    ("views-without-augmentation", lambda t: ["--augment-views", "4"], "digits is not augmented"),
    ("online-views-without-augmentation", lambda t: ["--augment-views", "online"], "digits is not augmented"),
    ("negative-views", lambda t: ["--augment-views", "-2"], "or 0 / online for the online teacher"),
    ("unknown-tracker", lambda t: ["--tracker", "neptune"], "invalid choice: 'neptune'"),
    ("warm-start-not-a-run", lambda t: ["--warm-start", str(t)], "holds no kdtune run"),
    ("warm-start-a-sweep", lambda t: ["--warm-start", str(t), "--preset", "mlp_depth_sweep",
                                      "--dataset", "digits"], "runs a grid sweep"),
    ("teacher-kwarg-typo", lambda t: ["--preset", _digits_preset(t, _teacher_kwarg_typo)],
     "['dropuot'] are not options of model 'mlp' (did you mean 'dropout'?); it accepts: activation"),
    ("student-kwarg-typo", lambda t: ["--preset", _digits_preset(t, _student_kwarg_typo)],
     "(did you mean 'batch_norm'?)"),
    ("unread-preset-key", lambda t: ["--preset", _digits_preset(t, _unread_key)], "unknown search key(s)"),
    ("teacher-weights-missing", lambda t: ["--teacher", "resnet18", "--teacher-weights", str(t / "w.pth")],
     "no file at"),
    ("teacher-weights-not-torchvision", lambda t: ["--teacher-weights", _state_dict_of_mlp(t)],
     "only timm:NAME, torchvision:NAME and resnet18, resnet50 teachers take"),
    ("teacher-weights-other-architecture",
     lambda t: ["--teacher", "resnet18", "--teacher-weights", _state_dict_of_mlp(t)], "does not match"),
    ("teacher-epochs-with-checkpoint",
     lambda t: ["--teacher-checkpoint", _digits_teacher(t, 0), "--teacher-epochs", "3"],
     "only for a teacher that kdtune trains"),
    ("teacher-with-chain", lambda t: ["--chain", "mlp:2:64,mlp:1:32,mlp:1:16", "--teacher", "mlp"],
     "first link is the teacher"),
    ("resume-with-changing-flag", lambda t: ["--resume", "--name", "x", "--num-samples", "30", "--seed", "2"],
     "--seed, --num-samples would change it"),
    ("depth-one-range-for-two-families", lambda t: ["--students", "mlp,cifar_resnet", "--depth", "1:3"],
     "holds no valid cifar_resnet depth"),
    ("depth-for-unsearched-family", lambda t: ["--depth", "cifar_resnet=8:20"], "which the search does not train"),
    ("depth-unknown-family", lambda t: ["--depth", "vit=1:3"], "which the search does not train"),
    ("depth-no-family", lambda t: ["--depth", "=1:3"], "expected FAMILY=LO:HI"),
    ("image-folder-without-data-dir", lambda t: ["--dataset", "image_folder"], "pass --data-dir"),
    ("image-size-for-fixed-size-data", lambda t: ["--image-size", "16"], "have a fixed size"),
    ("storage-in-proc", lambda t: ["--storage-path", "/proc/kdtune-runs"], "not writable"),
    ("storage-in-sysfs", lambda t: ["--storage-path", "/sys/kdtune-runs"], "not writable"),
    ("teacher-saw-val-images", lambda t: ["--teacher-checkpoint", _digits_teacher(t, 1)],
     "trained on 221 of this run's 288 validation images"),  # 221: see test_inputs
    ("unknown-kd-method", lambda t: ["--methods", "kd,vid"], "unknown KD method(s) 'vid'; known: at, crd, dist, dkd, fitnet, kd, kd_weighted, mse, pkt, reviewkd, rkd, sp"),
    ("alpha-unused-by-methods", lambda t: ["--methods", "dkd,dist", "--alpha", "0.5"],
     "--alpha applies to KD methods kd, mse; --methods dkd,dist uses none of them"),
    ("bad-method-range", lambda t: ["--preset", _preset_with(t, {"dkd_beta": [4.0, 1.0]}), "--methods", "dkd"],
     "dkd_beta: empty range"),
    ("negative-final-seeds", lambda t: ["--final-seeds", "-1"], "--final-seeds: must be >= 0"),
    ("zero-final-top-k", lambda t: ["--final-top-k", "0"], "--final-top-k: must be >= 1"),
    ("final-top-k-above-samples", lambda t: ["--final-top-k", "5", "--num-samples", "4"],
     "--final-top-k 5 is larger than --num-samples 4"),
    ("preset-final-seeds-negative", lambda t: ["--preset", _preset_with_search(t, "final_seeds: -2")],
     "--final-seeds must be an integer >= 0"),
    ("preset-final-top-k-fraction", lambda t: ["--preset", _preset_with_search(t, "final_top_k: 1.5")],
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
    assert message not in " ".join(argv), "the fragment must come from kdtune, not echo the command line"
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
