"""A timm student family against the built-in cifar_resnet family, same budget and trial count.

Reads two finished experiments and prints, per family: the final stage's rows (the best
baseline and the best distilled config, each retrained over the seeds and tested once: test
accuracy mean +- sd), the winners' params and FLOPs per image, and the wall time of the run
(sum of its stages' `wall_s`, the attempts that finished them). The runs (2026-12-07, real
MNIST, a 2-core machine shared with other jobs) were:

    S=/tmp/issue-33-results   # MNIST_B32: search/presets/mnist.yaml with train.batch_size 32
    COMMON="--preset MNIST_B32 --dataset mnist --data-dir DATA --no-download --subset 1000 --val-fraction 0.02 \
        --seed 0 --max-params 200000 --num-samples 3 --baseline-samples 1 --max-epochs 2 --grace-period 1 \
        --final-top-k 1 --final-seeds 3 --max-concurrent 2 --storage-path $S"
    python -m kdtune.search.run_kd_search $COMMON --name cmp3-cifar_resnet --students cifar_resnet --teacher-epochs 2
    python -m kdtune.search.run_kd_search $COMMON --name cmp3-timm_resnet --students timm:resnet \
        --teacher-checkpoint <cmp3-cifar_resnet's teacher checkpoint>     # the same teacher
    python -m benchmarks.bench_zoo_families $S/cmp3-cifar_resnet $S/cmp3-timm_resnet

The wall column is the manifest's (stages' wall_s + cache builds); /usr/bin/time measured the
whole processes at 1,617 s and 485 s (benchmarks/README.md quotes those).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import kdtune
from kdtune.search.record.stats import MeanSd
from benchmarks.common import run_wall_s


def describe(path: Path) -> list[dict]:
    """One row per final-stage config of experiment `path` (read through kdtune.open_experiment)."""
    exp = kdtune.open_experiment(path)
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    spec = manifest["spec"]
    wall = run_wall_s(manifest)
    rows = []
    for _, row in exp.final_table().iterrows():
        sd = row.get("test_acc_sd")
        rows.append({"experiment": Path(path).name, "students": ",".join(spec["students"]),
                     "max_params": spec.get("max_params"), "trials": f"{spec['baseline_samples']}+{spec['num_samples']}",
                     "role": row.get("role"), "model": row.get("model"), "depth": int(row["depth"]),
                     "width": int(row["width"]), "params": int(row["params"]), "flops": int(row["flops"]),
                     "seeds": row.get("seeds"),
                     "test acc (mean ± sd)": MeanSd(row["test_acc_mean"], sd).text(),
                     "wall_s": round(wall)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [r for path in args.experiments for r in describe(path)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r.get(k):.4f}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                for k in keys) + " |")


if __name__ == "__main__":
    main()
