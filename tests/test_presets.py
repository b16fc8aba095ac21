"""Every bundled preset: valid before Ray starts, and the seeds' experiments run as one command.

The experiment presets (sweeps, the CIFAR-100 recipes, the pretrained teacher) run with
--smoke-test on tiny files in the real torchvision formats; one Ray instance serves them all.
"""
import json

import numpy as np
import pytest
import ray
import torch

from kdtune import models
from kdtune.search.input.cli import parse_args
from kdtune.search.input.preset_loader import list_presets
from kdtune.search.run_kd_search import main
from kdtune.search.input.validate import preflight
from tests import fakedata

DATA_OF = {"digits": None, "mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10",
           "cifar100": "cifar100"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fakedata.write_mnist(root, n_train=300, n_test=50)
    fakedata.write_fashion_mnist(root, n_train=300, n_test=50)
    fakedata.write_cifar10(root, n_per_batch=60, n_test=50)
    fakedata.write_cifar100(root, n_train=400, n_test=100)
    fakedata.write_image_folder(root / "images", ["a", "b"], n_per_class=12)
    return root


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_passes_preflight_on_its_data(preset, data_root, tmp_path):
    data_dir = data_root / "images" if preset == "image_folder" else data_root
    spec, _ = parse_args(["--preset", preset, "--data-dir", str(data_dir), "--storage-path", str(tmp_path),
                          "--smoke-test"])
    spec, bundle = preflight(spec)
    assert bundle.name == spec.dataset
    assert not ray.is_initialized()


def test_a_preset_can_set_augment_views_and_the_flag_overrides_it(tmp_path):
    path = tmp_path / "views.yaml"
    path.write_text("dataset: cifar10\nsearch: {augment_views: 3}\n")
    spec, _ = parse_args(["--preset", str(path)])
    assert spec.augment_views == 3 and spec.student_constants(None)["augment_views"] == 3
    spec, _ = parse_args(["--preset", str(path), "--augment-views", "5"])
    assert spec.augment_views == 5


def _run(argv):
    assert main(argv) == 0


def _manifest(exp):
    return json.loads((exp / "manifest.json").read_text())


@pytest.mark.parametrize("preset, trials", [("mlp_depth_sweep", 1), ("cnn_residual_sweep", 2),
                                            ("mlp_vs_cnn", 2), ("dropblock_vs_dropout", 2)])
def test_sweep_presets_run_as_one_command(preset, trials, data_root, tmp_path, ray_session):
    _run(["--preset", preset, "--data-dir", str(data_root), "--smoke-test", "--storage-path", str(tmp_path),
          "--name", preset])
    manifest = _manifest(tmp_path / preset)
    sweep = manifest["stages"]["sweep"]
    assert sweep["status"] == "done" and len(sweep["trials"]) == trials
    assert "teacher" not in manifest["stages"]  # a sweep trains no teacher
    if preset == "mlp_depth_sweep":  # gradient norms of every layer were tracked
        rows = (tmp_path / preset / "sweep").rglob("result.json")
        first = json.loads(next(iter(rows)).read_text().splitlines()[0])
        assert sum(k.startswith("grad_norm/") for k in first) == 5 + 1  # 5 hidden layers + head
    if preset == "mlp_vs_cnn":
        assert {t["model"] for t in sweep["trials"]} == {"mlp", "cifar_resnet"}


def test_cifar100_recipe_preset_runs_all_stages(data_root, tmp_path, ray_session):
    # --augment-views: the teacher's logits for 2 fixed views are computed once, by Ray tasks.
    _run(["--preset", "resnet56_resnet20_cifar100", "--data-dir", str(data_root), "--smoke-test",
          "--augment-views", "2", "--final-seeds", "1", "--storage-path", str(tmp_path), "--name", "r"])
    stages = _manifest(tmp_path / "r")["stages"]
    assert all(stages[s]["status"] == "done" for s in ("teacher", "baseline", "distill"))
    assert stages["distill"]["config"]["temperature"] == 4.0 and stages["distill"]["config"]["alpha"] == 0.9
    # Baseline and students train on the same 2 views; one saved array per view, N rows each,
    # for the search's seed and for each final-stage seed (a seed draws its own views).
    assert stages["distill"]["config"]["augment_views"] == stages["baseline"]["config"]["augment_views"] == 2
    assert stages["final"]["status"] == "done"
    caches = list((tmp_path / "r" / "teacher_logits").iterdir())
    assert len(caches) == 1 + len(stages["final"]["seeds"])
    for cache in caches:
        views = sorted(cache.glob("view-*.npy"))
        assert len(views) == 2 and all(np.load(v).shape == (256, 100) for v in views)  # --smoke-test: 256 images


def test_pretrained_teacher_from_local_weights_is_linear_probed(data_root, tmp_path, ray_session):
    weights = tmp_path / "resnet18.pth"
    reference = models.create_model("resnet18", num_classes=1000, in_shape=(3, 32, 32))
    torch.save(reference.state_dict(), weights)
    _run(["--preset", "pretrained_teacher", "--teacher", "resnet18", "--teacher-weights", str(weights),
          "--data-dir", str(data_root), "--smoke-test", "--final-seeds", "0", "--storage-path", str(tmp_path),
          "--name", "p"])
    stages = _manifest(tmp_path / "p")["stages"]
    assert stages["distill"]["status"] == "done"
    from kdtune.trainables.checkpoint import load_model
    teacher, _ = load_model(stages["teacher"]["best_checkpoint"])
    # The backbone stayed frozen: a deep layer equals the loaded weights; only fc trained.
    deep = "layer4.1.conv2.weight"
    assert torch.equal(teacher.state_dict()[deep], reference.state_dict()[deep])


def test_teacher_assistant_chain_distils_in_steps(data_root, tmp_path, ray_session):
    _run(["--preset", "takd_mnist", "--data-dir", str(data_root), "--smoke-test", "--final-seeds", "0",
          "--storage-path", str(tmp_path), "--name", "ta"])
    stages = _manifest(tmp_path / "ta")["stages"]
    for name in ("teacher", "baseline", "distill", "assistant", "ta_distill"):
        assert stages[name]["status"] == "done", name
    assert stages["teacher"]["config"]["width"] == 1200
    assert stages["assistant"]["config"]["width"] == 256
    assert stages["assistant"]["config"]["teacher_checkpoint"] == stages["teacher"]["best_checkpoint"]
    # The student is pinned in every student stage; via the assistant it learns from the assistant.
    for name in ("baseline", "distill", "ta_distill"):
        assert (stages[name]["config"]["depth"], stages[name]["config"]["width"]) == (1, 32)
    assert stages["ta_distill"]["config"]["teacher_checkpoint"] == stages["assistant"]["best_checkpoint"]
    summary = (tmp_path / "ta" / "summary.md").read_text()
    assert "student, KD via assistant" in summary and "student, no KD" in summary


def test_chain_needs_three_links(tmp_path, capsys):
    assert main(["--chain", "mlp:2:64,mlp:1:8", "--storage-path", str(tmp_path)]) == 2
    assert "TEACHER,ASSISTANT,STUDENT" in capsys.readouterr().err


def test_online_distillation_preset_trains_no_teacher_stage(tmp_path, ray_session):
    _run(["--preset", "online_distill", "--smoke-test", "--final-seeds", "0", "--storage-path", str(tmp_path),
          "--name", "on"])
    manifest = _manifest(tmp_path / "on")
    stages = manifest["stages"]
    assert "teacher" not in stages  # no separate teacher stage
    assert stages["distill"]["status"] == "done" and stages["baseline"]["status"] == "done"
    assert stages["distill"]["config"]["online_teacher"] == "mlp"
    assert "teacher_val_acc" in stages["distill"]["metrics"]
    assert "online_teacher" not in stages["baseline"]["config"]  # baselines train no teacher
    assert "mlp (online)" in (tmp_path / "on" / "summary.md").read_text()
