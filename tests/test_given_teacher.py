"""search/stages/adopted_teacher.py: a run that adopts --teacher-checkpoint shows that teacher's model,
size and accuracy on the run's own validation split, as a trained teacher's row does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdtune.datasets import DeviceLoader, create_dataset
from kdtune.search.stages import adopted_teacher as given_teacher
from kdtune.search.record.manifest import Manifest
from kdtune.search.record.summary import render
from kdtune.search.stages.teacher_cache import local_cache
from kdtune.trainables import checkpoint
from kdtune.trainables.reporting import local_session
from kdtune.trainables.teacher import train_teacher


@pytest.fixture(scope="module")
def adopted(tmp_path_factory):
    """A digits MLP teacher trained in-process (on the split the run below uses) and its file."""
    root = tmp_path_factory.mktemp("teacher")
    with local_session(root=str(root)) as rec:
        train_teacher({"dataset": "digits", "val_fraction": 0.2, "model": "mlp", "depth": 1, "width": 48,
                       "epochs": 2, "seed": 0})
    return str(Path(rec.checkpoints[-1]) / "checkpoint.pt")


def _val_accuracy_by_running_it(path: str, bundle) -> float:
    model, _ = checkpoint.load_model(path)
    model.eval()
    x = next(iter(DeviceLoader(bundle.val, batch_size=len(bundle.val), mean=bundle.mean, std=bundle.std)))[0]
    with torch.no_grad():
        return float((model(x.float()).argmax(1) == bundle.val.labels).float().mean())


def test_an_adopted_teacher_gets_its_model_size_and_this_runs_val_accuracy(tmp_path, adopted):
    bundle = create_dataset("digits", val_fraction=0.2, seed=0)
    m = Manifest.create(tmp_path, {}, bundle.meta())
    m.mark("teacher", "done", best_checkpoint=adopted, source="--teacher-checkpoint")
    given_teacher.describe(m, bundle, local_cache(bundle, adopted, precision="fp32"))

    stage = Manifest.load(tmp_path).stage("teacher")  # saved, not only in memory
    assert stage["config"] == {"model": "mlp", "depth": 1, "width": 48}
    model, _ = checkpoint.load_model(adopted)
    assert stage["metrics"]["params"] == sum(p.numel() for p in model.parameters()) == 64 * 48 + 48 + 48 * 10 + 10
    assert stage["metrics"]["val_acc"] == pytest.approx(_val_accuracy_by_running_it(adopted, bundle), abs=1e-6)
    text = render(Manifest.load(tmp_path))
    assert f"| teacher | mlp depth=1 width=48 | {100 * stage['metrics']['val_acc']:.2f}% | 3,610 |" in text


def test_a_trained_teacher_and_a_run_without_logits_are_left_as_they_are(tmp_path, adopted):
    bundle = create_dataset("digits", val_fraction=0.2, seed=0)
    trained = Manifest(tmp_path / "a", {"stages": {}})
    trained.mark("teacher", "done", best_checkpoint=adopted, config={"model": "x"}, metrics={"val_acc": 0.5})
    given_teacher.describe(trained, bundle, None)
    assert trained.stage("teacher")["metrics"] == {"val_acc": 0.5}  # its own trial's figures stay
    no_cache = Manifest(tmp_path / "b", {"stages": {}})
    no_cache.mark("teacher", "done", best_checkpoint=adopted, source="--teacher-checkpoint")
    given_teacher.describe(no_cache, bundle, None)
    assert no_cache.stage("teacher")["metrics"] == {"params": 3610}  # no val logits: no accuracy claimed
    sweep = Manifest(tmp_path / "c", {"stages": {"sweep": {}}})
    given_teacher.describe(sweep, bundle, None)
    assert sweep.data["stages"] == {"sweep": {}}  # a run without a teacher gets no teacher row
