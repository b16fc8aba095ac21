"""Hinton, Vinyals & Dean (2015), section 3, run as the paper ran it: `--protocol hinton` of
accuracy_anchor.py.

Three models per seed, all trained on the 60,000 MNIST training images (the validation split
is folded back into training, as in the paper, so nothing is held out and nothing is
selected: each model is taken at its LAST epoch, and the 10,000 test images are evaluated
once, at the end):
- teacher: the `hinton_mnist` preset's teacher (2x1200 ReLU, dropout 0.2 on inputs and 0.5
  on hidden units, max-norm weights, inputs jittered by up to 2 pixels);
- student 2x800, no KD: no regularisation at all (no dropout, no weight decay, no jitter);
- student 2x800, KD: the same net with the soft-target term at T = 20 (the paper's), alpha the
  weight of that term.

Each (seed, model) run lives in <out>/seed<S>/<model>-<its settings>/ (teacher-e200,
student-e60-lr0.05, kd-e60-lr0.01-T20-a0.9): a killed run resumes from its last checkpoint
(only that one is kept: a 2x1200 checkpoint with momentum is ~19 MB), a finished one is read
back from its result.json, and a call that changes only the KD student's settings trains only
that student, beside the teacher it shares. So the protocol runs in pieces, and levers are
compared on one set of teachers:

    python -m experiments.hinton2015.accuracy_anchor --protocol hinton --storage-path runs/hinton
    python -m experiments.hinton2015.accuracy_anchor --protocol hinton --storage-path runs/hinton  # continues
    python -m experiments.hinton2015.accuracy_anchor --protocol hinton --storage-path runs/hinton --temperature 8

Choosing a lever by its test errors selects on the test set. `--holdout` is the protocol for
choosing: every model trains on the 54,000 images of the train split only and is counted on
the 6,000 validation images (teachers included, so they never saw those images), in
<out>/holdout/; the test set is not read. A lever chosen there is then run once on the paper's
protocol.

Levers beside the teacher's (--teacher-*): the distilled student's --kd-lr, --kd-batch-size,
--kd-precision (fp32 or bf16, for it and its cached teacher logits), --temperature, --alpha and
--epochs, each named in its run's folder; --pixels unit runs every model on raw pixels in [0, 1]
instead of standardised ones, under <out>/unit/; --student-views K puts both 2x800s on K fixed
jittered views (a deviation from the paper, named in their folders).
Each KD run records how it copies its teacher (copy_fidelity in model_errors.py), and --levers
tabulates a storage path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import re
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import mean_sd
from experiments.hinton2015.model_errors import copy_fidelity, count_test_errors

PAPER = {"teacher 2x1200": 67, "student 2x800, no KD": 146, "student 2x800, KD": 74}
ROLES = {"teacher 2x1200": "teacher", "student 2x800, no KD": "student", "student 2x800, KD": "kd"}


def full_train_bundle(bundle):
    """All training images in `train` (train + val); `val` stays, for progress only: it is
    no longer held out, so its accuracy is a training figure and picks nothing."""
    from kdtune.datasets.bundle import Split

    train = Split(torch.cat([bundle.train.images, bundle.val.images]),
                  torch.cat([bundle.train.labels, bundle.val.labels]))
    return dataclasses.replace(bundle, train=train)


def unit_pixels(bundle):
    """The bundle with its inputs left as raw pixels in [0, 1] (normalised by mean 0, std 1), not
    standardised: every model of a protocol call sees them, so teacher, students and the cached
    teacher logits agree, and each checkpoint records mean 0 / std 1 as its normalisation. With
    standardised inputs a background pixel is -0.42, not 0, so the first layer's weights on
    pixels that are never inked in training still learn (as extra biases); on raw pixels they
    keep their initial values (measured in experiments/hinton2015/README.md: not a lever)."""
    channels = bundle.in_shape[0]
    return dataclasses.replace(bundle, mean=(0.0,) * channels, std=(1.0,) * channels)


def runs_root(storage: Path, pixels: str | None, holdout: bool) -> Path:
    """Where a protocol call's seed<S>/ folders live: <storage>[/unit][/holdout]."""
    return storage / ("unit" if pixels == "unit" else "") / ("holdout" if holdout else "")


