"""trainables/optim.py: the optimiser and schedule registries build exactly what the config
says (numbers checked against torch built by hand and against the schedules' formulas)."""
import math

import pytest
import torch
from torch import nn

from kdtune.trainables import optim
from kdtune.trainables.config import DistillConfig

STEPS_PER_EPOCH, EPOCHS = 5, 4


def _cfg(**kw):
    return DistillConfig(epochs=EPOCHS, lr=0.1, weight_decay=1e-3, momentum=0.8, **kw)


def _model():
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def _train(model, optimizer, steps=3):
    """A few deterministic steps on a fixed random batch sequence."""
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = model(torch.randn(8, 4, generator=g)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_registries_list_the_known_names():
    assert optim.list_optimizers() == ["adam", "adamw", "sgd"]
    assert optim.list_schedules() == ["constant", "cosine", "onecycle", "step"]


@pytest.mark.parametrize("name, reference", [
    ("sgd", lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=True,
                                         weight_decay=c.weight_decay)),
    ("adam", lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay)),
    ("adamw", lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay)),
])
def test_optimizer_steps_match_torch_built_by_hand(name, reference):
    cfg = _cfg(optimizer=name)
    ours, theirs = _model(), _model()
    opt = optim.create_optimizer(cfg, ours)
    assert type(opt) is type(reference(theirs.parameters(), cfg))
    assert opt.param_groups[0]["fused"] is True  # torch's fused kernel on CPU (trainables/optim.fused)
    _train(ours, opt)
    _train(theirs, reference(theirs.parameters(), cfg))  # torch's default implementation (foreach)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        # The same update in another order: equal up to float32 rounding, not bitwise.
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_fused_only_where_every_parameter_can_take_it():
    weights = list(_model().parameters())
    assert optim.fused(weights) == {"fused": True}
    assert optim.fused(weights + [torch.zeros(3, dtype=torch.int64)]) == {}  # not floating point
    assert optim.fused(weights + [torch.zeros(3, device="meta")]) == {}  # no fused kernel there
    assert optim.fused([]) == {}
    # A model on a device without fused kernels gets torch's default, for every optimiser.
    meta = nn.Linear(2, 2, device="meta")
    for name in optim.list_optimizers():
        assert not optim.create_optimizer(_cfg(optimizer=name), meta).param_groups[0]["fused"], name


def test_sgd_without_momentum_drops_nesterov_and_frozen_parameters_are_left_out():
    model = _model()
    model.bias.requires_grad_(False)
    opt = optim.create_optimizer(DistillConfig(momentum=0.0, nesterov=True), model)
    assert opt.param_groups[0]["nesterov"] is False
    assert [p for g in opt.param_groups for p in g["params"]] == [model.weight]


def _lrs(cfg, steps):
    model = _model()
    opt = optim.create_optimizer(cfg, model)
    schedule = optim.create_schedule(cfg, opt, STEPS_PER_EPOCH)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.after_batch()
        if len(out) % STEPS_PER_EPOCH == 0:
            schedule.after_epoch()
    return out


def test_cosine_follows_its_formula_per_batch():
    total = EPOCHS * STEPS_PER_EPOCH
    got = _lrs(_cfg(schedule="cosine"), total)
    assert got == pytest.approx([0.1 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)])


def test_step_multiplies_by_gamma_at_milestone_epochs():
    got = _lrs(_cfg(schedule="step", milestones=(1, 3), gamma=0.5), EPOCHS * STEPS_PER_EPOCH)
    per_epoch = [0.1, 0.05, 0.05, 0.025]
    assert got == pytest.approx([lr for lr in per_epoch for _ in range(STEPS_PER_EPOCH)])


def test_constant_keeps_the_lr_and_onecycle_matches_torch():
    assert _lrs(_cfg(schedule="constant"), 12) == [0.1] * 12
    total = EPOCHS * STEPS_PER_EPOCH
    ref_opt = torch.optim.SGD(_model().parameters(), lr=0.1, momentum=0.8)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, total_steps=total, cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert _lrs(_cfg(schedule="onecycle"), total) == pytest.approx(expected)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm' \(did you mean 'adam'\?\); known: adam, adamw, sgd"):
        DistillConfig(optimizer="adamm")
    with pytest.raises(ValueError, match=r"unknown schedule 'linear'.*known: constant, cosine, onecycle, step"):
        DistillConfig(schedule="linear")

    class Raw:  # a config that skipped validation still gets the registry's message
        optimizer, schedule, epochs = "lion", "cosine", 1
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; known: adam, adamw, sgd"):
        optim.create_optimizer(Raw, _model())


def test_a_registered_optimizer_is_accepted_by_configs(monkeypatch):
    monkeypatch.setattr(optim, "_OPTIMIZERS", dict(optim._OPTIMIZERS))

    @optim.register_optimizer
    def rmsprop(cfg, params):
        return torch.optim.RMSprop(params, lr=cfg.lr)

    cfg = DistillConfig(optimizer="rmsprop")
    assert isinstance(optim.create_optimizer(cfg, _model()), torch.optim.RMSprop)

    def sgd(cfg, params):  # a second function under a taken name
        return None
    with pytest.raises(ValueError, match="optimizer 'sgd' is already registered"):
        optim.register_optimizer(sgd)
