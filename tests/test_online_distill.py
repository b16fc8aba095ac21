"""Online distillation (DistillConfig.online_teacher) on digits, CPU, fp32: both models learn,
the teacher is trained by CE alone (the student's detached logits never reach it), a resumed
trial matches an uninterrupted one, and the config refuses contradictory settings."""
import pytest
import torch

from kdtune import models
from kdtune.search.input.preset_loader import load_preset
from kdtune.trainables import checkpoint, reporting
from kdtune.trainables.config import DistillConfig
from kdtune.trainables.distill import distill_student
from kdtune.trainables.online_teacher import OnlineTeacher
from kdtune.trainables.runtime import Runtime

# fp32 and a fixed seed: runs are bit-for-bit repeatable on one machine. Dropout in the
# student: a resume must restore the RNG stream, not only the two models' states.
ONLINE = {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.1, "precision": "fp32",
          "seed": 0, "num_threads": 1, "width": 32, "model_kwargs": {"dropout": 0.1}, "alpha": 0.5,
          "temperature": 4.0, "online_teacher": "mlp", "online_teacher_kwargs": {"width": 256}}
TEACHER_KEYS = ("teacher_train_loss", "teacher_val_loss", "teacher_val_acc")


@pytest.fixture(scope="module")
def full_run(bundle, tmp_path_factory):
    """An uninterrupted 2-epoch online run; its per-epoch checkpoints are kept."""
    root = str(tmp_path_factory.mktemp("online"))
    with reporting.local_session(root=root) as rec:
        distill_student(ONLINE, data=bundle)
    assert [r["epoch"] for r in rec.results] == [1, 2]
    return rec


def test_teacher_and_student_both_learn(full_run, bundle):
    last = full_run.results[-1]
    assert last["diverged"] == 0
    assert last["teacher_val_acc"] > 0.5 and last["val_acc"] > 0.5  # chance is 0.1
    assert 0.0 <= last["agreement"] <= 1.0
    student = models.create_model("mlp", bundle.num_classes, bundle.in_shape, width=32, dropout=0.1)
    assert last["params"] == models.count_params(student)  # the student's, not the pair's


def test_checkpoint_carries_the_trained_teacher(full_run):
    first, second = (checkpoint.load_payload(c) for c in full_run.checkpoints)  # weights_only
    t1, t2 = first["teacher_state"], second["teacher_state"]
    assert t2["model_spec"]["kwargs"]["width"] == 256 and t2["optimizer"] and t2["scheduler"]
    w1, w2 = t1["state_dict"], t2["state_dict"]
    changed = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    assert changed, "the online teacher's weights did not change between epochs"
    # model_spec / state_dict stay the student's: load_model rebuilds the student.
    student, _ = checkpoint.load_model(full_run.checkpoints[-1])
    assert student.kdtune_spec["kwargs"]["width"] == 32


def test_teacher_never_gets_gradients_from_the_student(full_run, bundle):
    # Same seed, alpha 0 (the student ignores the teacher): the teacher's trajectory is the
    # same bit for bit, so its updates come from its own CE only.
    with reporting.local_session() as rec:
        distill_student({**ONLINE, "alpha": 0.0}, data=bundle)
    for got, want in zip(rec.results, full_run.results):
        for key in TEACHER_KEYS:
            assert got[key] == want[key], (got["epoch"], key)
    assert rec.results[-1]["train_loss"] != full_run.results[-1]["train_loss"]  # alpha mattered


def test_train_logits_are_detached_and_step_the_teacher(bundle):
    cfg = DistillConfig.from_dict(ONLINE)
    torch.manual_seed(0)
    rt = Runtime(torch.device("cpu"), None, False, 1)
    teacher = OnlineTeacher.build(cfg, rt, bundle, steps_per_epoch=10)
    before = [p.detach().clone() for p in teacher.model.parameters()]
    x = torch.randn(8, *bundle.in_shape)
    y = torch.randint(0, bundle.num_classes, (8,))
    logits = teacher.train_logits(x, torch.arange(8), y)
    assert not logits.requires_grad and logits.grad_fn is None and logits.dtype == torch.float32
    assert any(not torch.equal(b, p) for b, p in zip(before, teacher.model.parameters()))


