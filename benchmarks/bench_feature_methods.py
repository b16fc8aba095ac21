"""Epoch time of every KD method against kd on the same teacher/student pair, in one run.

A conv teacher (cifar_resnet) is trained once; then each method distils the same conv student
for `--epochs` epochs from it (trainables called directly, fp32, one process), and the
median epoch time over the epochs after the first (the first pays the one-off costs: the
feature probe, the CRD memory bank, the teacher's val logits) is compared with kd's, as a
ratio. kd reads the teacher-logit cache (the search's default for un-augmented data); the
`kd (online)` row runs kd's teacher on every batch, which is what every feature method does
(trainables/feature_teacher.py), so ratio / (kd online ratio) is the feature term's own cost.
Also printed: the CRD memory bank's size and what a pooled-feature cache would hold.

    python -m benchmarks.bench_feature_methods                                 # digits
    python -m benchmarks.bench_feature_methods --dataset mnist --data-dir /path/to/data --subset 6000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks.common import machine_line, print_table

METHODS = ["kd", "kd_weighted", "dkd", "dist", "fitnet", "at", "sp", "pkt", "rkd", "crd", "reviewkd"]


def main(argv: list[str] | None = None) -> int:
    from kdtune import datasets
    from kdtune.trainables import reporting
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.teacher import train_teacher

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--subset", type=int, default=None, help="training images kept")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crd-negatives", type=int, default=4096,
                   help="K of crd (the reference's 16384 needs ~0.5 GB per bank gather at batch 64)")
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args(argv)

    base = {"dataset": args.dataset, "data_dir": args.data_dir, "batch_size": args.batch_size,
            "lr": 0.05, "precision": "fp32", "seed": 0, "subset": args.subset, "val_fraction": 0.1}
    bundle = datasets.create_dataset(args.dataset, args.data_dir, val_fraction=0.1, seed=0,
                                     subset=args.subset)
    print(machine_line())
    print(f"{args.dataset}: {len(bundle.train)} train / {len(bundle.val)} val images {bundle.in_shape}")
    with reporting.local_session(root=tempfile.mkdtemp(prefix="bench-feature-teacher-")) as rec:
        train_teacher({**base, "epochs": args.teacher_epochs, "model": "cifar_resnet",
                       "depth": 14, "width": 16}, data=bundle)
    teacher = rec.checkpoints[-1]
    student = {"model": "cifar_resnet", "depth": 8, "width": 8, "teacher_checkpoint": teacher}
    rows, kd_time = [], None
    runs = [(m, {"kd_method": m}) for m in args.methods.split(",")]
    runs.insert(1, ("kd (online)", {"kd_method": "kd", "teacher_logits": "online"}))
    for label, extra in runs:
        if extra["kd_method"] == "crd":
            extra["crd_negatives"] = args.crd_negatives
        if extra["kd_method"] in ("dkd", "reviewkd"):
            extra["dkd_warmup" if extra["kd_method"] == "dkd" else "reviewkd_warmup"] = 1
        start = time.perf_counter()
        with reporting.local_session() as r:
            distill_student({**base, **student, "epochs": args.epochs, **extra}, data=bundle)
        times = [x["epoch_time_s"] for x in r.results[1:]] or [r.results[0]["epoch_time_s"]]
        med = statistics.median(times)
        kd_time = med if label == "kd" else kd_time
        rows.append([label, med, med / kd_time, r.results[-1]["val_acc"], r.results[-1]["diverged"],
                     time.perf_counter() - start])
        print(f"  {label}: median epoch {med:.2f} s", flush=True)
    print_table(["method", "epoch s (median)", "ratio to kd", "val_acc (last)", "diverged", "wall s"], rows)
    n, dim = len(bundle.train), 128
    print(f"crd memory bank: 2 x {n} x {dim} x 4 B = {2 * n * dim * 4 / 2**20:.1f} MiB; a pooled-"
          f"feature cache of this teacher (width 64) would be {n * 64 * 4 / 2**20:.1f} MiB per view")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
