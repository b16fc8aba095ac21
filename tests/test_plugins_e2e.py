"""Bring your own code, teacher and students, end to end (Ray): a user module found by --import,
a timm teacher adopted from a state dict, a timm student family under a parameter budget."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10

pytestmark = pytest.mark.ray

PLUGIN = '''
import torch.nn.functional as F
from torch import nn

import kdtune


@kdtune.register_model
def user_net(num_classes, in_shape, hidden=24):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@kdtune.register_loss
class UserLoss(kdtune.AlphaBlendLoss):
    name = "user_l1"
    config_fields = (("alpha", "alpha"),)

    def __init__(self, alpha=0.5, label_smoothing=0.0):
        super().__init__(alpha, label_smoothing)

    def soft_term(self, student, teacher):
        return F.l1_loss(student, teacher)
'''


def _rows(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]


def _trials(stage: Path) -> list[Path]:
    dirs = sorted(p.parent for p in stage.rglob("result.json"))
    assert dirs, f"no trials in {stage}"
    return dirs


def test_user_module_model_and_loss_are_searched_through_the_cli(tmp_path, capsys):
    from kdtune.search.run_kd_search import main

    plugin = tmp_path / "kdtune_user_plugin_e2e.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    code = main(["--dataset", "digits", "--import", str(plugin), "--students", "user_net",
                 "--methods", "user_l1", "--num-samples", "2", "--baseline-samples", "1", "--max-epochs", "2",
                 "--grace-period", "2", "--teacher-epochs", "1", "--final-seeds", "0",
                 "--storage-path", str(tmp_path), "--name", "plugin"])
    assert code == 0, capsys.readouterr().err[-2000:]
    run = tmp_path / "plugin"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["spec"]["imports"] == [str(plugin.resolve())]
    for stage in ("baseline", "distill"):
        assert manifest["stages"][stage]["status"] == "done"
        for trial in _trials(run / stage):
            config = json.loads((trial / "params.json").read_text())
            assert config["model"] == "user_net"  # no size dimensions: taken as it is
            assert "depth" not in config and "width" not in config
            if stage == "distill":
                assert config["kd_method"] == "user_l1"
            assert len(_rows(trial)) == 2  # trained in a Ray worker, which imported the plugin
    # a fresh process that was never told about the plugin reads the run: the manifest brings it
    probe = ("import kdtune; e = kdtune.open_experiment(%r); from kdtune.models import list_models; "
             "assert 'user_net' in list_models(); print(e.best('distill')['config']['model'])") % str(run)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "user_net"


def test_bad_import_is_one_line_exit_2_before_ray(tmp_path, capsys):
    from kdtune.search.run_kd_search import main

    assert main(["--dataset", "digits", "--import", "no_such_kdtune_plugin", "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--import no_such_kdtune_plugin" in err, err
    assert not any(tmp_path.iterdir())


def test_timm_teacher_from_state_dict_and_timm_student_family_under_budget_via_api(tmp_path):
    """The Python API: a timm teacher adopted from a state dict the test writes (linear probe,
    the pretrained_teacher preset), timm:resnet students sized under --max-params, CIFAR files."""
    import torch

    import kdtune
    from kdtune.models import count_params, create_model

    data = tmp_path / "data"
    write_cifar10(data, n_per_batch=40, n_test=50)
    weights = tmp_path / "resnet10t.pth"
    torch.save({"state_dict": create_model("timm:resnet10t", 1000, (3, 32, 32)).net.state_dict()}, weights)
    budget = 120_000
    exp = kdtune.run_search(dataset="cifar10", data_dir=str(data), download=False, preset="pretrained_teacher",
                            teacher="timm:resnet10t", teacher_weights=str(weights), students=["timm:resnet"],
                            max_params=budget, smoke_test=True, storage_path=str(tmp_path), name="zoo")
    manifest = json.loads((exp.path / "manifest.json").read_text())
    assert manifest["spec"]["teacher"]["model"] == "timm:resnet10t"
    assert manifest["spec"]["max_params"] == budget
    assert exp.stages["final"] == "done"
    teacher = torch.load(Path(manifest["stages"]["teacher"]["best_checkpoint"]), weights_only=True)
    assert teacher["model_spec"]["name"] == "timm:resnet10t"
    for stage in ("baseline", "distill"):
        for trial in _trials(exp.path / stage):
            config = json.loads((trial / "params.json").read_text())
            assert config["model"] == "timm:resnet"
            net = create_model("timm:resnet", 10, (3, 32, 32), depth=config["depth"], width=config["width"])
            assert count_params(net) <= budget, config
    for stage in ("baseline", "distill", "final"):  # the final stage retrains the winners
        for trial in _trials(exp.path / stage):
            assert 0 < _rows(trial)[-1]["params"] <= budget
