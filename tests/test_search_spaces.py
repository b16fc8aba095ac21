"""Search spaces, presets and flag merging: pure Python, no Ray."""
import re

import optuna
import pytest

from kdtune.search.tune import search_spaces as spaces
from kdtune.search.input.cli import parse_args
from kdtune.search.input.preset_loader import list_presets, load_preset


def _sample(define, n=30, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        fixed = define(trial)
        configs.append({**trial.params, **fixed})
        study.tell(trial, 0.0)
    return configs


def test_parse_dim_pins_and_ranges():
    assert spaces.parse_dim("0.5") == 0.5
    assert spaces.parse_dim("2") == 2
    assert spaces.parse_dim("0.1:0.9") == (0.1, 0.9)
    with pytest.raises(ValueError, match="not a number"):
        spaces.parse_dim("abc")


def test_conditional_space_keys_are_config_fields_and_respect_family_grids():
    space = {"depth": {"mlp": (1, 3), "cifar_resnet": (8, 20)}, "width": {"mlp": (16, 64), "cifar_resnet": (8, 16)}}
    define = spaces.make_space(space, ["mlp", "cifar_resnet"], {"dataset": "digits", "epochs": 3}, distill=True)
    configs = _sample(define)
    families = {c["model"] for c in configs}
    assert families == {"mlp", "cifar_resnet"}
    for c in configs:
        assert set(c) >= {"model", "depth", "width", "alpha", "temperature", "lr", "weight_decay", "dataset", "epochs"}
        if c["model"] == "mlp":
            assert 1 <= c["depth"] <= 3 and 16 <= c["width"] <= 64
        else:
            assert c["depth"] in (8, 14, 20) and 8 <= c["width"] <= 16
        assert 0.0 <= c["alpha"] <= 1.0 and c["temperature"] > 0


def test_baseline_space_fixes_alpha_to_zero_and_samples_no_kd_dims():
    define = spaces.make_space({}, ["mlp"], {}, distill=False)
    for c in _sample(define, n=5):
        assert c["alpha"] == 0.0 and "temperature" not in c


def test_pinned_dimensions_are_constants():
    define = spaces.make_space({"alpha": 0.7, "depth": 2}, ["mlp"], {}, distill=True)
    study = optuna.create_study()
    trial = study.ask()
    fixed = define(trial)
    assert fixed["alpha"] == 0.7 and fixed["depth"] == 2
    assert "alpha" not in trial.params and "depth" not in trial.params


@pytest.mark.parametrize("space, message", [
    ({"alpha": (0.5, 1.5)}, "alpha must lie in"),
    ({"temperature": 0}, "temperature"),
    ({"lr": (0.1, 0.01)}, "empty range"),
    ({"depth": (9, 13)}, "no valid cifar_resnet depth"),
    ({"bogus": 1}, "unknown search dimension"),
])
def test_bad_spaces_are_rejected(space, message):
    with pytest.raises(ValueError, match=message):
        define = spaces.make_space(space, ["cifar_resnet"], {}, distill=True)
        _sample(define, n=1)


def test_every_bundled_preset_loads_and_has_a_search_section():
    for name in list_presets():
        preset = load_preset(name)
        assert preset["dataset"] and "search" in preset


def test_malformed_preset_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nsearch: [unclosed\n")
    with pytest.raises(ValueError, match=r"not valid YAML at line"):
        load_preset(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("dataset: digits\nsearch: {num_sample: 3}\n")
    with pytest.raises(ValueError, match="unknown search key"):
        load_preset(str(typo))


def test_flags_override_the_preset():
    spec, _ = parse_args(["--dataset", "mnist", "--alpha", "0.3:0.6", "--depth", "2", "--num-samples", "5",
                          "--teacher", "resnet20", "--name", "x"])
    assert spec.preset == "mnist" and spec.dataset == "mnist"
    assert spec.space["alpha"] == (0.3, 0.6) and spec.space["depth"] == 2
    assert spec.num_samples == 5 and spec.name == "x"
    # A different teacher drops the preset's MLP sizes.
    assert spec.teacher["model"] == "resnet20" and "width" not in spec.teacher


def test_smoke_test_shrinks_every_budget():
    spec, _ = parse_args(["--smoke-test"])
    assert spec.num_samples <= 2 and spec.max_epochs <= 2 and spec.subset <= 256
    assert spec.teacher["epochs"] == 1 and spec.grace_period <= spec.max_epochs


def test_sampled_dimensions_are_not_shadowed_by_constants():
    # The preset's train section also sets weight_decay and lr; the sampled values must win.
    define = spaces.make_space({"weight_decay": (1e-5, 1e-3), "lr": (0.01, 0.1)}, ["mlp"],
                               {"weight_decay": 5e-4, "lr": 0.05}, distill=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    fixed = define(trial)
    assert "weight_decay" not in fixed and "lr" not in fixed
    merged = {**trial.params, **fixed}  # how Ray's OptunaSearch builds the config
    assert merged["weight_decay"] == trial.params["weight_decay"] != 5e-4


# ---- KD methods --------------------------------------------------------------------------
def _tpe_params(define, n=14, seed=0):
    """Params of n trials of a seeded TPE study (past its 10 random start-up trials), each told
    a value computed from its params, so the sampler's later picks depend on earlier ones."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        fixed = define(trial)
        out.append((dict(trial.params), fixed))
        study.tell(trial, sum(hash(str(v)) % 97 for v in trial.params.values()) / 97.0)
    return out


def _search_without_methods(trial):
    """The distillation space as it was sampled before KD methods existed (written out)."""
    trial.suggest_int("depth", 1, 3)
    trial.suggest_int("width", 16, 64, log=True)
    trial.suggest_float("lr", 0.01, 0.3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    trial.suggest_float("alpha", 0.1, 0.95)
    trial.suggest_float("temperature", 1.0, 10.0)
    return {}


SPACE = {"depth": (1, 3), "width": (16, 64), "lr": (0.01, 0.3), "weight_decay": (1e-5, 1e-3),
         "alpha": (0.1, 0.95), "temperature": (1.0, 10.0)}


def test_kd_alone_samples_the_same_configs_as_a_search_without_methods():
    define = spaces.make_space({**SPACE, "dkd_beta": (1.0, 8.0)}, ["mlp"], {}, distill=True, methods=["kd"])
    new = _tpe_params(define)
    old = _tpe_params(_search_without_methods)
    assert [p for p, _ in new] == [p for p, _ in old]
    assert all(fixed["kd_method"] == "kd" and "dkd_beta" not in fixed for _, fixed in new)


def test_methods_are_a_categorical_dimension_with_conditional_hyperparameters():
    from kdtune.trainables.config import DistillConfig

    space = {**SPACE, "dkd_beta": (1.0, 8.0), "dkd_warmup": 2, "dist_gamma": (0.5, 4.0),
             "logit_standardize": (False, True)}
    define = spaces.make_space(space, ["mlp"], {"dataset": "digits"}, distill=True,
                               methods=["kd", "dkd", "dist"])
    configs = [{**p, **f} for p, f in _tpe_params(define, n=30, seed=1)]
    assert {c["kd_method"] for c in configs} == {"kd", "dkd", "dist"}
    own = {"kd": {"alpha", "temperature", "logit_standardize"},
           "dkd": {"dkd_alpha", "dkd_beta", "dkd_temperature", "dkd_warmup", "logit_standardize"},
           "dist": {"dist_beta", "dist_gamma", "dist_temperature"}}
    every = set().union(*own.values())
    for c in configs:
        method = c["kd_method"]
        assert every & set(c) == own[method], c  # its own hyperparameters, nobody else's
        if method == "kd":
            assert 1.0 <= c["temperature"] <= 10.0
        if method == "dkd":  # its own T range (spaces.METHOD_DIMS), not kd's
            assert 1.0 <= c["dkd_beta"] <= 8.0 and c["dkd_warmup"] == 2 and 0.5 <= c["dkd_alpha"] <= 20.0
            assert 1.0 <= c["dkd_temperature"] <= 4.0
        if method == "dist":
            assert 0.5 <= c["dist_gamma"] <= 4.0 and 0.5 <= c["dist_beta"] <= 4.0
            assert 1.0 <= c["dist_temperature"] <= 4.0
        DistillConfig.from_dict(c)  # every sampled key is a config field with a valid value
    assert {c["logit_standardize"] for c in configs if c["kd_method"] != "dist"} == {False, True}
    # Seeded: the same study twice samples the same configs.
    assert configs == [{**p, **f} for p, f in _tpe_params(define, n=30, seed=1)]


def test_one_other_method_is_pinned_not_sampled():
    define = spaces.make_space(SPACE, ["mlp"], {}, distill=True, methods=["dist"])
    params, fixed = _tpe_params(define, n=1)[0]
    assert fixed["kd_method"] == "dist" and "kd_method" not in params
    assert "alpha" not in params and "alpha" not in fixed and "dist_beta" in params


@pytest.mark.parametrize("methods, space, message", [
    (["kd", "vid"], {}, "unknown KD method(s) 'vid'; known: at, crd, dist, dkd, fitnet, kd, kd_weighted, mse, pkt, reviewkd, rkd, sp"),
    (["kd", "kd"], {}, "twice"),
    (["dkd"], {"logit_standardize": "yes"}, "logit_standardize: expected true, false or [false, true]"),
    (["dkd"], {"dkd_warmup": (1.5, 3)}, "dkd_warmup: expected whole numbers"),
    (["dkd"], {"dkd_temperature": (0.0, 4.0)}, "dkd_temperature must be > 0"),
    (["dist"], {"dist_temperature": 0.0}, "dist_temperature must be > 0"),
])
def test_bad_methods_and_method_ranges_are_rejected(methods, space, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        spaces.make_space(space, ["mlp"], {}, distill=True, methods=methods)


def test_methods_flag_and_preset_key():
    spec, _ = parse_args(["--methods", "kd,dkd", "--name", "x"])
    assert spec.methods == ("kd", "dkd")
    assert parse_args(["--name", "x"])[0].methods == ("kd",)
    assert type(spec).from_dict(spec.to_dict()).methods == ("kd", "dkd")
