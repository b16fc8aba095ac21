"""A teacher trial on 1 worker vs 2 DDP workers at the same global batch, each in its own Tune run.

Both run the teacher stage's own Tune set-up (search/stages/tune_stage.run_stage): 1 worker is
today's one-process trial (1 CPU, batch = the global batch); 2 workers is a multi-worker trial
(trainables/distributed.py: the trial holds no CPU, two Ray Train workers hold one each, batch
= global / 2). Prints the wall of each Tuner.fit (Ray's start of the trial, and for DDP of the
worker group, included), the trial's summed epoch seconds, and the largest relative difference
of the two loss curves. On a 2-core machine two workers cannot be faster: each step's compute
halves but two processes share the same two cores with Ray, and the gradients go through gloo.

    python -m benchmarks.bench_ddp_teacher                      # digits, MLP 2x512, 10 epochs
    python -m benchmarks.bench_ddp_teacher --epochs 4 --width 64
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import machine_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--global-batch", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    from kdtune import datasets
    from kdtune.search.stages.tune_stage import Stage, run_stage, worker_resources
    from kdtune.trainables.teacher import train_teacher

    data = datasets.create_dataset("digits", val_fraction=0.2, seed=0)
    config = {"dataset": "digits", "val_fraction": 0.2, "seed": 0, "model": "mlp", "depth": 2,
              "width": args.width, "epochs": args.epochs, "lr": 0.05, "precision": "fp32", "num_threads": 1}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            ddp = {"worker_resources": worker_resources(1, 0)} if workers > 1 else {}
            space = {**config, "batch_size": args.global_batch // workers, **({"workers": 2} if workers > 1 else {})}
            stage = Stage(name=f"teacher{workers}", experiment_dir=__import__("pathlib").Path(tmp), num_samples=1,
                          cpus=1, gpus=0, max_failures=0, workers=workers, param_space=space,
                          trainable=tune.with_parameters(train_teacher, data=data, **ddp))
            start = time.perf_counter()
            result = run_stage(stage, resume=False)[0]
            wall = time.perf_counter() - start
            assert result.error is None, result.error
            df = result.metrics_dataframe
            curves[workers] = df
            rows.append((workers, wall, float(df.epoch_time_s.sum()), float(df.epoch_time_s.median()),
                         float(df.val_acc.iloc[-1])))
    ray.shutdown()
    print(machine_line())
    print(f"digits ({len(data.train)} train images), MLP 2x{args.width}, {args.epochs} epochs, global batch "
          f"{args.global_batch}, fp32, 1 CPU per worker")
    print("| workers | Tuner.fit wall s | sum of epoch s | median epoch s | final val_acc |")
    print("|---|---|---|---|---|")
    for w, wall, total, med, acc in rows:
        print(f"| {w} | {wall:.1f} | {total:.2f} | {med:.3f} | {acc:.4f} |")
    for key in ("train_loss", "val_loss", "val_acc"):
        a, b = curves[1][key].to_numpy(), curves[2][key].to_numpy()
        rel = abs(a - b) / abs(a).clip(min=1e-12)
        print(f"{key}: max relative difference 2 vs 1 worker over {len(a)} epochs: {rel.max():.2e}")


if __name__ == "__main__":
    main()
