"""Accuracy anchor (Hinton et al. 2015, MNIST): test errors of a 2x800 student without and
with distillation from a 2x1200 teacher, under a short CPU budget.

The paper (fully trained, jittered inputs, dropout teacher): 67 test errors for the teacher,
146 for the 2x800 student trained alone, 74 for the distilled one (out of 10,000). Here all
three are trained for --epochs epochs (default 5, a CPU budget, not the paper's) with the
mnist preset's settings (teacher: dropout 0.2, lr 0.05; SGD + nesterov + cosine, batch 128),
by plain calls of trainables' train_teacher / distill_student (reporting.local_session).
Each model is taken at its best val_acc epoch (the val split is 6,000 held-out training
images; the test set is only used for the figures below), and its test errors are counted.
Optionally (--experiment DIR) the best searched student of a finished kdtune experiment
is evaluated too, with its parameter reduction against the experiment's teacher.

    python -m experiments.hinton2015.accuracy_anchor                     # 5 epochs, ~3 min on 2 CPUs
    python -m experiments.hinton2015.accuracy_anchor --epochs 20 --seeds 0 1 2
    python -m experiments.hinton2015.accuracy_anchor --experiment kdtune_results/mnist-20261122-101500
    python -m experiments.hinton2015.accuracy_anchor --protocol hinton --seeds 0 1 2 --storage-path runs/h
    # the best measured (experiments/hinton2015/README.md): 64.3 / 143.0 / 77.7 test errors, ratio 0.54
    python -m experiments.hinton2015.accuracy_anchor --protocol hinton --seeds 0 1 2 --kd-lr 0.01 \
        --teacher-dropout 0.2 --kd-precision fp32 --storage-path runs/h

`--protocol hinton` runs the paper's own protocol instead (experiments/hinton2015/protocol.py: the
hinton_mnist preset's regularised, jittered teacher, all 60,000 training images, last epoch,
test set once), resumable in pieces from --storage-path.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import MNIST_DIR, machine_line, mean_sd, mnist_present, print_table, search_spec
from experiments.hinton2015 import protocol as hinton_protocol
from experiments.hinton2015.model_errors import count_test_errors

PAPER = {"teacher 2x1200": 67, "student 2x800, no KD": 146, "student 2x800, KD": 74}


def train(fn, config: dict, bundle, root: Path, **kw) -> tuple[str, dict, float]:
    """Run a trainable as a plain call; (best-val checkpoint, its metrics, seconds)."""
    from kdtune.trainables import reporting

    start = time.perf_counter()
    with reporting.local_session(root=str(root)) as rec:
        fn(config, data=bundle, **kw)
    best = max(range(len(rec.results)), key=lambda i: rec.results[i]["val_acc"])
    return rec.checkpoints[best], rec.results[best], time.perf_counter() - start


def anchor(spec, bundle, epochs: int, seed: int, alpha: float, temperature: float,
           out: Path, threads: int) -> dict[str, tuple[int, int, int, float]]:
    """{model: (test errors, params, best epoch, seconds)} for one seed."""
    from kdtune.search.stages.teacher_cache import local_cache
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.teacher import train_teacher

    teacher_cfg = {**spec.teacher_config(), "epochs": epochs, "seed": seed, "num_threads": threads}
    student = {**spec.student_constants(None), "model": "mlp", "depth": 2, "width": 800,
               "epochs": epochs, "seed": seed, "lr": 0.05, "num_threads": threads}
    rows = {}
    t_ckpt, t_m, t_s = train(train_teacher, teacher_cfg, bundle, out / f"s{seed}_teacher")
    rows["teacher 2x1200"] = (*count_test_errors(t_ckpt, bundle), t_m["epoch"], t_s)
    b_ckpt, b_m, b_s = train(distill_student, {**student, "alpha": 0.0}, bundle,
                             out / f"s{seed}_baseline")
    rows["student 2x800, no KD"] = (*count_test_errors(b_ckpt, bundle), b_m["epoch"], b_s)
    logits = local_cache(bundle, t_ckpt)  # as the search driver shares them
    kd = {**student, "alpha": alpha, "temperature": temperature, "teacher_checkpoint": t_ckpt}
    k_ckpt, k_m, k_s = train(distill_student, kd, bundle, out / f"s{seed}_kd", teacher_logits=logits)
    rows["student 2x800, KD"] = (*count_test_errors(k_ckpt, bundle), k_m["epoch"], k_s)
    for name, (err, params, ep, sec) in rows.items():
        print(f"  seed {seed} {name:22s} {err:5d} test errors  ({params:,} params, best val "
              f"epoch {ep}, {sec:.0f} s)", flush=True)
    return rows


def searched_student(experiment: str, bundle) -> list[tuple]:
    """Rows for the best distilled student of a kdtune experiment and its teacher."""
    from kdtune.search.record.manifest import Manifest

    manifest = Manifest.load(Path(experiment))
    rows = []
    teacher = manifest.teacher_checkpoint()
    t_err, t_params = count_test_errors(teacher, bundle)
    rows.append(("experiment teacher", t_err, "-", t_params, "1.00x"))
    for stage in ("baseline", "distill"):
        ckpt = manifest.stage(stage).get("best_checkpoint")
        if ckpt:
            err, params = count_test_errors(ckpt, bundle)
            rows.append((f"experiment best {stage}", err, "-", params,
                         f"{t_params / params:.1f}x fewer"))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[-4:]))
    p.add_argument("--protocol", choices=("short", "hinton"), default="short",
                   help="short: the mnist preset under a CPU budget; hinton: the paper's protocol")
    p.add_argument("--epochs", type=int, help="epochs of teacher and students (hinton: of the "
                                              "students; default 5 short, 60 hinton)")
    p.add_argument("--teacher-epochs", type=int,
                   help="hinton: the teacher's epochs (default: the hinton_mnist preset's)")
    p.add_argument("--teacher-lr", type=float,
                   help="hinton: the teacher's lr (default: the hinton_mnist preset's, 0.03)")
    p.add_argument("--teacher-max-norm", type=float, metavar="C",
                   help="hinton: the teacher's max-norm radius (default: the preset's, 3.5)")
    p.add_argument("--teacher-dropout", type=float, metavar="P",
                   help="hinton: the teacher's hidden-unit dropout (default: the preset's, 0.5)")
    p.add_argument("--teacher-input-dropout", type=float, metavar="P",
                   help="hinton: the teacher's input dropout (default: the preset's, 0.2)")
    p.add_argument("--student-lr", type=float, help="hinton: the 2x800 students' lr (default 0.05)")
    p.add_argument("--kd-lr", type=float, help="hinton: the distilled 2x800's lr (default --student-lr; "
                                               "at T = 20 and alpha 0.9, 0.05 diverged in epoch 1)")
    p.add_argument("--kd-batch-size", type=int, help="hinton: the distilled 2x800's batch size "
                                                     "(default: the preset's 128, as the other 2x800)")
    p.add_argument("--kd-precision", choices=("fp32", "bf16"),
                   help="hinton: the distilled 2x800's compute precision, and its cached teacher "
                        "logits' (default: auto, bf16 where the CPU has it)")
    p.add_argument("--student-views", type=int, metavar="K",
                   help="hinton: both 2x800s train on K fixed views of the training images jittered "
                        "as the teacher's, the distilled one against the teacher's logits of each view "
                        "(NOT the paper's protocol: its students saw plain images; default: the paper's)")
    p.add_argument("--holdout", action="store_true",
                   help="hinton: train on the 54,000-image train split only and count errors on the "
                        "6,000 validation images, never the test set (for choosing a lever)")
    p.add_argument("--levers", action="store_true",
                   help="hinton: print every finished run under --storage-path (with --holdout: its "
                        "held-out runs) side by side, one row per setting across seeds; trains nothing")
    p.add_argument("--pixels", choices=("standardised", "unit"),
                   help="hinton: the inputs every model sees: standardised (default) or raw pixels in [0, 1]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--alpha", type=float, help="KD weight of the soft term (default 0.7; hinton 0.9)")
    p.add_argument("--temperature", type=float, help="KD temperature (default 4; hinton 20, the paper's)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (1 on a machine shared with other jobs, see README)")
    p.add_argument("--data-dir", default=MNIST_DIR, help="real MNIST (torchvision layout)")
    p.add_argument("--experiment", help="a finished kdtune MNIST experiment directory")
    p.add_argument("--storage-path", help="checkpoints go here (default: a temp dir)")
    args = p.parse_args(argv)
    hinton_only = ("holdout", "levers", "teacher_epochs", "teacher_lr", "teacher_max_norm",
                   "teacher_dropout", "teacher_input_dropout", "student_lr", "kd_lr", "kd_batch_size",
                   "kd_precision", "student_views")
    for flag in hinton_only + ("pixels",):
        if getattr(args, flag) not in (None, False) and args.protocol != "hinton":
            p.error(f"--{flag.replace('_', '-')} needs --protocol hinton")
    if args.experiment and args.protocol == "hinton":
        p.error("--experiment is read by --protocol short only")
    for flag in ("teacher_lr", "teacher_max_norm", "student_lr", "kd_lr", "kd_batch_size", "student_views"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            p.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    for flag in ("teacher_dropout", "teacher_input_dropout"):
        if getattr(args, flag) is not None and not 0 <= getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be in [0, 1), got {getattr(args, flag)}")
    trains = [f for f in hinton_only[2:] + ("epochs", "alpha", "temperature") if getattr(args, f) is not None]
    if args.levers and trains:  # it reads finished runs: a training setting would do nothing
        p.error(f"--levers trains nothing: drop --{trains[0].replace('_', '-')}")
    if args.levers and not args.storage_path:
        p.error("--levers needs --storage-path (the protocol's runs)")
    if args.levers:  # reads result.json files only: no data, no training

        root = hinton_protocol.runs_root(Path(args.storage_path), args.pixels, args.holdout)
        rows = hinton_protocol.lever_rows(root)
        if not rows:
            p.error(f"no finished protocol runs under {root}")
        hinton_protocol.print_levers(rows)
        return
    if not mnist_present(args.data_dir):
        raise SystemExit(f"accuracy_anchor.py: error: no MNIST files in {args.data_dir}")

    hinton = args.protocol == "hinton"
    args.epochs = args.epochs or (60 if hinton else 5)
    args.student_lr = args.student_lr or 0.05
    args.alpha = args.alpha if args.alpha is not None else (0.9 if hinton else 0.7)
    args.temperature = args.temperature or (20.0 if hinton else 4.0)
    torch.set_num_threads(args.threads)
    out = Path(args.storage_path or tempfile.mkdtemp(prefix="kdtune-bench-anchor-"))
    spec, bundle = search_spec(["--dataset", "mnist", "--data-dir", args.data_dir,
                                       "--storage-path", str(out)]
                                      + (["--preset", "hinton_mnist"] if hinton else []))
    print(machine_line())
    if hinton:

        hinton_protocol.main(args, spec, bundle, out)
        return
    print(f"MNIST: {len(bundle.train)} train / {len(bundle.val)} val / {len(bundle.test)} test; "
          f"{args.epochs} epochs; KD alpha {args.alpha} T {args.temperature}; seeds {args.seeds}",
          flush=True)
    per_seed = [anchor(spec, bundle, args.epochs, s, args.alpha, args.temperature, out,
                       args.threads)
                for s in args.seeds]
    rows = []
    for name in PAPER:
        errs = [r[name][0] for r in per_seed]
        rows.append((name, mean_sd(errs, digits=0), PAPER[name],
                     per_seed[0][name][1], f"{args.epochs} epochs"))
    if args.experiment:
        rows += [(n, e, "-", p_, red) for n, e, _, p_, red in searched_student(args.experiment, bundle)]
    print()
    print_table(["model", "test errors /10k", "paper", "params", "budget"], rows)
    base = statistics.mean(r["student 2x800, no KD"][0] for r in per_seed)
    kd = statistics.mean(r["student 2x800, KD"][0] for r in per_seed)
    print(f"ratio errors KD / no KD: {kd / base:.2f}x ({base:.0f} -> {kd:.0f}; paper 146 -> 74 = "
          f"0.51x) after {args.epochs} epochs, mean of {len(args.seeds)} seed(s)")


if __name__ == "__main__":
    main()
