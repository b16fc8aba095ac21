"""The paper-protocol runner of experiments/hinton2015/accuracy_anchor.py --protocol hinton
(experiments/hinton2015/protocol.py): all training images, last epoch, resumable after a kill.
On the offline digits set with tiny models; the real run is a benchmark."""
from __future__ import annotations

import json
import shutil

import pytest

from experiments.hinton2015 import accuracy_anchor
from experiments.hinton2015 import protocol as hinton_protocol

from kdtune.trainables import reporting
from kdtune.trainables.teacher import train_teacher

CFG = {"dataset": "digits", "model": "mlp", "depth": 1, "width": 16, "epochs": 3, "lr": 0.05,
       "precision": "fp32", "augment": "jitter", "model_kwargs": {"input_dropout": 0.2}}


def test_full_train_bundle_folds_validation_into_training(bundle):
    full = hinton_protocol.full_train_bundle(bundle)
    assert len(full.train) == len(bundle.train) + len(bundle.val)
    assert full.test is bundle.test and full.val is bundle.val


def test_a_killed_run_resumes_and_counts_each_epoch_once(bundle, tmp_path, monkeypatch):
    folder = tmp_path / "teacher"
    real = reporting.LocalSession.record

    def killed_after_two(self, metrics, checkpoint_dir):
        real(self, metrics, checkpoint_dir)
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt  # the shell's cut, after epoch 2 was checkpointed

    monkeypatch.setattr(reporting.LocalSession, "record", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
    assert not (folder / "result.json").exists()
    assert len(list((folder / "part000").glob("checkpoint_*"))) == 1  # keep_last=1
    monkeypatch.setattr(reporting.LocalSession, "record", real)

    result = hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
    lines = [json.loads(x)["epoch"] for x in (folder / "epochs.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3]  # the second part ran epoch 3 only
    assert result["epochs"] == 3 and 0 <= result["errors"] <= len(bundle.test)
    with reporting.local_session() as rec:  # an uninterrupted run ends at the same weights
        straight = train_teacher(CFG, data=bundle)
    assert result["last_train_acc"] == pytest.approx(straight["train_acc"], abs=1e-6)
    # a finished run is read back, not retrained
    assert hinton_protocol.run_resumable(None, CFG, bundle, folder) == result


def test_a_folder_refuses_to_resume_under_another_config(bundle, tmp_path):
    folder = tmp_path / "teacher"
    hinton_protocol.check_same_config(folder, CFG)
    hinton_protocol.check_same_config(folder, dict(CFG))  # the same run again: fine
    # how the run is scheduled and where its files are read from are not what it trains
    hinton_protocol.check_same_config(folder, {**CFG, "num_threads": 7, "data_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(SystemExit, match=r"started with another config \(lr differ\)"):
        hinton_protocol.run_resumable(train_teacher, {**CFG, "lr": 123.0}, bundle, folder)


def test_the_protocol_students_stay_unjittered_under_a_jittered_search():
    """With `--augment jitter:2` the hinton_mnist search's students train on jittered fixed views;
    the paper's 2x800 students must not inherit that (no jitter, no views: one row per image)."""
    import dataclasses

    from kdtune.search.input.cli import parse_args
    from kdtune.trainables.config import DistillConfig, TrainConfig

    spec, _ = parse_args(["--preset", "hinton_mnist", "--augment", "jitter:2"])
    spec = dataclasses.replace(spec, augment_views=spec.max_epochs)  # as preflight fills it in
    assert spec.student_constants(None)["augment"] == "jitter"
    cfg = hinton_protocol.configs(spec, 0, None, 60, 0.9, 20.0, 0.05, 1, kd_lr=0.01)
    for role in ("student", "kd"):
        assert cfg[role]["augment"] == "none"
        assert "augment_pixels" not in cfg[role] and "augment_views" not in cfg[role]
        DistillConfig.from_dict(cfg[role])
    assert cfg["kd"]["alpha"] == 0.9 and cfg["kd"]["lr"] == 0.01 and cfg["student"]["alpha"] == 0.0
    assert cfg["teacher"]["augment"] == "jitter"  # the teacher keeps its own
    assert cfg["teacher"]["lr"] == spec.teacher_config()["lr"]
    levers = {"lr": 0.05, "max_norm": 2.0, "dropout": 0.3}
    other = hinton_protocol.configs(spec, 0, None, 60, 0.9, 20.0, 0.05, 1, teacher_levers=levers)["teacher"]
    assert (other["lr"], other["max_norm"]) == (0.05, 2.0)
    # the hidden dropout replaced, the preset's input dropout kept; the students untouched
    assert other["model_kwargs"] == {**cfg["teacher"]["model_kwargs"], "dropout": 0.3}
    assert other["model_kwargs"]["input_dropout"] == 0.2
    assert {k: v for k, v in other.items() if k not in ("lr", "max_norm", "model_kwargs")} == \
        {k: v for k, v in cfg["teacher"].items() if k not in ("lr", "max_norm", "model_kwargs")}
    TrainConfig.from_dict(other)


class _Untouchable:
    """A split whose size may be asked (the bundle's metadata records it) but whose images and
    labels fail the test when anything reads them."""

    def __init__(self, n: int):
        self.n = n

    def __getattr__(self, name):
        raise AssertionError(f"the held-out protocol read the test split ({name})")

    def __len__(self):
        return self.n


def _protocol_args(**over):
    import argparse

    base = dict(holdout=True, teacher_epochs=1, teacher_lr=None, teacher_max_norm=None,
                teacher_dropout=None, teacher_input_dropout=None, epochs=1, student_lr=0.05,
                kd_lr=0.01, temperature=20.0, alpha=0.9, seeds=[0], threads=1, pixels=None,
                kd_batch_size=None, kd_precision=None, student_views=None)
    return argparse.Namespace(**{**base, **over})


def test_holdout_trains_on_the_train_split_counts_val_and_never_reads_test(bundle, tmp_path, monkeypatch,
                                                                           capsys):
    """`--holdout`: every model (the teacher too) trains on the train split and is counted on the
    val images; the test split is never read. A second call with another temperature trains only
    its own KD student, beside the teacher and the undistilled student it shares."""
    import dataclasses

    from kdtune.search.input.cli import parse_args

    spec, _ = parse_args(["--preset", "hinton_mnist", "--dataset", "digits"])  # its models, on digits
    data = dataclasses.replace(bundle, test=_Untouchable(len(bundle.test)))
    hinton_protocol.main(_protocol_args(), spec, data, tmp_path)
    seed = tmp_path / "holdout" / "seed0"
    # a 1-epoch teacher is not the preset's (100 epochs): its KD students name it
    assert sorted(p.name for p in seed.iterdir()) == ["kd-e1-lr0.01-T20-a0.9-of-teacher-e1",
                                                      "student-e1-lr0.05", "teacher-e1"]
    for run in seed.iterdir():
        result = json.loads((run / "result.json").read_text())
        assert result["split"] == "val" and result["images"] == len(bundle.val)
        assert 0 <= result["errors"] <= len(bundle.val)
        first = json.loads((run / "epochs.jsonl").read_text().splitlines()[0])
        assert first["images_per_s"] > 0
    out = capsys.readouterr().out
    assert f"{len(bundle.train)} training images, {len(bundle.val)} val images" in out
    assert f"val errors /{len(bundle.val):,}" in out and "per 10,000: teacher" in out

    from kdtune.trainables import teacher

    def no_retraining(*a, **k):
        raise AssertionError("the shared teacher was trained again")

    monkeypatch.setattr(teacher, "train_teacher", no_retraining)
    # another temperature, and another thread count (which is not part of what a run trains)
    hinton_protocol.main(_protocol_args(temperature=8.0, threads=2), spec, data, tmp_path)
    assert (seed / "kd-e1-lr0.01-T8-a0.9-of-teacher-e1" / "result.json").is_file()
    assert len(list(seed.iterdir())) == 4
    # the distilled student's batch size: its own run, on the same teacher
    hinton_protocol.main(_protocol_args(kd_batch_size=16), spec, data, tmp_path)
    assert "KD batch 16" in capsys.readouterr().out
    kd16 = seed / "kd-e1-lr0.01-b16-T20-a0.9-of-teacher-e1"
    assert json.loads((kd16 / "config.json").read_text())["batch_size"] == 16
    shutil.rmtree(kd16)
    # the distilled student's precision: its config, its folder, and its cached teacher logits
    from kdtune.search.stages import teacher_cache

    caches = []  # (precision, views, the pixels' augmentation) of each cached teacher's logits
    real_cache = teacher_cache.local_cache

    def recording_cache(views_of, *a, **k):
        caches.append((k.get("precision"), k.get("views"), views_of.augment))
        return real_cache(views_of, *a, **k)

    monkeypatch.setattr(teacher_cache, "local_cache", recording_cache)
    hinton_protocol.main(_protocol_args(kd_precision="fp32"), spec, data, tmp_path)
    assert "KD precision fp32" in capsys.readouterr().out and caches == [("fp32", None, "none")]
    kd32 = seed / "kd-e1-lr0.01-fp32-T20-a0.9-of-teacher-e1"
    assert json.loads((kd32 / "config.json").read_text())["precision"] == "fp32"
    assert "precision" not in json.loads((seed / "student-e1-lr0.05" / "config.json").read_text())
    shutil.rmtree(kd32)
    # jittered students (not the paper's): both 2x800s on K fixed views, the KD one against the
    # teacher's logits of those views, each in its own folder; --levers pairs jittered with jittered
    hinton_protocol.main(_protocol_args(student_views=2), spec, data, tmp_path)
    assert "both on 2 fixed jittered views, NOT the paper's protocol" in capsys.readouterr().out
    assert caches[-1] == ("auto", 2, "jitter")
    jittered = [seed / "student-e1-lr0.05-j2v2", seed / "kd-e1-lr0.01-j2v2-T20-a0.9-of-teacher-e1"]
    for run in jittered:
        cfg = json.loads((run / "config.json").read_text())
        assert (cfg["augment"], cfg["augment_pixels"], cfg["augment_views"]) == ("jitter", 2, 2)
    ratios = {r[0]: r[6] for r in hinton_protocol.lever_rows(tmp_path / "holdout")}
    errors = [json.loads((run / "result.json").read_text())["errors"] for run in jittered]
    assert ratios[jittered[1].name] == (f"{errors[1] / errors[0]:.2f}" if errors[0] else "-")
    for run in jittered:
        shutil.rmtree(run)  # the rows below count the four runs above

    # --levers: the four runs side by side, read back from their result.json files
    rows = hinton_protocol.lever_rows(tmp_path / "holdout")
    assert [r[0] for r in rows] == ["teacher-e1", "kd-e1-lr0.01-T20-a0.9-of-teacher-e1",
                                    "kd-e1-lr0.01-T8-a0.9-of-teacher-e1", "student-e1-lr0.05"]
    for run, split, seeds, per_seed, _, per10k, ratio, disagree, rmse, lost in rows:
        result = json.loads((seed / run / "result.json").read_text())
        errors = result["errors"]
        assert (split, seeds, per_seed) == ("val", "0", str(errors))
        if run.startswith("kd-"):  # how it copies its teacher, on the transfer set and on val
            fid = result["fidelity"]
            assert disagree == f"{fid['train']['disagree']} / {fid['val']['disagree']}"
            rel = [fid[p]["logit_rmse"] / fid[p]["teacher_logit_sd"] for p in ("train", "val")]
            assert rmse == f"{rel[0]:.1%} / {rel[1]:.1%}"
            v = fid["val"]
            at = f"{v['lost']:.1f} at margin {v['lost_teacher_margin']:.2f}" if v["lost"] else "0"
            assert lost == f"{at} (all {v['teacher_margin']:.1f})"
            assert fid["val"]["student_errors"] == errors
            assert fid["val"]["teacher_errors"] == json.loads(
                (seed / "teacher-e1" / "result.json").read_text())["errors"]
            assert 0 <= fid["train"]["disagree"] <= len(data.train)
        else:
            assert "fidelity" not in result and disagree == rmse == lost == "-"
        assert float(per10k) == pytest.approx(errors * 10_000 / len(bundle.val), abs=0.05)
    student = json.loads((seed / "student-e1-lr0.05" / "result.json").read_text())["errors"]
    kd = json.loads((seed / "kd-e1-lr0.01-T8-a0.9-of-teacher-e1" / "result.json").read_text())["errors"]
    assert rows[2][6] == (f"{kd / student:.2f}" if student else "-")
    assert rows[0][6] == rows[3][6] == "-"

    # a teacher lever: its own teacher and KD student, beside the undistilled student it shares
    monkeypatch.undo()
    hinton_protocol.main(_protocol_args(teacher_max_norm=2.0, teacher_dropout=0.3), spec, data, tmp_path)
    assert "max_norm 2*, dropout 0.3*, input_dropout 0.2" in capsys.readouterr().out
    mn2 = json.loads((seed / "teacher-e1-mn2-do0.3" / "config.json").read_text())
    assert mn2["max_norm"] == 2.0 and mn2["model_kwargs"]["dropout"] == 0.3
    kd_mn2 = json.loads((seed / "kd-e1-lr0.01-T20-a0.9-of-teacher-e1-mn2-do0.3" / "config.json").read_text())
    assert "teacher-e1-mn2-do0.3" in kd_mn2["teacher_checkpoint"]
    assert len((seed / "student-e1-lr0.05" / "epochs.jsonl").read_text().splitlines()) == 1  # not retrained
    assert len(list(seed.iterdir())) == 6


def test_copy_fidelity_of_a_model_with_itself_is_exact_and_counts_its_errors(bundle, tmp_path):
    from experiments.hinton2015 import model_errors
    from experiments.hinton2015.model_errors import copy_fidelity, count_test_errors

    result = hinton_protocol.run_resumable(train_teacher, CFG, bundle, tmp_path / "teacher")
    fid = copy_fidelity(result["checkpoint"], result["checkpoint"], bundle, ("train", "test"))
    for split in ("train", "test"):
        errors, _ = count_test_errors(result["checkpoint"], bundle, split)
        logits, _ = model_errors.split_logits(result["checkpoint"], bundle, split)
        sd = (logits - logits.mean(1, keepdim=True)).pow(2).mean().sqrt().item()
        top2 = logits.topk(2, dim=1).values
        assert fid[split] == {"disagree": 0, "logit_rmse": 0.0, "teacher_errors": errors,
                              "student_errors": errors, "teacher_logit_sd": pytest.approx(sd, abs=1e-4),
                              "lost": 0, "lost_teacher_margin": None,
                              "teacher_margin": pytest.approx(float((top2[:, 0] - top2[:, 1]).quantile(0.5)), abs=1e-4)}
    assert fid["test"]["student_errors"] == result["errors"]


def test_copy_fidelity_counts_the_images_lost_to_the_teacher_at_the_teachers_margin(monkeypatch):
    """lost: the teacher right, the student wrong; the margins are the teacher's top-2 logit
    gaps, median over the lost images and over all."""
    import types

    from experiments.hinton2015 import model_errors
    import torch

    teacher = torch.tensor([[3.0, 0, 0], [0.0, 0.5, 0], [0, 0, 2.0], [4.0, 0, 0]])  # right on 0-2
    student = torch.tensor([[3.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 4.0, 0]])  # wrong on 1 and 2
    labels = torch.tensor([0, 1, 2, 1])
    bundle = types.SimpleNamespace(val=types.SimpleNamespace(labels=labels))
    monkeypatch.setattr(model_errors, "split_logits", lambda path, b, split: ({"t": teacher, "s": student}[path], 9))
    fid = model_errors.copy_fidelity("s", "t", bundle, ("val",))["val"]
    assert (fid["teacher_errors"], fid["student_errors"], fid["disagree"], fid["lost"]) == (1, 2, 3, 2)
    assert fid["lost_teacher_margin"] == pytest.approx(1.25)  # images 1 and 2: margins 0.5 and 2
    assert fid["teacher_margin"] == pytest.approx(2.5)  # of 3, 0.5, 2 and 4


def test_folder_names_carry_the_settings_a_call_can_change():
    cfg = {"epochs": 60, "lr": 0.01, "temperature": 20.0, "alpha": 0.9}
    assert hinton_protocol.folder_name("teacher", {"epochs": 200, "lr": 0.03}) == "teacher-e200"
    levers = {"dropout": 0.3, "max_norm": 2.0, "lr": 0.05}  # named in TEACHER_LEVERS' order
    assert hinton_protocol.folder_name("teacher", {"epochs": 100}, levers) == "teacher-e100-lr0.05-mn2-do0.3"
    assert hinton_protocol.kd_folder_name(cfg, "teacher-e100", "teacher-e100") == "kd-e60-lr0.01-T20-a0.9"
    assert (hinton_protocol.kd_folder_name(cfg, "teacher-e100-mn2", "teacher-e100")
            == "kd-e60-lr0.01-T20-a0.9-of-teacher-e100-mn2")
    assert hinton_protocol.folder_name("student", {**cfg, "lr": 0.05}) == "student-e60-lr0.05"
    assert hinton_protocol.folder_name("kd", cfg) == "kd-e60-lr0.01-T20-a0.9"
    # a batch size is named only where it is not the preset's, so older runs keep their names
    assert hinton_protocol.folder_name("kd", {**cfg, "batch_size": 128}, preset_batch=128) == "kd-e60-lr0.01-T20-a0.9"
    assert (hinton_protocol.kd_folder_name({**cfg, "batch_size": 32}, "teacher-e100", "teacher-e100", 128)
            == "kd-e60-lr0.01-b32-T20-a0.9")
    # a precision is named only where a call gave one (runs before the lever have none)
    assert hinton_protocol.folder_name("kd", {**cfg, "precision": "fp32"}) == "kd-e60-lr0.01-fp32-T20-a0.9"
    jitter = {"augment": "jitter", "augment_pixels": 2, "augment_views": 60}
    assert hinton_protocol.folder_name("kd", {**cfg, **jitter}) == "kd-e60-lr0.01-j2v60-T20-a0.9"


def test_kd_precision_enters_only_the_distilled_students_config():
    from kdtune.search.input.cli import parse_args

    spec, _ = parse_args(["--preset", "hinton_mnist", "--dataset", "digits"])
    kw = dict(teacher_epochs=None, student_epochs=1, alpha=0.9, temperature=20.0, student_lr=0.05, threads=1)
    given = hinton_protocol.configs(spec, 0, **kw, kd_precision="bf16")
    assert given["kd"]["precision"] == "bf16"
    assert "precision" not in given["student"] and "precision" not in given["teacher"]
    assert "precision" not in hinton_protocol.configs(spec, 0, **kw)["kd"]  # older runs' configs match


@pytest.mark.parametrize("argv, message", [
    (["--holdout"], "--holdout needs --protocol hinton"),
    (["--levers", "--storage-path", "x"], "--levers needs --protocol hinton"),
    (["--protocol", "hinton", "--levers"], "--levers needs --storage-path"),
    (["--teacher-max-norm", "2"], "--teacher-max-norm needs --protocol hinton"),
    (["--kd-lr", "0.01"], "--kd-lr needs --protocol hinton"),
    (["--pixels", "unit"], "--pixels needs --protocol hinton"),
    (["--kd-batch-size", "32"], "--kd-batch-size needs --protocol hinton"),
    (["--kd-precision", "fp32"], "--kd-precision needs --protocol hinton"),
    (["--student-views", "12"], "--student-views needs --protocol hinton"),
    (["--protocol", "hinton", "--student-views", "0"], "--student-views must be > 0, got 0"),
    (["--protocol", "hinton", "--levers", "--storage-path", "x", "--kd-precision", "fp32"],
     "--levers trains nothing: drop --kd-precision"),
    (["--protocol", "hinton", "--kd-batch-size", "0"], "--kd-batch-size must be > 0, got 0"),
    (["--protocol", "hinton", "--experiment", "x"], "--experiment is read by --protocol short only"),
    (["--protocol", "hinton", "--teacher-dropout", "1"], "--teacher-dropout must be in [0, 1), got 1.0"),
    (["--protocol", "hinton", "--teacher-max-norm", "0"], "--teacher-max-norm must be > 0, got 0.0"),
    (["--protocol", "hinton", "--levers", "--storage-path", "x", "--alpha", "0.5"],
     "--levers trains nothing: drop --alpha"),
])
def test_protocol_flags_are_refused_where_they_would_do_nothing(argv, message, capsys):

    with pytest.raises(SystemExit) as exc:
        accuracy_anchor.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_levers_on_an_empty_storage_path_says_so(tmp_path, capsys):

    with pytest.raises(SystemExit) as exc:
        accuracy_anchor.main(["--protocol", "hinton", "--levers", "--storage-path", str(tmp_path)])
    assert exc.value.code == 2
    assert f"no finished protocol runs under {tmp_path}" in capsys.readouterr().err


def test_a_second_process_on_the_same_run_is_stopped_before_it_trains(bundle, tmp_path):
    """Two processes on one seed of one storage path used to continue each other's checkpoints;
    the run's lock now stops the second at once, and the lock goes with its holder."""
    import fcntl

    folder = tmp_path / "teacher"
    hinton_protocol.check_same_config(folder, CFG)
    with open(folder / ".lock", "w") as holder:  # the first process, mid-training
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="is being trained by another process"):
            hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
        assert not list(folder.glob("part*"))  # it stopped before training anything
    # the holder is gone (as when a killed process's descriptors close): the run trains
    result = hinton_protocol.run_resumable(train_teacher, CFG, bundle, folder)
    assert result["epochs"] == CFG["epochs"]


def test_the_header_names_the_teachers_levers_and_what_a_dropped_pixel_becomes():
    from kdtune.search.input.cli import parse_args

    spec, _ = parse_args(["--preset", "hinton_mnist"])
    assert (hinton_protocol.describe_teacher(spec, {})
            == "lr 0.03, max_norm 3.5, dropout 0.5, input_dropout 0.2 (to mean)")
    assert (hinton_protocol.describe_teacher(spec, {"max_norm": 1.0, "input_dropout": 0.1})
            == "lr 0.03, max_norm 1*, dropout 0.5, input_dropout 0.1* (to mean)")
    assert hinton_protocol.describe_teacher(spec, {"input_dropout": 0.0}).endswith("input_dropout 0*")


def test_unit_pixels_feed_every_model_raw_pixels_in_their_own_folder(bundle, tmp_path, capsys):
    """`--pixels unit`: teacher, students and the cached teacher logits all see raw pixels in
    [0, 1] (each checkpoint records normalisation mean 0 / std 1), in <out>/unit/, beside the
    standardised runs of the same storage path; a dropped input pixel is then black."""
    import dataclasses

    from kdtune.search.input.cli import parse_args
    from kdtune.trainables import checkpoint

    spec, _ = parse_args(["--preset", "hinton_mnist", "--dataset", "digits"])
    data = dataclasses.replace(bundle, test=_Untouchable(len(bundle.test)))
    hinton_protocol.main(_protocol_args(pixels="unit"), spec, data, tmp_path)
    out = capsys.readouterr().out
    assert "inputs raw pixels in [0, 1]" in out and "input_dropout 0.2 (to black)" in out
    seed = tmp_path / "unit" / "holdout" / "seed0"
    assert sorted(p.name for p in seed.iterdir()) == ["kd-e1-lr0.01-T20-a0.9-of-teacher-e1",
                                                      "student-e1-lr0.05", "teacher-e1"]
    for run in seed.iterdir():
        result = json.loads((run / "result.json").read_text())
        _, payload = checkpoint.load_model(result["checkpoint"])
        assert (payload["dataset"]["mean"], payload["dataset"]["std"]) == ([0.0], [1.0])
    # the KD student's cache held the unit-pixel teacher's logits: copied, its top-1 agrees
    kd = json.loads((seed / "kd-e1-lr0.01-T20-a0.9-of-teacher-e1" / "result.json").read_text())
    assert kd["fidelity"]["val"]["teacher_errors"] == json.loads(
        (seed / "teacher-e1" / "result.json").read_text())["errors"]
    assert not (tmp_path / "holdout").exists()  # the standardised runs' folder is left alone
    unit = hinton_protocol.unit_pixels(bundle)
    assert (unit.mean, unit.std, unit.train) == ((0.0,), (1.0,), bundle.train)


def test_the_lost_column_averages_margins_over_the_seeds_that_lost_any():
    def fid(lost, margin, all_):
        part = {"disagree": 1, "logit_rmse": 0.1, "teacher_logit_sd": 1.0, "lost": lost,
                "lost_teacher_margin": margin, "teacher_margin": all_}
        return {"fidelity": {"train": part, "val": part}}

    two = {0: fid(3, 0.5, 10.0), 1: fid(0, None, 12.0)}
    assert hinton_protocol._copy_columns(two, [0, 1], "val")[2] == "1.5 at margin 0.50 (all 11.0)"
    none = {0: fid(0, None, 10.0)}  # no seed lost an image: no margin to average
    assert hinton_protocol._copy_columns(none, [0], "val")[2] == "0 (all 10.0)"
