"""Tests of models/: the registry, every architecture, specs, probes. CPU only, a few seconds.

    python -m pytest -q tests/test_models.py
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdtune import models
from kdtune.models import (count_params, create_from_spec, create_model, flops_per_image,
                    gradient_probes, list_models, register_model)
from kdtune.models.blocks import BasicBlock, Bottleneck
from kdtune.models.layers import DropBlock2d

SHAPES = [(1, 28, 28), (3, 32, 32)]
# Smallest sensible kwargs for the slow ones, so the whole file stays fast on 2 cores.
SMALL = {"resnet": {"width": 16}}


def _forward(model: nn.Module, shape, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_models())
def test_forward_every_model(name, shape):
    model = create_model(name, 7, shape, **SMALL.get(name, {})).eval()
    out = _forward(model, shape)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,kw", [("resnet", {"width": 8, "dropblock": 0.3}),
                                     ("cifar_resnet", {}), ("mlp", {})])
def test_tiny_8x8_inputs_train_mode(name, kw):
    # Four stages take an 8x8 image down to 1x1: global pooling and DropBlock must cope.
    model = create_model(name, 3, (1, 8, 8), **kw).train()
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_registration_happens_on_import():
    expected = {"mlp", "resnet", "cifar_resnet", "resnet20", "resnet32", "resnet44", "resnet56",
                "resnet110", "resnet8x4", "resnet32x4", "resnet18", "resnet50"}
    assert expected <= set(models.list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name,num_classes,exact,approx", [
    # Option-B projections add 2,752 params to the 16/32/64 nets (269,722 with option A).
    ("resnet20", 10, 272_474, 0.27e6),
    ("resnet32", 10, 466_906, 0.46e6),
    ("resnet44", 10, 661_338, 0.66e6),
    ("resnet56", 10, 855_770, 0.86e6),
    ("resnet110", 10, 1_730_714, 1.7e6),
    # CRD / DKD (RepDistiller) report 1.23 M and 7.43 M for CIFAR-100.
    ("resnet8x4", 100, 1_233_540, 1.23e6),
    ("resnet32x4", 100, 7_433_860, 7.43e6),
])
def test_cifar_param_counts(name, num_classes, exact, approx):
    n = count_params(create_model(name, num_classes, (3, 32, 32)))
    assert n == exact
    assert abs(n - approx) / approx < 0.02


def test_mlp_hinton_teacher_param_count_exact():
    model = create_model("mlp", 10, (1, 28, 28), width=1200, depth=2)
    assert count_params(model) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10 == 2_395_210


def test_torchvision_resnet_counts_match_torchvision_minus_stem():
    import torchvision
    ref = torchvision.models.resnet18(weights=None, num_classes=10)
    # Our stem: a 3x3 conv over 3 channels instead of 7x7; everything else is torchvision's.
    expected = count_params(ref) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    assert count_params(create_model("resnet18", 10, (3, 32, 32))) == expected == 11_173_962
    assert count_params(create_model("resnet", 10, (3, 32, 32))) == expected


def test_cifar_depth_and_width_are_the_search_knobs():
    a = create_model("cifar_resnet", 10, (3, 32, 32), depth=20, width=16)
    assert count_params(a) == count_params(create_model("resnet20", 10, (3, 32, 32)))
    wide = create_model("cifar_resnet", 10, (3, 32, 32), depth=8, width=64, stem_width=32)
    assert count_params(wide) == count_params(create_model("resnet8x4", 10, (3, 32, 32)))
    assert count_params(create_model("mlp", 10, (1, 28, 28), depth=3, width=64)) == \
        784 * 64 + 64 + 2 * (64 * 64 + 64) + 64 * 10 + 10


@pytest.mark.parametrize("name,kw", [("resnet", {"width": 8, "layers": (1, 1, 1)}),
                                     ("cifar_resnet", {"depth": 8}), ("resnet20", {})])
def test_residual_false_is_a_plain_net(name, kw):
    res = create_model(name, 10, (3, 32, 32), **kw).eval()
    plain = create_model(name, 10, (3, 32, 32), residual=False, **kw).eval()
    blocks = [m for m in plain.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert blocks and all(b.shortcut is None for b in blocks)
    # Same weights (the plain net lacks only the projections): outputs must differ.
    missing, unexpected = plain.load_state_dict(res.state_dict(), strict=False)
    assert not missing and all(".shortcut." in k for k in unexpected)
    assert not torch.allclose(_forward(res, (3, 32, 32)), _forward(plain, (3, 32, 32)))


def test_mlp_residual_changes_output_not_params():
    res = create_model("mlp", 10, (1, 28, 28), width=32, depth=3, residual=True)
    plain = create_model("mlp", 10, (1, 28, 28), width=32, depth=3)
    assert count_params(res) == count_params(plain)
    assert [b.residual for b in res.blocks] == [False, True, True]  # first block: 784 -> 32
    plain.load_state_dict(res.state_dict())
    assert not torch.allclose(_forward(res, (1, 28, 28)), _forward(plain, (1, 28, 28)))


def test_bottleneck_blocks():
    model = create_model("resnet", 10, (3, 32, 32), block="bottleneck", layers=(1, 1, 1), width=8)
    assert any(isinstance(m, Bottleneck) for m in model.modules())
    assert model.fc.in_features == 4 * 8 * 4  # stage 3 width 4w, expansion 4
    assert _forward(model.eval(), (3, 32, 32)).shape == (2, 10)
    cifar = create_model("cifar_resnet", 10, (3, 32, 32), depth=11, block="bottleneck")
    assert sum(isinstance(m, Bottleneck) for m in cifar.modules()) == 3
    assert cifar.fc.in_features == 256
    with pytest.raises(ValueError, match="9n\\+2"):
        create_model("cifar_resnet", 10, (3, 32, 32), depth=21, block="bottleneck")


def test_dropblock_layer_only_in_train_mode():
    torch.manual_seed(0)
    layer = DropBlock2d(0.3, block_size=3)
    x = torch.ones(4, 8, 16, 16)
    assert torch.equal(layer.eval()(x), x)
    y = layer.train()(x)
    dropped = (y == 0).float().mean().item()
    assert 0.15 < dropped < 0.45  # about drop_prob of the units
    assert torch.allclose(y.mean(), x.mean(), rtol=0.05)  # rescaled to keep the mean


def test_dropblock_in_resnet_only_active_in_training():
    model = create_model("resnet", 10, (3, 32, 32), width=8, layers=(1, 1, 1, 1), dropblock=0.5)
    drops = [m for m in model.modules() if isinstance(m, DropBlock2d)]
    assert len(drops) == 2  # after the last two stages
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))
    off = create_model("resnet", 10, (3, 32, 32), width=8, layers=(1, 1, 1, 1)).train()
    assert not any(isinstance(m, DropBlock2d) for m in off.modules())


def test_factorized_conv_param_count():
    kw = {"width": 8, "layers": (1, 1, 1)}
    plain = create_model("resnet", 10, (3, 32, 32), **kw)
    fact = create_model("resnet", 10, (3, 32, 32), factorized=True, **kw)
    # Each 3x3 conv in->out (9*in*out weights) becomes 3x1 in->out + 1x3 out->out.
    saved = sum(9 * m.in_channels * m.out_channels
                - (3 * m.in_channels * m.out_channels + 3 * m.out_channels ** 2)
                for m in plain.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert count_params(fact) == count_params(plain) - saved
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in fact.modules())
    assert _forward(fact.eval(), (3, 32, 32)).shape == (2, 10)


def test_zero_init_residual():
    model = create_model("resnet", 10, (3, 32, 32), width=8, layers=(1, 1, 1), zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    with pytest.raises(ValueError, match="residual"):
        create_model("resnet", 10, (3, 32, 32), residual=False, zero_init_residual=True)


def test_freeze_backbone_leaves_only_fc_trainable():
    model = create_model("resnet18", 10, (3, 32, 32), freeze_backbone=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert count_params(model, trainable_only=True) == 512 * 10 + 10
    assert count_params(model) > count_params(model, trainable_only=True)


def test_weights_path_round_trip(tmp_path):
    src = create_model("resnet18", 10, (3, 32, 32))
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    dst = create_model("resnet18", 100, (3, 32, 32), weights_path=str(path))
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(dst.state_dict()[k], v), k
    assert dst.fc.out_features == 100
    # A grey-scale stem cannot take the RGB conv1: it is skipped, the rest loads.
    grey = create_model("resnet18", 10, (1, 28, 28), weights_path=str(path))
    assert torch.equal(grey.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert torch.equal(grey.fc.weight, src.fc.weight)
    assert "weights_path" not in dst.kdtune_spec["kwargs"]


def test_weights_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_model("resnet18", 10, (3, 32, 32), weights_path=str(tmp_path / "nope.pt"))
    other = tmp_path / "r50.pt"
    torch.save(create_model("resnet50", 10, (3, 32, 32)).state_dict(), other)
    with pytest.raises(ValueError, match="does not match"):
        create_model("resnet18", 10, (3, 32, 32), weights_path=str(other))


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as err:
        create_model("resnet21", 10, (3, 32, 32))
    msg = str(err.value)
    assert "resnet21" in msg and all(n in msg for n in list_models())


def test_unknown_kwarg_names_model_and_accepted_kwargs():
    with pytest.raises(ValueError) as err:
        create_model("mlp", 10, (1, 28, 28), widht=100)
    msg = str(err.value)
    assert "'mlp'" in msg and "widht" in msg and "'width'" in msg and "activation" in msg
    with pytest.raises(ValueError, match="resnet20.*accepts"):
        create_model("resnet20", 10, (3, 32, 32), depth=32)


@pytest.mark.parametrize("name,kw,pattern", [
    ("mlp", {"depth": 0}, "depth"),
    ("mlp", {"width": -3}, "width"),
    ("mlp", {"activation": "swish"}, "activation.*gelu"),
    ("mlp", {"dropout": 1.0}, "dropout"),
    ("resnet", {"block": "basik"}, "block.*bottleneck"),
    ("resnet", {"layers": (2, 2)}, "3 or 4"),
    ("resnet", {"layers": (2, 0, 2)}, "layers"),
    ("resnet", {"dropblock": 1.5}, "dropblock"),
    ("cifar_resnet", {"depth": 21}, "6n\\+2"),
    ("cifar_resnet", {"block": "wide"}, "block"),
])
def test_bad_values_fail_clearly(name, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        create_model(name, 10, (3, 32, 32), **kw)


@pytest.mark.parametrize("num_classes,in_shape", [(0, (3, 32, 32)), (10, (32, 32)), (10, (3, 0, 32))])
def test_bad_num_classes_or_shape(num_classes, in_shape):
    with pytest.raises(ValueError):
        create_model("mlp", num_classes, in_shape)


@pytest.mark.parametrize("name,kw", [("mlp", {"width": 64, "depth": 3, "activation": "gelu"}),
                                     ("resnet", {"width": 8, "layers": (1, 2, 1), "block": "bottleneck"}),
                                     ("cifar_resnet", {"depth": 14, "width": 8}),
                                     ("resnet8x4", {}), ("resnet18", {"freeze_backbone": True})])
def test_create_from_spec_round_trip(name, kw):
    model = create_model(name, 10, (3, 32, 32), **kw)
    spec = json.loads(json.dumps(model.kdtune_spec))  # what a checkpoint stores
    assert spec == model.kdtune_spec
    rebuilt = create_from_spec(spec)
    assert count_params(rebuilt) == count_params(model)
    assert count_params(rebuilt, True) == count_params(model, True)
    assert rebuilt.kdtune_spec == spec
    rebuilt.load_state_dict(model.state_dict())  # same architecture, key for key


def test_spec_records_resolved_kwargs():
    spec = create_model("resnet", 10, (1, 28, 28), width=8).kdtune_spec
    assert spec["name"] == "resnet" and spec["in_shape"] == [1, 28, 28]
    assert spec["kwargs"]["width"] == 8 and spec["kwargs"]["layers"] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown keys"):
        create_from_spec({**spec, "path": "x"})


def test_flops_per_image():
    r20 = create_model("resnet20", 10, (3, 32, 32)).train()
    r56 = create_model("resnet56", 10, (3, 32, 32))
    r56.stages[0].eval()  # a mixed-mode model must come back mixed
    f20, f56 = flops_per_image(r20, (3, 32, 32)), flops_per_image(r56, (3, 32, 32))
    assert 0 < f20 < f56
    assert 70e6 < f20 < 90e6  # about 41 M multiply-adds, counted as 2 FLOPs each
    assert r20.training and all(m.training for m in r20.modules())
    assert r56.training and not r56.stages[0].training and not r56.stages[0][0].training
    mlp = create_model("mlp", 10, (1, 28, 28), width=1200, depth=2)
    assert flops_per_image(mlp, (1, 28, 28)) == 2 * (784 * 1200 + 1200 * 1200 + 1200 * 10)


def _forward_order(model: nn.Module, shape) -> list[nn.Module]:
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod)) for m in model.modules()
             if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]
    _forward(model.eval(), shape)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name,kw,n_probes", [
    ("mlp", {"depth": 3, "width": 16}, 4),
    ("resnet20", {}, 1 + 9 + 1),
    ("resnet", {"width": 8, "layers": (1, 1, 1), "factorized": True}, 1 + 3 + 1),
    ("resnet18", {}, 1 + 8 + 1),
])
def test_gradient_probes_ordered(name, kw, n_probes):
    model = create_model(name, 10, (3, 32, 32), **kw)
    probes = gradient_probes(model)
    assert len(probes) == n_probes
    assert len({n for n, _ in probes}) == n_probes
    assert all(m.weight.dim() >= 2 for _, m in probes)
    order = _forward_order(model, (3, 32, 32))
    positions = [order.index(m) for _, m in probes]
    assert positions == sorted(positions) and probes[-1][1] is order[-1]
    if name == "mlp":
        assert [n for n, _ in probes] == ["layer00", "layer01", "layer02", "layer03"]
        assert all(isinstance(m, nn.Linear) for _, m in probes)


def test_gradient_probes_fallback_for_plain_modules():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert [n for n, _ in gradient_probes(net)] == ["0", "3"]


def test_register_model_checks_signature():
    def bad(classes, shape):  # wrong argument names
        return nn.Identity()

    with pytest.raises(TypeError):
        register_model(bad)
    assert "bad" not in list_models()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine 2 threads are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_every_model(name, one_thread):
    # Tiny 3x8x8 inputs (4 stages take 8x8 to 1x1), batch 2 in train mode (BatchNorm needs
    # two values per channel): every parameter that trains gets a finite gradient that is
    # not zero everywhere, i.e. it is on the path from input to loss.
    torch.manual_seed(0)
    model = create_model(name, 5, (3, 8, 8), **SMALL.get(name, {})).train()
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5)
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"{name} has no trainable parameters"
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: no gradient reached {missing[:5]}"
    not_finite = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"{name}: non-finite gradients in {not_finite[:5]}"
    zero = [n for n, p in trainable if not p.grad.any()]
    assert not zero, f"{name}: gradient zero everywhere in {zero[:5]}"


def test_frozen_backbone_gets_no_gradient_and_its_head_does(one_thread):
    model = create_model("resnet18", 5, (3, 8, 8), freeze_backbone=True).train()
    nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 8)), torch.tensor([0, 3])).backward()
    learned = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    assert learned == {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
