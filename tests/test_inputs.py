"""Inputs honoured rather than refused: what each one does, measured against an independent
account (the refusals themselves are in test_cli_errors.py)."""
import logging
import socket
from pathlib import Path

import optuna
import pytest
import ray
import torch
from torch import nn

from kdtune import datasets
from kdtune import models
from kdtune.datasets.split_identity import val_images_seen
from kdtune.datasets.splits import STREAM_VAL, holdout_size, stratified_holdout
from kdtune.search.tune import search_spaces as spaces
from kdtune.search.input.cli import parse_args
from kdtune.search.run_kd_search import main
from kdtune.search.input.validate import preflight
from tests import fakedata
from kdtune.trainables import reporting
from kdtune.trainables.checkpoint import load_payload, save_checkpoint
from kdtune.trainables.teacher_logits import for_inference


# ------------------------------------------------------------------ CPU threads
class _FakeContext:
    def __init__(self, cpus):
        self.cpus = cpus

    def get_trial_resources(self):
        return type("R", (), {"required_resources": {"CPU": self.cpus}})()


@pytest.mark.parametrize("cpus, threads", [(0.5, 1), (0.25, 1), (1, 1), (2.5, 2), (4, 4)])
def test_trial_threads_are_the_whole_cpus_reserved(cpus, threads, monkeypatch):
    from ray import tune

    monkeypatch.setattr(reporting, "in_tune", lambda: True)
    monkeypatch.setattr(tune, "get_context", lambda: _FakeContext(cpus))
    assert reporting.trial_cpus() == threads


# ------------------------------------------------------------------ linear probe
def test_frozen_backbone_keeps_batchnorm_statistics_and_trains_only_fc():
    torch.manual_seed(0)
    model = models.create_model("resnet18", num_classes=4, in_shape=(3, 8, 8), freeze_backbone=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8) * 3 + 1), torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before), "BN statistics drifted"
    assert model.training and model.fc.training and not model.layer1.training and not model.bn1.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    # Without the freeze the same forward does move the statistics (the check above can fail).
    model.frozen_backbone = False
    model.train()
    stats = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 8, 8) * 3 + 1)
    assert not torch.equal(stats, model.bn1.running_mean)


# ------------------------------------------------------------------ fx fallback
class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_untraceable_teacher_falls_back_with_a_logged_reason(caplog):
    teacher = _Branchy()
    with caplog.at_level(logging.WARNING, logger="kdtune.trainables.teacher_logits"):
        folded = for_inference(teacher)
    x = torch.ones(2, 4)
    assert torch.equal(folded(x), teacher(x))
    (record,) = [r for r in caplog.records if "cannot be traced by torch.fx" in r.getMessage()]
    assert "_Branchy" in record.getMessage() and "TraceError" in record.getMessage()


# ------------------------------------------------------------------ split identity
def test_checkpoint_records_its_split(tmp_path):
    bundle = datasets.create_dataset("digits", val_fraction=0.2, seed=3, subset=500)
    model = models.create_model("mlp", 10, bundle.in_shape, depth=1, width=8)
    save_checkpoint(tmp_path, model=model, dataset_meta=bundle.meta(), config={}, epoch=1, metrics={})
    split = load_payload(tmp_path)["split"]
    assert {k: split[k] for k in ("dataset", "seed", "val_fraction", "subset")} == \
        {"dataset": "digits", "seed": 3, "val_fraction": 0.2, "subset": 500}
    assert split["pool"] == len(bundle.pool_labels) == 1797 - 359  # digits minus its carved test split and len(split["val_indices_sha256"]) == 16


def test_val_images_seen_is_the_exact_overlap(bundle):
    pool = datasets.create_dataset("digits", val_fraction=0.2, seed=0)
    labels, n_val = pool.pool_labels, holdout_size(len(pool.pool_labels), 0.2)
    ours = set(stratified_holdout(labels, n_val, 0, STREAM_VAL)[1].tolist())
    theirs_val = set(stratified_holdout(labels, n_val, 1, STREAM_VAL)[1].tolist())
    expected = len(ours - theirs_val)  # their training rows are the pool minus their val rows
    other = datasets.create_dataset("digits", val_fraction=0.2, seed=1)
    assert val_images_seen(other.split, pool) == expected == 221
    # A subset of the same split trains on none of our val rows; a foreign pool cannot be compared.
    assert val_images_seen(datasets.create_dataset("digits", val_fraction=0.2, seed=0, subset=300).split, pool) == 0
    assert val_images_seen({**other.split, "pool": 999}, pool) is None


def test_old_checkpoint_without_a_split_record_is_one_warning(tmp_path, capsys):
    bundle = datasets.create_dataset("digits", val_fraction=0.2, seed=0)
    meta = {k: v for k, v in bundle.meta().items() if k != "split"}  # as written before the record
    model = models.create_model("mlp", 10, bundle.in_shape, depth=1, width=8)
    save_checkpoint(tmp_path / "old", model=model, dataset_meta=meta, config={}, epoch=1, metrics={})
    spec, _ = parse_args(["--teacher-checkpoint", str(tmp_path / "old"), "--storage-path", str(tmp_path / "s")])
    preflight(spec)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records no data split" in err[0] and "288 validation images" in err[0]


