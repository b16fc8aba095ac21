"""The pieces of Hinton et al.'s (2015) MNIST teacher: jittered inputs (datasets/augment.py),
input and hidden dropout on `mlp`, and the max-norm weight constraint (trainables/constraints.py).

Tiny tensors and the offline digits set only; the long paper-protocol run is a benchmark
(experiments/hinton2015/accuracy_anchor.py --protocol hinton), not a test.
"""
from __future__ import annotations

import pytest
import torch

from kdtune import datasets
from kdtune import models
from kdtune.datasets import DeviceLoader
from kdtune.datasets.augment import apply_params, draw_params
from kdtune.trainables import reporting
from kdtune.trainables.config import TeacherConfig
from kdtune.trainables.constraints import max_norm_constraint


def _shift_zero_fill(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C, H, W) moved down by dy and right by dx, vacated pixels zero: written without gather."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = img[:, ys, xs]
    return out


@pytest.mark.parametrize("pixels", [1, 2, 3])
def test_jitter_is_a_zero_filled_translation_of_at_most_pixels(pixels):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (400, 1, 8, 8), dtype=torch.uint8)  # no zeros: fill is visible
    params = draw_params("jitter", len(images), gen, pixels)
    out = apply_params("jitter", images, params, pixels)
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets, flips = params
    assert not flips.any()  # jitter never mirrors
    shifts = set()
    for i in range(len(images)):
        # crop offset o into the padded image = a shift of (pixels - o) pixels
        dy, dx = (pixels - offsets[i]).tolist()
        assert max(abs(dy), abs(dx)) <= pixels
        shifts.add((dy, dx))
        assert torch.equal(out[i], _shift_zero_fill(images[i], dy, dx))
    # every shift in [-pixels, pixels]^2 is drawn (400 draws over at most 49 outcomes)
    assert len(shifts) == (2 * pixels + 1) ** 2


def test_jitter_depends_only_on_the_seed_and_the_view():
    split = datasets.Split(torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8),
                           torch.zeros(64, dtype=torch.long))
    kw = dict(batch_size=16, mean=[0.5], std=[0.5], augment="jitter", shuffle=True)

    def epoch(seed, e, batch_size=16):
        loader = DeviceLoader(split, **{**kw, "batch_size": batch_size}, seed=seed)
        loader.set_epoch(e)
        xs, idx = zip(*[(x, i) for x, _, i in loader])
        x, i = torch.cat(xs), torch.cat(idx)
        return x[torch.argsort(i)]  # by image, whatever the order

    assert torch.equal(epoch(3, 1), epoch(3, 1))
    assert torch.equal(epoch(3, 1), epoch(3, 1, batch_size=7))  # per image, not per batch
    assert not torch.equal(epoch(3, 1), epoch(4, 1))
    assert not torch.equal(epoch(3, 1), epoch(3, 2))


def test_augment_config_is_checked():
    assert TeacherConfig(augment="jitter").augment_pixels is None
    with pytest.raises(ValueError, match="unknown augment 'jiter'.*did you mean 'jitter'"):
        TeacherConfig(augment="jiter")
    with pytest.raises(ValueError, match="augment_pixels is set but augment is not"):
        TeacherConfig(augment_pixels=2)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        TeacherConfig(max_norm=0.0)


