"""A KD method is one file: tests/toy_kd_method.py declares `toy` and its two hyperparameters,
and the config, the search space, the summaries, the analysis columns and a real Ray search
take everything from that declaration. Also: a loss whose __init__ disagrees with its own
declarations, or that clashes with another method's key, is refused at registration."""
import json
from pathlib import Path

import optuna
import pytest

from kdtune.trainables.config import DistillConfig
from kdtune.trainables.losses import (Hyperparameter, create_loss, list_losses, loss_from_config,
                                      method_settings, registry)
from kdtune.trainables.losses.registry import ALPHA, AlphaBlendLoss, register_loss
from tests import toy_kd_method  # noqa: F401  (registers `toy`)


def test_the_toy_method_is_a_config_key_a_loss_and_a_settings_string():
    assert "toy" in list_losses()
    cfg = DistillConfig(kd_method="toy", toy_weight=0.3, teacher_checkpoint="x")
    assert cfg.toy_weight == 0.3 and cfg.toy_scale == 2  # the declared default fills in
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["toy_scale"] == 2
    loss = loss_from_config(cfg)
    assert type(loss).__name__ == "ToyLoss" and loss.alpha == 0.3 and loss.scale == 2
    assert method_settings("toy", cfg.to_dict()) == "toy_weight=0.3, s=2"
    with pytest.raises(ValueError, match=r"toy_weight must be in \[0, 1\], got 1.5"):
        DistillConfig(kd_method="toy", toy_weight=1.5)
    with pytest.raises(ValueError, match="toy_scale must be an integer"):
        DistillConfig(kd_method="toy", toy_scale=2.5)


def test_the_search_space_samples_the_declared_ranges_and_scales():
    from kdtune.search.tune import search_spaces as spaces

    define = spaces.make_space({}, ["mlp"], {}, distill=True, methods=["toy", "kd"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(20):
        trial = study.ask()
        fixed = define(trial)
        seen.append({**trial.params, **fixed})
        study.tell(trial, 0.0)
    toys = [c for c in seen if c["kd_method"] == "toy"]
    assert toys and all(0.2 <= c["toy_weight"] <= 0.8 and c["toy_scale"] in (1, 2, 3, 4) for c in toys)
    assert all("alpha" not in c and "temperature" not in c for c in toys)  # not kd's dimensions
    dist = study.trials[[i for i, c in enumerate(seen) if c["kd_method"] == "toy"][0]].distributions
    assert isinstance(dist["toy_scale"], optuna.distributions.IntDistribution)
    spaces.check_space({"toy_scale": (1, 3)}, ["mlp"])
    with pytest.raises(ValueError, match=r"toy_weight must lie in \[0, 1\]"):
        spaces.check_space({"toy_weight": (0.5, 1.5)}, ["mlp"])


def test_a_loss_whose_init_default_disagrees_with_its_declaration_is_refused():
    class Drifted(AlphaBlendLoss):
        name = "drifted"
        hyperparameters = (ALPHA,)

        def __init__(self, alpha: float = 0.5, label_smoothing: float = 0.0):
            super().__init__(alpha, label_smoothing)

    with pytest.raises(ValueError, match=r"__init__ defaults alpha=0.5 but 'alpha' is declared with default 0.9"):
        register_loss(Drifted)
    assert "drifted" not in list_losses()


def test_two_methods_declaring_one_key_differently_are_refused():
    class Clash(AlphaBlendLoss):
        name = "clash"
        hyperparameters = (Hyperparameter("alpha", 0.5, low=0.0, high=1.0),)

        def __init__(self, alpha: float = 0.5, label_smoothing: float = 0.0):
            super().__init__(alpha, label_smoothing)

    with pytest.raises(ValueError, match="declares 'alpha' differently from another method"):
        register_loss(Clash)


def test_every_registered_loss_defaults_to_its_declarations():
    """The alpha disagreement (KDLoss 0.9, DistillConfig 0.5) cannot come back: each loss built
    with no arguments equals the loss DistillConfig builds at its defaults."""
    for name in list_losses():
        cls = registry.loss_class(name)
        built = create_loss(name)
        from_cfg = loss_from_config(DistillConfig(kd_method=name))
        for hp in cls.hyperparameters:
            assert getattr(DistillConfig(kd_method=name), hp.name) == hp.default
        assert built.extra_repr() == from_cfg.extra_repr(), name
    assert DistillConfig().alpha == 0.9 == create_loss("kd").alpha == create_loss("mse").alpha


def test_a_declaration_outside_its_own_range_is_refused():
    with pytest.raises(ValueError, match="must be > 0"):
        Hyperparameter("bad_t", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match="log scale needs a search range > 0"):
        Hyperparameter("bad_w", 1.0, low=0.0, search=(0.0, 2.0), log=True)


@pytest.mark.ray
def test_a_toy_method_is_searched_end_to_end(tmp_path):
    """A real search (teacher, baseline, distill) with --methods toy: the trials ran the toy
    loss with sampled toy_* values inside the declared ranges, and the summary shows them."""
    import ray

    from kdtune.search.run_kd_search import main

    # Workers import the toy module before any task runs: the hook names it, and PYTHONPATH
    # holds the repository root, where the tests package lives (the hook runs before Ray
    # copies the driver's sys.path into the worker).
    root = str(Path(__file__).resolve().parents[1])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "tests.toy_kd_method.register",
                          "env_vars": {"PYTHONPATH": root}})
    try:
        rc = main(["--methods", "toy", "--num-samples", "3", "--baseline-samples", "1", "--max-epochs", "2",
                   "--teacher-epochs", "2", "--grace-period", "2", "--max-concurrent", "2", "--width", "16:32",
                   "--depth", "1", "--final-seeds", "0", "--storage-path", str(tmp_path), "--name", "toy"])
    finally:
        ray.shutdown()
    assert rc == 0
    manifest = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    best = manifest["stages"]["distill"]["config"]
    assert best["kd_method"] == "toy" and 0.2 <= best["toy_weight"] <= 0.8 and best["toy_scale"] in (1, 2, 3, 4)
    from kdtune.analysis.experiment import Experiment

    trials = Experiment.open(tmp_path / "toy").trials()
    distilled = trials[trials["stage"] == "distill"]
    assert len(distilled) == 3 and distilled["toy_weight"].between(0.2, 0.8).all()
    assert (distilled["status"] == "TERMINATED").all() and (distilled["kd_method"] == "toy").all()
    summary = (tmp_path / "toy" / "summary.md").read_text()
    assert "toy_weight=" in summary