# The teacher's levers a protocol call can set (--teacher-lr, --teacher-max-norm, --teacher-dropout,
# --teacher-input-dropout), each with the tag it puts in the teacher's folder name.
TEACHER_LEVERS = {"lr": "lr", "max_norm": "mn", "dropout": "do", "input_dropout": "ido"}
MODEL_KWARGS = frozenset({"dropout", "input_dropout"})  # FlexibleMLP's, not the train config's


def configs(spec, seed: int, teacher_epochs: int | None, student_epochs: int, alpha: float,
            temperature: float, student_lr: float, threads: int, kd_lr: float | None = None,
            teacher_levers: dict[str, float] | None = None, kd_batch_size: int | None = None,
            kd_precision: str | None = None, student_views: int | None = None) -> dict[str, dict]:
    """The three configs of one seed; the KD config gets its teacher checkpoint later.
    `teacher_levers` ({lever: value}, keys of TEACHER_LEVERS) replace the preset teacher's;
    `kd_batch_size` the distilled student's batch (default: the preset's, as the other student's);
    `kd_precision` ("fp32" or "bf16") its compute precision and that of its cached teacher
    logits (default: the train config's "auto", bf16 where the CPU has it; only a given value
    enters the config, so runs from before the lever keep their config); `student_views` K puts
    both 2x800s on K fixed views of the training images jittered as the teacher's are (not the
    paper's protocol, whose students saw the plain images; None: the paper's)."""
    from kdtune.datasets.augment import resolve_pixels

    teacher = {**spec.teacher_config(), "seed": seed, "num_threads": threads}
    if teacher_epochs is not None:
        teacher["epochs"] = teacher_epochs
    for key, value in (teacher_levers or {}).items():
        if key in MODEL_KWARGS:
            teacher["model_kwargs"] = {**teacher.get("model_kwargs", {}), key: value}
        else:
            teacher[key] = value
    student = {**spec.student_constants(None), "model": "mlp", "depth": 2, "width": 800,
               "model_kwargs": {}, "weight_decay": 0.0, "augment": "none", "epochs": student_epochs,
               "seed": seed, "lr": student_lr, "num_threads": threads}
    # The paper's students see un-jittered images, whatever the preset's searched students do:
    # no jitter width and no fixed views (the KD student's cache has one row per image).
    for key in ("augment_pixels", "augment_views"):
        student.pop(key, None)
    if student_views is not None:  # the deviation: the teacher's jitter, as K fixed views
        student.update(augment="jitter", augment_views=student_views,
                       augment_pixels=resolve_pixels("jitter", teacher.get("augment_pixels")))
    kd = {**student, "alpha": alpha, "temperature": temperature, "lr": kd_lr or student_lr,
          "batch_size": kd_batch_size or student["batch_size"]}
    if kd_precision is not None:
        kd["precision"] = kd_precision
    return {"teacher": teacher, "student": {**student, "alpha": 0.0}, "kd": kd}


def run_resumable(fn, config: dict, bundle, folder: Path, split: str = "test", **kw) -> dict:
    """Train to the end (resuming a killed run), then return {errors, params, epochs, seconds},
    errors counted once on bundle.<split> ("test", or "val" for the held-out protocol)."""
    check_same_config(folder, config)
    finished = _finished(folder)
    if finished is None:
        with exclusive(folder):
            finished = _train_and_count(fn, config, bundle, folder, split, **kw)
    if "teacher_checkpoint" in config and "lost" not in finished.get("fidelity", {}).get(split, {}):  # also for runs finished before it
        finished["fidelity"] = copy_fidelity(finished["checkpoint"], config["teacher_checkpoint"],
                                             bundle, ("train", split))
        (folder / "result.json").write_text(json.dumps(finished))
    return finished


def _finished(folder: Path) -> dict | None:
    """The run's result.json, read back; None while it has not finished."""
    done = folder / "result.json"
    return json.loads(done.read_text()) if done.is_file() else None


