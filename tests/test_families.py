"""Student families: the registry, the timm members, and the size budget held by the sampler."""
from __future__ import annotations

import optuna
import pytest
import torch

from kdtune.models import count_params, create_model, flops_per_image
from kdtune.models.families import SizeDim, family, list_families, register_family, sized_families
from kdtune.search.input.errors import UsageError
from kdtune.search.tune.search_spaces import SizeBudget, family_dim, make_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_families_registry_holds_builtins_and_timm():
    assert {"mlp", "cifar_resnet", "timm:resnet", "timm:mobilenetv3", "timm:efficientnet"} <= set(sized_families())
    assert family("cifar_resnet").dim("depth").step == 6
    # the search space's defaults are the family's
    assert family_dim({}, "depth", "timm:resnet") == family("timm:resnet").dim("depth").default
    # a registered model that is no family: a student as it is, without size dimensions
    assert family("resnet20").dims == () and "resnet20" in list_families()
    with pytest.raises(ValueError, match="unknown student family"):
        family("no_such_net")


def test_family_rules_keep_one_optuna_distribution_per_name():
    with pytest.raises(ValueError, match="log-scaled"):
        register_family("bad", "mlp", (SizeDim("width", (8, 64), step=8),))


@pytest.mark.parametrize("name,sizes,expect", [
    # timm:resnet at depth 2, width 64 is timm's resnet18 (same layers and channels)
    ("timm:resnet", {"depth": 2, "width": 64}, "timm:resnet18"),
])
def test_timm_resnet_family_matches_timm_named_model(name, sizes, expect):
    ours = create_model(name, 10, (3, 32, 32), **sizes)
    theirs = create_model(expect, 10, (3, 32, 32))
    assert count_params(ours) == count_params(theirs)


@pytest.mark.parametrize("name", ["timm:resnet", "timm:mobilenetv3", "timm:efficientnet"])
def test_meta_size_equals_real_size(name):
    fam = family(name)
    sizes = {d.name: d.default[0] for d in fam.dims}
    params, flops = fam.size(10, (1, 28, 28), **sizes)
    net = fam.build(10, (1, 28, 28), **sizes)
    assert params == count_params(net)
    assert flops == flops_per_image(net, (1, 28, 28))
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_budget_is_never_exceeded_over_many_samples(sampler):
    """Property: whatever the sampler proposes, the built student is within both budgets."""
    max_params, max_flops = 150_000, 15_000_000
    budget = SizeBudget(10, (1, 28, 28), max_params=max_params, max_flops=max_flops)
    define = make_space({}, ["timm:resnet", "cifar_resnet", "mlp"], {"dataset": "mnist"}, True, budget=budget)
    algo = (optuna.samplers.RandomSampler(seed=1) if sampler == "random"
            else optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    study = optuna.create_study(sampler=algo)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = define(trial)
        model = config.get("model", trial.params.get("model"))
        sizes = {k: trial.params.get(k, config.get(k)) for k in ("depth", "width")}
        net = create_model(model, 10, (1, 28, 28), **sizes)  # built for real, not from the memo
        assert count_params(net) <= max_params, (model, sizes)
        assert flops_per_image(net, (1, 28, 28)) <= max_flops, (model, sizes)
        seen.add(model)
        # reward size so TPE pushes against the budget's edge
        study.tell(trial, -float(count_params(net)))
    assert seen == {"timm:resnet", "cifar_resnet", "mlp"}


def test_budget_cuts_the_range_to_its_edge():
    budget = SizeBudget(10, (1, 28, 28), max_params=100_000)
    top = budget.largest_fit("mlp", "width", 16, 1024, 1, {"depth": 1}, {})
    assert budget.fits("mlp", {"depth": 1, "width": top})
    assert not budget.fits("mlp", {"depth": 1, "width": top + 1})


def test_budget_below_smallest_member_is_a_usage_error():
    budget = SizeBudget(10, (1, 28, 28), max_params=1000)
    with pytest.raises(UsageError, match="smallest member"):
        budget.largest_fit("cifar_resnet", "depth", 8, 56, 6, {}, {})