def test_resume_from_epoch_one_matches_uninterrupted_run(full_run, bundle):
    with reporting.local_session(resume_from=full_run.checkpoints[0]) as resumed:
        distill_student(ONLINE, data=bundle)
    assert [r["epoch"] for r in resumed.results] == [2]
    for key in ("train_loss", "train_acc", "val_acc", "val_loss", "agreement", "lr", *TEACHER_KEYS):
        assert resumed.results[0][key] == pytest.approx(full_run.results[1][key], abs=1e-6), key


def test_resume_refuses_a_checkpoint_of_the_other_kind(full_run, bundle):
    offline = {k: v for k, v in ONLINE.items() if not k.startswith("online_teacher")}
    with reporting.local_session(resume_from=full_run.checkpoints[0]):
        with pytest.raises(checkpoint.CheckpointError, match="online teacher"):
            distill_student(offline, data=bundle)  # the baseline: no teacher at all
    with reporting.local_session() as base:
        distill_student({**offline, "epochs": 1}, data=bundle)
        with reporting.local_session(resume_from=base.checkpoints[0]):
            with pytest.raises(checkpoint.CheckpointError, match="no online teacher state"):
                distill_student(ONLINE, data=bundle)


def test_bf16_channels_last_conv_teacher(bundle):
    # The teacher runs in the trial's precision and layout; its checkpoint is in the default one.
    config = {**ONLINE, "epochs": 1, "precision": "bf16", "channels_last": True,
              "online_teacher": "cifar_resnet", "online_teacher_kwargs": {"depth": 8, "width": 8}}
    with reporting.local_session() as rec:
        last = distill_student(config, data=bundle)
        state = checkpoint.load_payload(rec.checkpoints[0])["teacher_state"]
    assert last["diverged"] == 0 and last["teacher_val_acc"] > 0.3
    assert all(t.is_contiguous() for t in state["state_dict"].values())
    models.create_from_spec(state["model_spec"]).load_state_dict(state["state_dict"])


@pytest.mark.parametrize("bad,match", [
    ({"teacher_checkpoint": "t.pt"}, r"online_teacher and teacher_checkpoint are both set"),
    ({"online_teacher": "mlpp"}, r"unknown online_teacher 'mlpp' \(did you mean 'mlp'\?\)"),
    ({"online_teacher_kwargs": {"widht": 8}}, r"online_teacher_kwargs \['widht'\] are not options"),
    ({"online_teacher_kwargs": {"num_classes": 3}}, r"must not set \['num_classes'\]"),
    ({"online_teacher_kwargs": 3}, r"online_teacher_kwargs must be a mapping"),
    ({"teacher_logits": "cached"}, r"cannot be used with online_teacher"),
    ({"online_teacher": None}, r"online_teacher_kwargs is set but online_teacher is not"),
])
def test_config_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig.from_dict({**ONLINE, **bad})


def test_config_round_trip():
    cfg = DistillConfig.from_dict(ONLINE)
    assert cfg.to_dict()["online_teacher_kwargs"] == {"width": 256}
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    hash(cfg)
    assert DistillConfig().online_teacher is None and DistillConfig().online_teacher_kwargs == ()


def test_precomputed_teacher_logits_are_refused(bundle):
    with pytest.raises(ValueError, match="online_teacher"):
        distill_student(ONLINE, data=bundle, teacher_logits=torch.zeros(3, 10))


def test_preset_train_section_is_a_valid_online_config():
    preset = load_preset("online_distill")
    assert "teacher" not in preset
    cfg = DistillConfig.from_dict({"dataset": preset["dataset"], **preset["train"]})
    assert cfg.online_teacher == "mlp"
    assert cfg.online_teacher_kwargs_dict() == {"depth": 2, "width": 512}