@contextlib.contextmanager
def exclusive(folder: Path):
    """Hold the folder's lock while training in it: a second process on the same run (the same
    seed of one storage path) stops at once instead of continuing the first one's checkpoints
    under its feet. flock is released by the kernel when the holder dies, so a killed run
    leaves no stale lock behind."""
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"hinton protocol: {folder} is being trained by another process; "
                             f"run other seeds (--seeds) or another --storage-path beside it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_and_count(fn, config: dict, bundle, folder: Path, split: str, **kw) -> dict:
    from kdtune.trainables import reporting

    finished = _finished(folder)  # the process that held the lock before us may have finished it
    if finished is not None:
        return finished
    parts = sorted(folder.glob("part*"))
    last = _last_checkpoint(parts)
    root = folder / f"part{len(parts):03d}"
    log = folder / "epochs.jsonl"  # one line per epoch, across parts: the budget survives a kill
    with reporting.local_session(resume_from=last, root=str(root), keep_last=1, log=str(log)) as rec:
        fn(config, data=bundle, **kw)
    by_epoch = {r["epoch"]: r for r in map(json.loads, log.read_text().splitlines())}
    epochs = [by_epoch[e] for e in sorted(by_epoch)]  # an epoch redone after a kill counts once
    if epochs[-1].get("diverged"):  # no weights worth testing: say so instead of testing none
        raise SystemExit(f"hinton protocol: {folder} {epochs[-1].get('stop_reason', 'diverged')}; "
                         f"lower its learning rate (--student-lr / --kd-lr) and delete that folder")
    final = rec.checkpoints[-1] if rec.checkpoints else last  # killed after its last epoch
    errors, params = count_test_errors(final, bundle, split)
    result = {"errors": errors, "split": split, "images": len(getattr(bundle, split)),
              "params": params, "epochs": epochs[-1]["epoch"],
              "seconds": sum(r["epoch_time_s"] for r in epochs), "checkpoint": final,
              "last_train_acc": epochs[-1]["train_acc"]}
    (folder / "result.json").write_text(json.dumps(result))
    return result


RUN_ONLY = frozenset({"num_threads", "data_dir"})  # config keys that do not change the trained weights (where the files are, not which)


def folder_name(role: str, config: dict, teacher_levers: dict[str, float] | None = None,
                preset_batch: int | None = None) -> str:
    """The run's folder under seed<S>/: its role and the settings a protocol call can change, so
    that runs of other settings sit beside it and share what does not depend on them (every
    teacher shares the undistilled student; KD students of one teacher share it). A student's
    batch size is named only where it is not `preset_batch`, its precision only where a call
    gave one, and its jitter only where it has one, so older runs keep their names."""
    name = f"{role}-e{config['epochs']}"
    if role == "teacher":  # the teacher's levers, in TEACHER_LEVERS' order; preset values: no tag
        return name + "".join(f"-{tag}{teacher_levers[key]:g}" for key, tag in TEACHER_LEVERS.items()
                              if key in (teacher_levers or {}))
    name += f"-lr{config['lr']:g}"
    if preset_batch is not None and config["batch_size"] != preset_batch:
        name += f"-b{config['batch_size']}"
    if "precision" in config:  # only a run given a precision names it (older runs: "auto")
        name += f"-{config['precision']}"
    if config.get("augment") == "jitter":  # jittered students (--student-views): shift and views
        name += f"-j{config['augment_pixels']}v{config['augment_views']}"
    return name + (f"-T{config['temperature']:g}-a{config['alpha']:g}" if role == "kd" else "")


def kd_folder_name(config: dict, teacher: str, preset_teacher: str, preset_batch: int | None = None) -> str:
    """A KD student's folder: its own settings, then its teacher's folder name unless that is the
    preset's teacher, so students of two teachers never share a folder (nor a config check)."""
    own = folder_name("kd", config, preset_batch=preset_batch)
    return own if teacher == preset_teacher else f"{own}-of-{teacher}"