def test_mlp_input_and_hidden_dropout():
    torch.manual_seed(0)
    model = models.create_model("mlp", 10, (1, 4, 4), width=32, depth=2, dropout=0.5, input_dropout=0.25)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert sorted(d.p for d in drops) == [0.25, 0.5, 0.5]
    x = torch.ones(2000, 1, 4, 4)
    model.train()
    dropped = model.input_drop(torch.flatten(x, 1))
    assert (dropped == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(dropped[dropped != 0], torch.tensor(1 / 0.75))  # inverted dropout scale
    model.eval()
    assert torch.equal(model(x[:3]), model(x[:3]))  # deterministic in eval
    with pytest.raises(ValueError, match="input_dropout must be in"):
        models.create_model("mlp", 10, (1, 4, 4), input_dropout=1.0)
    # an MLP without the new option keeps its old parameter count (2x1200 on MNIST)
    assert models.count_params(models.create_model("mlp", 10, (1, 28, 28), width=1200, depth=2)) == 2_395_210


def _first_layer_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the first hidden Linear of an mlp receives for `x` (after input dropout)."""
    seen = []
    handle = model.blocks[0].linear.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model(x)
    handle.remove()
    return seen[0]


def test_input_dropout_drops_pixels_to_the_fill_value():
    torch.manual_seed(0)
    black = -0.5  # a black pixel, standardised
    model = models.create_model("mlp", 10, (1, 4, 4), width=8, depth=1, input_dropout=0.25, input_fill=[black])
    model.train()
    # an all-black image is left as it is: dropping a black pixel changes nothing
    dark = torch.full((500, 1, 4, 4), black)
    assert torch.equal(_first_layer_input(model, dark), dark.flatten(1))
    # a bright pixel is dropped to black, or kept and scaled about black by 1 / (1 - p)
    seen = _first_layer_input(model, torch.ones(2000, 1, 4, 4))
    dropped = seen == black
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(seen[~dropped], torch.tensor(black + (1 - black) / 0.75))
    model.eval()  # the mean network: inputs untouched
    assert torch.equal(_first_layer_input(model, torch.ones(3, 1, 4, 4)), torch.ones(3, 16))
    # one fill per channel covers that channel's block of the channel-major flattened input
    rgb = models.create_model("mlp", 10, (3, 2, 2), width=8, depth=1, input_dropout=0.5, input_fill=[-1.0, -2.0, -3.0])
    assert torch.equal(rgb.input_fill, torch.tensor([-1.0] * 4 + [-2.0] * 4 + [-3.0] * 4))
    with pytest.raises(ValueError, match="one per channel"):
        models.create_model("mlp", 10, (3, 2, 2), input_dropout=0.5, input_fill=[-1.0, -2.0])
    with pytest.raises(ValueError, match="resolve_input_fill"):
        models.create_model("mlp", 10, (1, 4, 4), input_dropout=0.5, input_fill="black")


def test_resolve_input_fill_names_black_and_mean_for_the_data_normalisation():
    from kdtune.models.mlp import resolve_input_fill

    mean, std = (0.1307,), (0.3081,)
    black = [-0.1307 / 0.3081]
    assert resolve_input_fill("mlp", {"input_dropout": 0.2, "input_fill": "black"}, mean, std)["input_fill"] == black
    assert resolve_input_fill("mlp", {"input_dropout": 0.2, "input_fill": "mean"}, mean, std)["input_fill"] == [0.0]
    # input dropout without a fill drops to black, as Srivastava et al. dropped raw pixels
    assert resolve_input_fill("mlp", {"input_dropout": 0.2}, mean, std)["input_fill"] == black
    assert resolve_input_fill("mlp", {"width": 8}, mean, std) == {"width": 8}  # no input dropout: no fill
    assert resolve_input_fill("mlp", {"input_fill": 0.3}, mean, std) == {"input_fill": 0.3}  # numbers pass
    assert resolve_input_fill("cifar_resnet", {"depth": 8}, mean, std) == {"depth": 8}
    with pytest.raises(ValueError, match="input_fill must be"):
        resolve_input_fill("mlp", {"input_fill": "white"}, mean, std)
    with pytest.raises(ValueError, match="input_fill must be a number or one of"):
        TeacherConfig(model="mlp", model_kwargs={"input_dropout": 0.2, "input_fill": "white"})


def test_max_norm_projects_rows_onto_the_ball_and_leaves_others():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Conv2d(2, 3, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4, 0, 0, 0], [0.1, 0, 0, 0, 0],
                                            [0, 0, 6, 8, 0], [1, 1, 1, 1, 1]]))
        model[1].weight.mul_(10)
    before = model[0].weight.clone()
    apply = max_norm_constraint(model, 2.0)
    apply()
    # rows 0, 2, 3 of the Linear and every (x10) conv filter are held at the radius: 6 of 7
    assert apply.bound_fraction() == pytest.approx(6 / 7)
    norms = model[0].weight.norm(dim=1)
    assert torch.allclose(norms, torch.tensor([2.0, 0.1, 2.0, 2.0]))  # |row 3| = sqrt(5) > 2
    assert torch.equal(model[0].weight[1], before[1])  # inside the ball: untouched
    assert torch.allclose(model[0].weight[0], before[0] * 2 / 5)  # direction kept
    assert (model[1].weight.flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()
    assert max_norm_constraint(model, None) is None
    with torch.no_grad():  # every row now strictly inside: the constraint binds nowhere
        model[0].weight.mul_(0.5), model[1].weight.mul_(0.5)
    assert apply.bound_fraction() == 0.0


def test_a_jittered_max_norm_teacher_trains_with_every_row_in_the_ball(bundle):
    from kdtune.trainables.teacher import train_teacher

    cfg = {"dataset": "digits", "model": "mlp", "depth": 2, "width": 32, "epochs": 2, "lr": 0.5,
           "augment": "jitter", "augment_pixels": 1, "max_norm": 0.5,
           "model_kwargs": {"dropout": 0.5, "input_dropout": 0.2}, "precision": "fp32"}
    with reporting.local_session() as rec:
        metrics = train_teacher(cfg, data=bundle)
        from kdtune.trainables import checkpoint

        at_bound = [r["max_norm/at_bound"] for r in rec.results]

        model, payload = checkpoint.load_model(rec.checkpoints[-1])
    assert metrics["val_acc"] > 0.3 and not metrics["diverged"]
    assert payload["dataset"]["augment"] == "jitter" and payload["dataset"]["augment_pixels"] == 1
    # the trial dropped pixels to black, the data's own -mean/std, and its checkpoint says so
    assert payload["model_spec"]["kwargs"]["input_fill"] == pytest.approx([-m / s for m, s in zip(bundle.mean, bundle.std)])
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            assert (m.weight.norm(dim=1) <= 0.5 + 1e-4).all()
    # each epoch reports the share of rows held at the radius, read off the final weights here
    rows = torch.cat([m.weight.norm(dim=1) for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert 0 < at_bound[-1] <= 1 and at_bound[-1] == pytest.approx(float((rows >= 0.5 * 0.999).float().mean()))
    # the same trial without the constraint leaves some row outside the ball at this lr
    with reporting.local_session() as rec:
        train_teacher({**cfg, "max_norm": None}, data=bundle)
        free, _ = checkpoint.load_model(rec.checkpoints[-1])
    assert "max_norm/at_bound" not in rec.results[-1]  # no constraint, no figure
    assert max(m.weight.norm(dim=1).max().item() for m in free.modules()
               if isinstance(m, torch.nn.Linear)) > 0.5


@pytest.mark.parametrize("pixels", [None, 3])
def test_jittered_students_through_the_view_cache_train_like_the_online_teacher(bundle, pixels):
    """Students given `augment: jitter` and fixed views read the teacher's logits from a cache
    that is exact: the same metrics as running the teacher on every jittered batch, at the
    default shift and at another (the cache's views shift by the students' augment_pixels)."""
    from kdtune.search.stages.teacher_cache import local_cache
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.teacher import train_teacher

    base = {"dataset": "digits", "model": "mlp", "depth": 1, "width": 24, "precision": "fp32", "seed": 2}
    with reporting.local_session() as rec:
        train_teacher({**base, "width": 64, "epochs": 1}, data=bundle)
        teacher = rec.checkpoints[-1]
        student = {**base, "epochs": 2, "augment": "jitter", "augment_pixels": pixels, "augment_views": 2,
                   "alpha": 0.7, "temperature": 3.0, "teacher_checkpoint": teacher}
        online = distill_student({**student, "teacher_logits": "online"}, data=bundle)
        jittered = bundle.with_augment("jitter", pixels)
        shared = local_cache(jittered, teacher, views=2, seed=2, precision="fp32")
        assert (shared.views, shared.rows_per_view, shared.num_classes) == (2, len(bundle.train), 10)
        cached = distill_student(student, data=bundle, teacher_logits=shared)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "agreement"):
        assert cached[key] == pytest.approx(online[key], abs=1e-4), key


def test_cli_sets_teacher_and_student_augmentation():
    from kdtune.search.input.cli import parse_args

    spec, _ = parse_args(["--preset", "hinton_mnist"])
    teacher = spec.teacher_config()
    assert (teacher["augment"], teacher["augment_pixels"], teacher["max_norm"]) == ("jitter", 2, 3.5)
    # The searched students jitter too (the paper's 2x800 students do not: test_hinton_protocol).
    assert (spec.train["augment"], spec.train["augment_pixels"]) == ("jitter", 2)
    TeacherConfig.from_dict(teacher)  # every preset key is a real config field
    spec, _ = parse_args(["--dataset", "mnist", "--teacher-augment", "jitter:3", "--augment", "none"])
    assert spec.teacher_config()["augment_pixels"] == 3 and spec.train["augment"] == "none"
