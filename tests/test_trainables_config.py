"""kdtune.trainables.config: flat keys, unknown keys rejected with hints, validation messages."""
import pytest

from kdtune.trainables.config import DistillConfig, TeacherConfig, TrainConfig


def test_defaults_round_trip_and_hash():
    cfg = DistillConfig.from_dict({"model_kwargs": {"dropout": 0.1}, "milestones": [3, 6]})
    assert cfg.milestones == (3, 6)
    assert cfg.to_dict()["model_kwargs"] == {"dropout": 0.1}
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    hash(cfg)  # frozen and hashable despite the mapping field
    assert cfg.model_build_kwargs() == {"dropout": 0.1}
    assert DistillConfig.from_dict({"depth": 3, "width": 64}).model_build_kwargs() == {"depth": 3, "width": 64}


def test_unknown_key_lists_valid_keys_and_close_match():
    with pytest.raises(ValueError) as e:
        DistillConfig.from_dict({"temprature": 3.0})
    msg = str(e.value)
    assert "'temprature'" in msg and "did you mean 'temperature'" in msg
    assert "valid keys:" in msg and "alpha" in msg and "lr" in msg
    with pytest.raises(ValueError, match="unknown TeacherConfig key.*'alpha'"):
        TeacherConfig.from_dict({"alpha": 0.5})  # a distillation key in the teacher stage


@pytest.mark.parametrize("bad,match", [
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
    ({"temperature": 0}, r"temperature must be > 0, got 0"),
    ({"lr": 0}, r"lr must be > 0"),
    ({"epochs": 0}, r"epochs must be >= 1"),
    ({"batch_size": 0}, r"batch_size must be >= 1"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\)"),
    ({"model": "resnet21"}, r"unknown model 'resnet21'.*known:"),
    ({"dataset": "imagenet-9000"}, r"unknown dataset 'imagenet-9000'"),
    ({"optimizer": "sgdd"}, r"unknown optimizer 'sgdd' \(did you mean 'sgd'\?\)"),
    ({"schedule": "linear"}, r"unknown schedule 'linear'"),
    ({"precision": "fp16"}, r"unknown precision 'fp16'"),
    ({"teacher_logits": "maybe"}, r"unknown teacher_logits 'maybe'"),
    ({"epochs": 2.5}, r"epochs must be an integer"),
    ({"milestones": [5, 2]}, r"milestones must be increasing"),
    ({"model_kwargs": {"depth": 3}}, r"model_kwargs must not set \['depth'\]"),
])
def test_validation_messages(bad, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig.from_dict(bad)


def test_sampler_types_are_coerced():
    np = pytest.importorskip("numpy")
    cfg = DistillConfig.from_dict({"lr": np.float64(0.1), "depth": np.int64(3), "epochs": 4.0})
    assert type(cfg.lr) is float and type(cfg.depth) is int and cfg.epochs == 4


def test_config_hierarchy():
    assert issubclass(TeacherConfig, TrainConfig) and issubclass(DistillConfig, TrainConfig)