def check_same_config(folder: Path, config: dict) -> None:
    """Resume only the run that was started: a folder remembers its config (config.json), and a
    call with another config (a changed preset, lr or epoch count) stops instead of continuing
    old weights under new settings or returning a stale result."""
    saved = folder / "config.json"
    text = json.dumps(config, sort_keys=True, default=str)
    old, new = (json.loads(saved.read_text()) if saved.is_file() else None), json.loads(text)
    # The thread count is how the run is scheduled, not what it trains: a teacher trained at 2
    # threads serves students run later at 1 thread each, side by side.
    changed = [] if old is None else sorted(k for k in old.keys() | new.keys()
                                            if k not in RUN_ONLY and old.get(k) != new.get(k))
    if changed:
        raise SystemExit(f"hinton protocol: {folder} was started with another config ({', '.join(changed)} "
                         f"differ); use another --storage-path or delete that folder")
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(text)


def _last_checkpoint(parts: list[Path]) -> str | None:
    for part in reversed(parts):
        found = sorted(part.glob("checkpoint_*"))
        if found:
            return str(found[-1])
    return None


def run_seed(spec, bundle, out: Path, seed: int, split: str = "test", **kw) -> dict[str, dict]:
    from kdtune.search.stages.teacher_cache import local_cache
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.teacher import train_teacher

    cfg = configs(spec, seed, **kw)
    folder = out / f"seed{seed}"

    teacher_dir = folder_name("teacher", cfg["teacher"], kw.get("teacher_levers"))
    names = {"teacher": teacher_dir, "student": folder_name("student", cfg["student"]),
             "kd": kd_folder_name(cfg["kd"], teacher_dir, folder_name("teacher", spec.teacher_config()),
                                  preset_batch=cfg["student"]["batch_size"])}

    def run(fn, role, config, **extra):
        return run_resumable(fn, config, bundle, folder / names[role], split, **extra)

    rows = {"teacher": run(train_teacher, "teacher", cfg["teacher"])}
    rows["student"] = run(distill_student, "student", cfg["student"])
    teacher = rows["teacher"]["checkpoint"]
    # computed at the KD student's precision, on its own augmentation: un-jittered students get
    # one row per image, jittered ones one per image and view, the pixels of their loader (same seed)
    kd = cfg["kd"]
    transfer = bundle.with_augment(kd["augment"], kd.get("augment_pixels"))
    logits = local_cache(transfer, teacher, views=kd.get("augment_views"), seed=seed,
                         precision=kd.get("precision", "auto"))
    rows["kd"] = run(distill_student, "kd", {**kd, "teacher_checkpoint": teacher}, teacher_logits=logits)
    for name, role in ROLES.items():
        r = rows[role]
        print(f"  seed {seed} {name:22s} {r['errors']:5d} {split} errors  ({r['params']:,} params, "
              f"{r['epochs']} epochs, {r['seconds'] / 60:.1f} min)", flush=True)
    return rows


def teacher_levers(args) -> dict[str, float]:
    """{lever: value} of the --teacher-* flags given (an empty dict: the preset's teacher)."""
    return {key: getattr(args, f"teacher_{key}") for key in TEACHER_LEVERS
            if getattr(args, f"teacher_{key}", None) is not None}


def describe_teacher(spec, levers: dict[str, float], pixels: str = "standardised") -> str:
    """The teacher's lever values as it trains ("lr 0.03, max_norm 3.5, dropout 0.5, ..."), the
    ones a flag changed marked with *. Under `pixels` "unit" (raw [0, 1] inputs) both fills,
    black (-mean/std) and mean (0), resolve to 0, a black pixel: the header says so."""
    cfg = configs(spec, 0, None, 1, 0.0, 1.0, 0.0, 1, teacher_levers=levers)["teacher"]
    values = {key: cfg["model_kwargs"].get(key, 0.0) if key in MODEL_KWARGS else cfg.get(key)
              for key in TEACHER_LEVERS}
    text = ", ".join(f"{key} {'none' if v is None else f'{v:g}'}{'*' if key in levers else ''}"
                     for key, v in values.items())
    if values["input_dropout"]:  # what a dropped pixel becomes (models/mlp.py resolve_input_fill)
        text += f" (to {'black' if pixels == 'unit' else cfg['model_kwargs'].get('input_fill', 'black')})"
    return text


