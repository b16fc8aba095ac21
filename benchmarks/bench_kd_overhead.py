"""KD overhead: epoch time of the undistilled baseline vs distillation with cached and with
online teacher logits, through the real trainables (distill_student).

Pairs: mlp 2x1200 -> mlp 2x800 on MNIST-shaped data, resnet56 -> resnet20 on CIFAR-shaped
data (small subset). The teacher weights are random (timing does not depend on them); the
cached logits are computed once beforehand, as a search does. Each variant is run
`--runs` times; the figure is the median of the last epoch's time of each run (the first
epoch pays warm-up), and each ratio the median of the runs' own ratios (baseline, cached and
online run back to back, so a change in machine load between runs cancels). Run:

    python -m benchmarks.bench_kd_overhead            # ~2 min on 2 CPU cores
    python -m benchmarks.bench_kd_overhead --runs 5 --mlp-n 54000 --resnet-n 2000

MNIST pair: real MNIST images when `--data-dir` (default the repository's ./data)
holds them (else random). The resnet pair
trains on augmented data: by default the search runs its teacher online; its "cached"
column is the opt-in `augment_views` mode (2 fixed augmented views, their teacher logits
computed once by search/stages/teacher_cache.py's code, as a search does). Targets: cached <= 1.15x,
online <= 1.6x of the baseline's epoch time (epoch = training + validation).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import (MNIST_DIR, machine_line, mnist_present, print_table, random_bundle,
                    save_teacher, verdict)
from kdtune.trainables import reporting
from kdtune.trainables.config import DistillConfig
from kdtune.trainables.distill import distill_student
from kdtune.trainables.runtime import Runtime
from kdtune.search.stages.teacher_cache import local_cache
from kdtune.trainables.teacher_logits import compute_logits, load_teacher, prepare_teacher

PAIRS = {
    # name: (shape, n_train, teacher (name, kwargs), student (name, kwargs), batch, augment)
    "mlp2x1200->mlp2x800": ((1, 28, 28), 12000, ("mlp", {"depth": 2, "width": 1200}),
                            ("mlp", {"depth": 2, "width": 800}), 128, "none"),
    "resnet56->resnet20": ((3, 32, 32), 512, ("resnet56", {}), ("resnet20", {}), 128,
                           "crop_flip"),
}

VIEWS = 2  # augment_views of the augmented pair's cached mode: one per epoch of a run


def run(config: dict, bundle, logits=None) -> float:
    with reporting.local_session() as rec:
        distill_student(config, data=bundle, teacher_logits=logits)
    return rec.results[-1]["epoch_time_s"]  # last epoch: warmed up


def bench(name: str, runs: int, precision: str, threads: int, sizes: dict,
          mnist_dir: str | None) -> dict:
    shape, n, (t_name, t_kw), (s_name, s_kw), batch, augment = PAIRS[name]
    n = sizes.get(name) or n
    if shape[0] == 1 and mnist_dir:
        from kdtune import datasets

        bundle = datasets.create_dataset("mnist", mnist_dir, subset=n)
    else:
        bundle = random_bundle(shape, n, augment)
    n = len(bundle.train)
    tmp = save_teacher(t_name, t_kw, bundle)
    base = {"dataset": bundle.name, "model": s_name, **s_kw, "epochs": 2,
            "batch_size": batch, "precision": precision, "num_threads": threads}
    kd = {**base, "teacher_checkpoint": tmp, "alpha": 0.9, "temperature": 4.0}
    torch.set_num_threads(threads)
    rt = Runtime.from_config(DistillConfig.from_dict(kd), load_teacher(tmp))
    frozen, _ = prepare_teacher(tmp, bundle.meta(), rt)  # as distill_student does
    logits_kw = dict(mean=bundle.mean, std=bundle.std, autocast_dtype=rt.autocast_dtype,
                     channels_last=rt.channels_last)
    compute_logits(frozen, bundle.val, 512, "cpu", **logits_kw)  # warm-up (kernel selection)
    # Augmented data: the cached mode is 2 fixed views (the 2 epochs of a run), as a search's default.
    views = VIEWS if augment != "none" else None
    start = time.perf_counter()
    cache = local_cache(bundle, tmp, views=views, precision=precision)
    cache_s = time.perf_counter() - start  # what a search pays once per teacher
    cached_cfg = {**kd, "teacher_logits": "cached", **({"augment_views": views} if views else {})}
    times = {"baseline": [], "cached": [], "online": []}
    for r in range(runs):  # interleaved, so drift in machine speed hits all variants alike
        times["baseline"].append(run(base, bundle))
        times["cached"].append(run(cached_cfg, bundle, cache))
        times["online"].append(run({**kd, "teacher_logits": "online"}, bundle))
        print(f"  {name} run {r + 1}/{runs}: " + ", ".join(
            f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"pair": name, "train_images": n, "data": "real" if bundle.name == "mnist" else "random",
            "precision": rt.precision, "cache_compute_s": cache_s,
            **{f"{k}_s": v for k, v in med.items()},
            # median of each run's own ratio: drift in machine load between runs cancels
            **{f"{k}/baseline": statistics.median(v / b for v, b in zip(times[k], times["baseline"]))
               for k in ("cached", "online")}}


TARGETS = {"cached": 1.15, "online": 1.6}  # epoch-time ratio to the baseline (the targets in benchmarks/README.md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs per variant (median)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--mlp-n", type=int, default=None, help="MNIST training images (12000)")
    p.add_argument("--resnet-n", type=int, default=None, help="CIFAR-shaped images (512)")
    p.add_argument("--data-dir", default=MNIST_DIR, help="real MNIST (torchvision layout; default %(default)s)")
    p.add_argument("--random-mnist", action="store_true",
                   help="random 1x28x28 even when real MNIST is in --data-dir")
    args = p.parse_args(argv)
    sizes = {"mlp2x1200->mlp2x800": args.mlp_n, "resnet56->resnet20": args.resnet_n}
    real = not args.random_mnist and mnist_present(args.data_dir)
    print(machine_line() + f"; median of {args.runs} runs")
    rows = []
    for name in args.pairs:
        r = bench(name, args.runs, args.precision, args.threads, sizes, args.data_dir if real else None)
        rows.append(r)
    print()
    print_table(["pair", "images", "precision", "baseline s", "cached s", "online s",
                 "cached/base", "online/base", "one-off cache s"],
                [(r["pair"], f"{r['train_images']} {r['data']}", r["precision"], r["baseline_s"],
                  r["cached_s"], r["online_s"], r["cached/baseline"], r["online/baseline"],
                  r["cache_compute_s"]) for r in rows])
    for r in rows:
        for mode in ("cached", "online"):
            ratio = r[f"{mode}/baseline"]
            note = f" (augmented data: augment_views={VIEWS}, opt-in)" if (
                mode == "cached" and r["pair"].startswith("resnet")) else ""
            print(f"ratio {mode}/baseline epoch time {r['pair']}: {ratio:.2f}x "
                  f"({verdict(ratio, TARGETS[mode], higher_is_better=False)}){note}")


if __name__ == "__main__":
    main()
