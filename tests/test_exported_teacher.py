"""Exported teachers (.onnx, .pt2) and timm / torchvision teachers adopted from local weights."""
from __future__ import annotations

import json

import pytest
import torch

from kdtune.analysis import exporters
from kdtune.datasets import create_dataset
from kdtune.models import create_model
from kdtune.search.stages.teacher_cache import local_cache
from kdtune.trainables.checkpoint import CheckpointError, check_compatible, load_payload, save_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained-looking conv teacher on digits, as a kdtune checkpoint and as .pt2 / .onnx."""
    folder = tmp_path_factory.mktemp("exported")
    bundle = create_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = create_model("cifar_resnet", bundle.num_classes, bundle.in_shape, depth=8, width=8).eval()
    with torch.no_grad():  # BatchNorm statistics away from their init, so folding them matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ckpt = save_checkpoint(folder / "ckpt", model=model, config={"model": "cifar_resnet"},
                           dataset_meta=bundle.meta(), epoch=1, metrics={})
    paths = exporters.write_all(model, bundle.in_shape, folder)
    return bundle, ckpt, paths


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
def test_exported_teacher_caches_the_logits_of_its_module(exported, fmt):
    bundle, ckpt, paths = exported
    ref = local_cache(bundle, ckpt, precision="fp32", device="cpu")
    got = local_cache(bundle, str(paths[fmt]), precision="fp32", device="cpu")
    assert got.views == ref.views and got.rows_per_view == ref.rows_per_view
    torch.testing.assert_close(got.val_logits("cpu"), ref.val_logits("cpu"), atol=1e-4, rtol=0)
    keys = torch.arange(len(bundle.train))
    torch.testing.assert_close(got.rows(keys, "cpu").float(), ref.rows(keys, "cpu").float(), atol=1e-4, rtol=0)


def test_exported_teacher_shape_from_the_file_and_card_mismatch_is_refused(exported, tmp_path):
    bundle, _, paths = exported
    payload = load_payload(str(paths["onnx"]))  # no card beside it: shapes from the file
    assert payload["model_spec"]["in_shape"] == list(bundle.in_shape)
    assert payload["model_spec"]["num_classes"] == bundle.num_classes
    check_compatible(payload, bundle.meta())
    # a card saying the inputs were normalised otherwise: one clear refusal
    card = {"format": "kdtune-model-card", "dataset": bundle.name, "classes": list(range(bundle.num_classes)),
            "input": {"shape": ["batch", *bundle.in_shape], "normalisation": {"mean": [0.5], "std": [0.5]}},
            "model": {"params": 1}}
    (paths["onnx"].parent / "model_card.json").write_text(json.dumps(card))
    try:
        with pytest.raises(CheckpointError, match="normalisation mean"):
            check_compatible(load_payload(str(paths["onnx"])), bundle.meta())
    finally:
        (paths["onnx"].parent / "model_card.json").unlink()


def _card(bundle, split) -> dict:
    return {"format": "kdtune-model-card", "dataset": bundle.name, "classes": list(range(bundle.num_classes)),
            "input": {"shape": ["batch", *bundle.in_shape],
                      "normalisation": {"mean": list(bundle.mean), "std": list(bundle.std)}},
            "model": {"params": 1}, "split": split}


def test_an_exported_teacher_is_checked_for_having_trained_on_the_runs_validation_images(exported, tmp_path,
                                                                                          capsys):
    """The split record in model_card.json (what `kdtune export` copies from the checkpoint)
    is checked like a checkpoint's: the same seed passes, another seed is refused in one line;
    a card without one warns, naming the card."""
    from kdtune.search.input.errors import UsageError
    from kdtune.search.input.validate import _check_teacher_checkpoint

    bundle, _, paths = exported  # the teacher's data: digits, seed 0
    path = str(paths["onnx"])
    card = paths["onnx"].parent / "model_card.json"
    try:
        card.write_text(json.dumps(_card(bundle, bundle.meta()["split"])))
        _check_teacher_checkpoint(path, bundle)
        assert "records no data split" not in capsys.readouterr().err
        other = create_dataset("digits", seed=1)
        with pytest.raises(UsageError, match=r"trained on \d+ of this run's \d+ validation images"):
            _check_teacher_checkpoint(path, other)
        card.write_text(json.dumps(_card(bundle, None)))
        _check_teacher_checkpoint(path, other)
        assert "exported model whose model_card.json records no data split" in capsys.readouterr().err
    finally:
        card.unlink()


@pytest.mark.parametrize("zoo,arch,head", [("timm", "resnet10t", "fc"), ("torchvision", "resnet18", "fc")])
def test_zoo_teacher_adopts_a_state_dict_with_its_head_resized(tmp_path, zoo, arch, head):
    """A 1000-class state dict the test writes is loaded; the head is sized to the dataset."""
    source = create_model(f"{zoo}:{arch}", 1000, (3, 32, 32)).net
    state = source.state_dict()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state} if zoo == "timm" else state, path)  # a timm checkpoint / a state dict
    for probe in (False, True):
        net = create_model(f"{zoo}:{arch}", 10, (3, 32, 32), weights_path=str(path), freeze_backbone=probe)
        own = net.net.state_dict()
        for key, value in state.items():
            if key.startswith(head + "."):
                assert own[key].shape[0] == 10
            else:
                assert torch.equal(own[key], value), key
        trainable = {n for n, p in net.net.named_parameters() if p.requires_grad}
        assert (trainable == {f"{head}.weight", f"{head}.bias"}) == probe
        net.train()
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.training != probe for m in bns)  # a linear probe's BatchNorm stays frozen
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_zoo_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(create_model("timm:resnet10t", 10, (3, 32, 32)).net.state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        create_model("timm:resnet18", 10, (3, 32, 32), weights_path=str(path))


def test_unknown_zoo_name_is_one_error():
    with pytest.raises(ValueError, match="timm has no model 'nosuchnet'"):
        create_model("timm:nosuchnet", 10, (3, 32, 32))


def test_zoo_teacher_that_cannot_take_the_images_is_one_line_exit_2(tmp_path, capsys):
    """A ViT built for 224 px images refuses digits' 8x8 ones before any work starts."""
    from kdtune.search.run_kd_search import main

    code = main(["--dataset", "digits", "--teacher", "timm:vit_tiny_patch16_224", "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--teacher timm:vit_tiny_patch16_224 cannot take 8x8 images: it takes 224x224 only" in err
    assert "input_size is (3, 224, 224)" in err
    assert not any(tmp_path.iterdir())


def test_pretrained_by_name_offline_is_one_error(monkeypatch):
    """Offline (no hub access), asking for the zoo's weights by name is one clear error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="pretrained weights could not be downloaded"):
        create_model("timm:resnet10t", 10, (3, 32, 32), pretrained=True)