def main(args, spec, bundle, out: Path) -> None:
    """The paper's three rows over `args.seeds`, beside its 67 / 146 / 74."""
    from benchmarks.common import print_table

    pixels = args.pixels or "standardised"
    if pixels == "unit":  # every model on raw pixels in [0, 1], as Srivastava et al. fed them
        bundle = unit_pixels(bundle)
    out = runs_root(out, pixels, args.holdout)
    if args.holdout:  # train split only, counted on the validation images; test never read
        data, split = bundle, "val"
    else:  # the paper's: all training images, the test set once
        data, split = full_train_bundle(bundle), "test"
    n_eval = len(getattr(data, split))
    levers = teacher_levers(args)
    jittered = (f"; both on {args.student_views} fixed jittered views, NOT the paper's protocol "
                f"(its students saw plain images)" if args.student_views else "")
    print(f"Hinton et al. 2015 protocol{' (held out)' if args.holdout else ''}: {len(data.train)} "
          f"training images, {n_eval} {split} images (touched once, last epoch); "
          f"inputs {'raw pixels in [0, 1]' if pixels == 'unit' else 'standardised'}; "
          f"teacher {args.teacher_epochs or spec.teacher['epochs']} epochs, {describe_teacher(spec, levers, pixels)}; "
          f"students {args.epochs} epochs "
          f"(lr {args.student_lr}, KD lr {args.kd_lr or args.student_lr}"
          f"{f', KD batch {args.kd_batch_size}' if args.kd_batch_size else ''}"
          f"{f', KD precision {args.kd_precision}' if args.kd_precision else ''}"
          f"{jittered}); "
          f"KD T {args.temperature} alpha {args.alpha}; "
          f"seeds {args.seeds}; runs in {out}", flush=True)
    start = time.perf_counter()
    per_seed = [run_seed(spec, data, out, s, split, teacher_epochs=args.teacher_epochs,
                         teacher_levers=levers,
                         student_epochs=args.epochs, alpha=args.alpha, temperature=args.temperature,
                         student_lr=args.student_lr, threads=args.threads, kd_lr=args.kd_lr,
                         kd_batch_size=args.kd_batch_size, kd_precision=args.kd_precision,
                         student_views=args.student_views)
                for s in args.seeds]
    rows = []
    for name, role in ROLES.items():
        errs = [r[role]["errors"] for r in per_seed]
        minutes = statistics.median(r[role]["seconds"] for r in per_seed) / 60
        rows.append((name, mean_sd(errs), PAPER[name],
                     f"{per_seed[0][role]['params']:,}", f"{per_seed[0][role]['epochs']} epochs, "
                                                          f"{minutes:.0f} min"))
    print()
    seeds = f"{len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}"
    print_table(["model", f"{split} errors /{n_eval:,} (mean ± sd, {seeds})",
                 "paper (/10,000 test)", "params", "budget (median wall)"], rows)
    base = statistics.mean(r["student"]["errors"] for r in per_seed)
    kd = statistics.mean(r["kd"]["errors"] for r in per_seed)
    # The targets are test errors out of 10,000; on another split they are compared as rates.
    per10k = 10_000 / n_eval
    teacher = statistics.mean(r["teacher"]["errors"] for r in per_seed)
    scaled = "" if n_eval == 10_000 else (f" (per 10,000: teacher {per10k * teacher:.1f}, "
                                          f"no KD {per10k * base:.1f}, KD {per10k * kd:.1f})")
    print(f"ratio errors KD / no KD: {kd / base:.2f} ({base:.1f} -> {kd:.1f}; paper 146 -> 74 = 0.51)"
          f"{scaled}; targets per 10,000: teacher <= 70, KD <= 80, ratio <= 0.6; "
          f"this call {time.perf_counter() - start:.0f} s")