# ------------------------------------------------------------------ resources
def test_preset_gpu_request_zeroed_on_a_cpu_machine_says_so(capsys):
    spec, _ = parse_args(["--preset", "cifar10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert spec.gpus_per_trial == 0
    assert len(err) == 1 and "asks 0.25 GPU per trial but this machine has none" in err[0]
    parse_args(["--preset", "cifar10", "--gpus-per-trial", "0"])
    assert capsys.readouterr().err == ""


def test_resume_takes_the_flags_that_do_not_change_the_search():
    _, args = parse_args(["--resume", "--name", "r", "--address", "auto", "--max-failures", "5"])
    assert args.max_failures == 5 and args.address == "auto"


# ------------------------------------------------------------------ per-family sizes
def test_depth_and_width_per_family_bound_each_family_alone():
    spec, _ = parse_args(["--students", "mlp,cifar_resnet", "--depth", "mlp=1:3,cifar_resnet=8:20",
                          "--width", "mlp=16:32"])
    assert spec.space["depth"] == {"mlp": (1, 3), "cifar_resnet": (8, 20)}
    assert spec.space["width"]["mlp"] == (16, 32)
    define = spaces.make_space(spec.space, spec.students, {}, distill=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"mlp": set(), "cifar_resnet": set()}
    for _ in range(40):
        trial = study.ask()
        define(trial)
        family, depth = trial.params["model"], trial.params["depth"]
        seen[family].add(depth)
        if family == "mlp":
            assert 16 <= trial.params["width"] <= 32
    assert seen["mlp"] <= {1, 2, 3} and seen["cifar_resnet"] <= {8, 14, 20}
    assert seen["mlp"] and seen["cifar_resnet"]


# ------------------------------------------------------------------ image_folder
def test_image_folder_has_its_own_preset_and_image_size(tmp_path):
    fakedata.write_image_folder(tmp_path / "imgs", ["a", "b"], n_per_class=12)
    spec, _ = parse_args(["--dataset", "image_folder", "--data-dir", str(tmp_path / "imgs"), "--image-size", "16",
                          "--storage-path", str(tmp_path / "s")])
    assert spec.preset == "image_folder" and spec.image_size == 16
    spec, bundle = preflight(spec)
    assert bundle.in_shape == (3, 16, 16)
    assert spec.teacher_config()["image_size"] == 16  # trials decoding the data themselves resize alike


# ------------------------------------------------------------------ download
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("dataset, folder, files", [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte[.gz]"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
])
def test_download_without_network_is_one_line_and_leaves_nothing(dataset, folder, files, tmp_path, capsys,
                                                                 monkeypatch):
    _no_network(monkeypatch)
    data, storage = tmp_path / "fresh", tmp_path / "storage"
    # (--gpus-per-trial 0: the cifar10 preset's GPU request would add its own warning line)
    assert main(["--dataset", dataset, "--data-dir", str(data), "--storage-path", str(storage),
                 "--gpus-per-trial", "0"]) == 2
    out, err = capsys.readouterr()
    assert f"downloading {datasets.download.DOWNLOAD_MB[dataset]:g} MB into {data / folder}" in out
    (line,) = err.strip().splitlines()
    assert f"cannot download {dataset} into {data / folder}" in line
    assert files in line and "--data-dir" in line and "--no-download" in line
    assert not data.exists(), "a failed download left folders behind"
    assert not storage.exists() and not ray.is_initialized()


def test_missing_files_are_fetched_by_default(tmp_path, monkeypatch, capsys):
    """The fetch path end to end up to the decoded bundle, with torchvision's downloader
    replaced by one that writes the files (no network here)."""
    import torchvision.datasets.mnist as tv_mnist

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, md5))
        if not (Path(download_root) / "train-images-idx3-ubyte.gz").exists():
            fakedata.write_mnist(Path(download_root).parents[1], n_train=60, n_test=20)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    spec, _ = parse_args(["--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--storage-path", str(tmp_path)])
    _, bundle = preflight(spec)
    assert len(bundle.train) + len(bundle.val) == 60 and len(bundle.test) == 20
    assert calls and all(md5 for _, md5 in calls), "torchvision's md5 check must stay on"
    assert "downloading 11.6 MB" in capsys.readouterr().out


# ------------------------------------------------------------------ errors
def test_read_only_storage_is_the_one_line_refusal(tmp_path, capsys, monkeypatch):
    """A read-only mount refuses mkdir with EROFS whatever the permission bits say (and the
    tests run as root, whom permission bits never stop): the refusal comes from the attempt."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert main(["--storage-path", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is not writable" in line and not (tmp_path / "runs").exists()


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    """Only UsageError becomes exit 2: a ValueError from a bug propagates."""
    from kdtune.search.input import validate

    def buggy(spec, name_given=True):
        raise ValueError("an internal bug")

    monkeypatch.setattr(validate, "preflight", buggy)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["--storage-path", "unused"])
