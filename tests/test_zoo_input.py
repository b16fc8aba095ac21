"""Zoo teachers (timm:NAME, torchvision:NAME): inputs normalised the model's own way, and
pretrained weights asked for offline failing at once in one line (issue 33)."""
from __future__ import annotations

import time

import pytest
import torch
import yaml

from kdtune.models import create_from_spec, create_model
from kdtune.models import zoo

# A dataset normalisation far from ImageNet's, per channel, in [0, 1] pixel units.
DATA_MEAN, DATA_STD = [0.1, 0.5, 0.9], [0.3, 0.2, 0.1]


def first_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the zoo net inside `model` receives for the batch `x`."""
    seen = []
    handle = model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0]


def test_timm_teacher_sees_its_own_normalisation():
    """Pixels normalised by the dataset's mean/std reach the timm net normalised by its
    pretrained_cfg's mean/std (built offline: pretrained=False still carries the config)."""
    model = create_model("timm:resnet10t", 10, (3, 16, 16), data_mean=DATA_MEAN, data_std=DATA_STD)
    cfg = model.net.pretrained_cfg
    assert list(cfg["mean"]) != DATA_MEAN and list(cfg["std"]) != DATA_STD
    pixels = torch.rand(4, 3, 16, 16)
    data_mean, data_std = torch.tensor(DATA_MEAN).view(1, 3, 1, 1), torch.tensor(DATA_STD).view(1, 3, 1, 1)
    model_mean, model_std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    seen = first_input(model, (pixels - data_mean) / data_std)
    torch.testing.assert_close(seen, (pixels - model_mean) / model_std, atol=1e-5, rtol=1e-5)
    # the map is part of the architecture: a checkpoint's spec rebuilds it
    assert model.kdtune_spec["kwargs"]["data_mean"] == DATA_MEAN
    rebuilt = create_from_spec(model.kdtune_spec)
    rebuilt.load_state_dict(model.state_dict())  # the map is not in the state dict
    torch.testing.assert_close(first_input(rebuilt, (pixels - data_mean) / data_std), seen)


def test_grey_images_reach_a_torchvision_net_normalised_per_rgb_channel():
    """torchvision repeats a grey image over its RGB stem, then each channel is normalised by
    its default weights' mean/std (ImageNet's): no download, the values are torchvision's."""
    import torchvision

    model = create_model("torchvision:resnet18", 10, (1, 16, 16), data_mean=[0.1307], data_std=[0.3081])
    t = torchvision.models.get_model_weights("resnet18").DEFAULT.transforms()
    pixels = torch.rand(2, 1, 16, 16)
    seen = first_input(model, (pixels - 0.1307) / 0.3081)
    expect = (pixels.expand(-1, 3, -1, -1) - torch.tensor(t.mean).view(1, 3, 1, 1)) / torch.tensor(t.std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen, expect, atol=1e-5, rtol=1e-5)


def test_a_timm_net_with_one_channel_gets_the_mean_of_its_rgb_config():
    """timm sums its RGB stem filters for in_chans 1, so a grey input is normalised by the
    mean of the config's three values."""
    model = create_model("timm:resnet10t", 10, (1, 16, 16), data_mean=[0.5], data_std=[0.25])
    cfg = model.net.pretrained_cfg
    pixels = torch.rand(2, 1, 16, 16)
    seen = first_input(model, (pixels - 0.5) / 0.25)
    mean, std = sum(cfg["mean"]) / 3, sum(cfg["std"]) / 3
    torch.testing.assert_close(seen, (pixels - mean) / std, atol=1e-5, rtol=1e-5)


def test_trainables_pass_the_dataset_normalisation_to_named_zoo_models_only():
    kw = zoo.resolve_zoo_input("timm:resnet10t", {"drop_rate": 0.1}, (0.2,), (0.4,))
    assert kw == {"drop_rate": 0.1, "data_mean": [0.2], "data_std": [0.4]}
    assert zoo.resolve_zoo_input("torchvision:resnet18", {}, (0.2,), (0.4,))["data_std"] == [0.4]
    # sized families train from scratch on the dataset's inputs; built-in models never take it
    assert zoo.resolve_zoo_input("timm:resnet", {"depth": 1}, (0.2,), (0.4,)) == {"depth": 1}
    assert zoo.resolve_zoo_input("cifar_resnet", {}, (0.2,), (0.4,)) == {}
    # a value the caller set is kept
    given = {"data_mean": [0.0], "data_std": [1.0]}
    assert zoo.resolve_zoo_input("timm:resnet10t", given, (0.2,), (0.4,)) == given


def test_a_fixed_size_model_refuses_other_sizes_in_one_line():
    with pytest.raises(ValueError) as info:
        create_model("timm:vit_tiny_patch16_224", 10, (1, 28, 28))
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert "timm:vit_tiny_patch16_224 cannot take 28x28 images: it takes 224x224 only" in msg


@pytest.fixture
def hub_online_mode(monkeypatch):
    """The hub as a user's shell has it (HF_HUB_OFFLINE unset: the suite's conftest sets it),
    its endpoint a closed local port, so no request can leave the machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return constants


def test_hub_probe_says_unreachable_at_once(hub_online_mode):
    start = time.monotonic()
    assert zoo.hub_reachable(timeout=2.0) is False
    assert time.monotonic() - start < 3


def test_pretrained_weights_unreachable_hub_fail_at_once_in_one_line(hub_online_mode, caplog, capfd):
    """No hub: the lookup runs in the hub's offline mode (no retries), one ValueError line,
    and the hub's mode is restored afterwards."""
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        create_model("timm:resnet10t", 10, (3, 32, 32), pretrained=True)
    assert time.monotonic() - start < 15  # the retries took ~70 s
    assert len(str(info.value).splitlines()) == 1
    assert "timm:resnet10t: pretrained weights could not be downloaded" in str(info.value)
    out, err = capfd.readouterr()
    assert "Retrying" not in out + err + caplog.text
    assert hub_online_mode.HF_HUB_OFFLINE is False


def test_cli_pretrained_teacher_offline_is_one_line_exit_2(hub_online_mode, tmp_path, capsys):
    """--teacher timm:NAME with pretrained weights (a preset's teacher model_kwargs) on a
    machine without the hub: exit 2, one line on stderr, nothing written, within seconds."""
    from kdtune.search.run_kd_search import main

    preset = tmp_path / "zoo.yaml"
    preset.write_text(yaml.safe_dump({
        "dataset": "digits", "val_fraction": 0.2, "seed": 0,
        "teacher": {"model": "timm:resnet10t", "model_kwargs": {"pretrained": True}, "epochs": 1, "lr": 0.05},
        "students": ["mlp"]}))
    start = time.monotonic()
    code = main(["--preset", str(preset), "--storage-path", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--teacher timm:resnet10t: pretrained weights could not be downloaded" in err
    assert time.monotonic() - start < 30
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