def lever_rows(root: Path) -> list[tuple]:
    """Every finished run under `root` (a storage path, or its holdout/ folder), one row per run
    name across seeds: (run, split, seeds, errors per seed, mean ± sd, per 10,000, ratio to the
    undistilled student of the same seeds and epochs, and for a KD run how it copies its teacher:
    disagreements and centred-logit RMSE over the teacher's logit SD on the transfer set / the
    counted split, means over seeds). Trains nothing: it is how levers tried by several protocol calls are compared side
    by side."""
    runs: dict[str, dict[int, dict]] = {}
    for done in sorted(root.glob("seed*/*/result.json")):
        seed = int(done.parent.parent.name.removeprefix("seed"))
        runs.setdefault(done.parent.name, {})[seed] = json.loads(done.read_text())
    rows = []
    for name in sorted(runs, key=lambda n: (n.split("-")[0] != "teacher", n)):
        by_seed = runs[name]
        seeds = sorted(by_seed)
        errs = [by_seed[s]["errors"] for s in seeds]
        # runs finished before the held-out mode have no split/images: they counted the test set
        images = by_seed[seeds[0]].get("images", 10_000)
        mean = statistics.mean(errs)
        ratio = "-"
        base = [n for n in runs if n.startswith(f"student-{name.split('-')[1]}-")
                and _jitter_tag(n) == _jitter_tag(name)]  # jittered KD against jittered no KD
        if name.startswith("kd-") and len(base) == 1 and all(s in runs[base[0]] for s in seeds):
            undistilled = statistics.mean(runs[base[0]][s]["errors"] for s in seeds)
            ratio = f"{mean / undistilled:.2f}" if undistilled else "-"
        split = by_seed[seeds[0]].get("split", "test")
        rows.append((name, split, " ".join(map(str, seeds)), ", ".join(map(str, errs)), mean_sd(errs),
                     f"{mean * 10_000 / images:.1f}", ratio, *_copy_columns(by_seed, seeds, split)))
    return rows


def _jitter_tag(name: str) -> str | None:
    """A student run's jitter tag ("-j2v60", from --student-views), None for plain students."""
    found = re.search(r"-j\d+v\d+", name)
    return found.group(0) if found else None


def _copy_columns(by_seed: dict[int, dict], seeds: list[int], split: str) -> tuple[str, str, str]:
    """("train / split" disagreements with the teacher, "train / split" logit RMSE, the images of
    `split` lost to the teacher with the teacher's median top-2 margin on them and on all images),
    seed means; "-" for runs without a teacher or finished before fidelity was recorded."""
    fids = [by_seed[s].get("fidelity", {}) for s in seeds]
    if not all("teacher_logit_sd" in f.get(split, {}) for f in fids):
        return "-", "-", "-"

    def mean(value, fmt: str) -> str:
        return " / ".join(format(statistics.mean(value(f[part]) for f in fids), fmt)
                          for part in ("train", split))

    lost = "-"
    if all("lost" in f[split] for f in fids):
        # the lost images' margin is averaged over the seeds that lost any
        margins = [f[split]["lost_teacher_margin"] for f in fids if f[split]["lost_teacher_margin"] is not None]
        count = (f"{statistics.mean(f[split]['lost'] for f in fids):.1f} at margin {statistics.mean(margins):.2f}"
                 if margins else "0")
        lost = f"{count} (all {statistics.mean(f[split]['teacher_margin'] for f in fids):.1f})"
    # RMSE as a share of the teacher's logit spread: teachers of other logit scales compare
    return (mean(lambda f: f["disagree"], ".0f"),
            mean(lambda f: f["logit_rmse"] / f["teacher_logit_sd"], ".1%"), lost)


def print_levers(rows: list[tuple]) -> None:
    from benchmarks.common import print_table

    print_table(["run", "split", "seeds", "errors per seed", "mean ± sd", "per 10,000",
                 "KD / no KD", "disagrees with teacher (train / split)",
                 "logit RMSE / teacher's logit SD (train / split)",
                 "lost to the teacher on split, at its median top-2 margin (all images)"], rows)

