"""Search efficiency: kdtune's ASHA + TPE distillation search vs full-length random search.

Both searches distil students from the same teacher (trained once here, or given with
--teacher-checkpoint) over the same space (the preset's, through kdtune.search.tune.search_spaces.make_space),
with the same number of trials, 2 trials at a time, in the same Ray session, interleaved per
seed (kdtune, random, kdtune, random, ...):
  - kdtune: kdtune.search.stages.tune_stage.optuna_search (seeded TPE) + kdtune.search.stages.tune_stage.asha (the preset's grace
    period and reduction factor), i.e. the pipeline's distill stage;
  - random: Optuna's RandomSampler over the same define-by-run space, FIFO scheduler (every
    trial runs max_epochs). With the same seed, TPE's first 10 (n_startup_trials) configs
    are the random sampler's first 10: the searches differ by ASHA's stops and TPE's picks;
  - ray-asha (reference, --ray-asha): the same TPE with Ray's own ASHAScheduler on the same
    rungs, which kdtune used before search/tune/capped_asha.py.
Measured: epochs consumed (sum of training_iteration over trials), wall time, best val_acc.
Target: kdtune within 0.5 points of the random search's best val_acc for <= 1/3
of its epochs.

    python -m benchmarks.bench_search_efficiency                       # digits, ~2.5 min
    python -m benchmarks.bench_search_efficiency --seeds 0 1 2 --ray-asha   # median over seeds
    python -m benchmarks.bench_search_efficiency --dataset mnist --data-dir ./data \\
        --subset 10000 --num-samples 16 --teacher-checkpoint path/checkpoint.pt
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import (ensure_teacher, machine_line, median, print_table, run_search,
                    search_spec)

EPOCH_TARGET, ACC_GAP_TARGET = 1 / 3, 0.5  # epochs ratio <=, accuracy gap <= (points)


def versus_random(runs: dict, kind: str) -> tuple[float, float, float]:
    """Medians over seeds of `kind` against the random search: epochs ratio, wall ratio, and
    the accuracy gap in points (random best - `kind` best)."""
    pairs = list(zip(runs[kind], runs["random"]))
    return (median([a["epochs"] / r["epochs"] for a, r in pairs]),
            median([a["wall_s"] / r["wall_s"] for a, r in pairs]),
            median([100 * (r["best_val_acc"] - a["best_val_acc"]) for a, r in pairs]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[-5:]))
    p.add_argument("--dataset", default="digits", help="digits (offline) or mnist, ...")
    p.add_argument("--data-dir", help="dataset folder (torchvision layout)")
    p.add_argument("--subset", type=int, help="training images (quick runs)")
    p.add_argument("--teacher-checkpoint", help="kdtune teacher checkpoint (else trained once here)")
    p.add_argument("--num-samples", type=int, help="trials per search (default: the preset's)")
    p.add_argument("--max-epochs", type=int, help="epochs of a full-length trial (preset's)")
    p.add_argument("--grace-period", type=int, help="ASHA epochs before a stop (preset's)")
    p.add_argument("--reduction-factor", type=int, help="ASHA keeps 1/RF per rung (preset's)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at a time (both searches)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one pair of searches each")
    p.add_argument("--storage-path", help="where the Tune experiments go (default: a temp dir)")
    p.add_argument("--no-random", action="store_true",
                   help="skip the full-length random search (to compare versions of kdtune's own search)")
    p.add_argument("--ray-asha", action="store_true",
                   help="also run TPE + Ray's ASHAScheduler (the scheduler kdtune replaced)")
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    out = Path(args.storage_path or tempfile.mkdtemp(prefix="kdtune-bench-search-"))
    flags = ["--dataset", args.dataset, "--max-concurrent", str(args.max_concurrent),
             "--storage-path", str(out)]
    for flag, value in (("--data-dir", args.data_dir), ("--subset", args.subset),
                        ("--num-samples", args.num_samples), ("--max-epochs", args.max_epochs),
                        ("--grace-period", args.grace_period),
                        ("--reduction-factor", args.reduction_factor)):
        if value is not None:
            flags += [flag, str(value)]
    spec, bundle = search_spec(flags)
    print(machine_line())
    print(f"{spec.dataset}: {len(bundle.train)} train / {len(bundle.val)} val images; "
          f"{spec.num_samples} trials per search, max {spec.max_epochs} epochs, ASHA grace "
          f"{spec.grace_period} rf {spec.reduction_factor}, {args.max_concurrent} concurrent; "
          f"results in {out}", flush=True)

    from kdtune.search.stages.pipeline import start_ray
    from kdtune.search.stages.teacher_cache import local_cache

    t0 = time.perf_counter()
    teacher = ensure_teacher(spec, bundle, out, args.teacher_checkpoint)
    teacher_s = time.perf_counter() - t0
    logits = local_cache(bundle, teacher)
    start_ray(spec)
    kinds = {"kdtune": ("tpe", "asha", "kdtune_asha_tpe"), "random": ("random", "fifo", "random_fifo")}
    if args.no_random:
        del kinds["random"]
    if args.ray_asha:
        kinds["ray-asha"] = ("tpe", "ray-asha", "ray_asha_tpe")
    rows, runs = [], {kind: [] for kind in kinds}
    try:
        for seed in args.seeds:
            common_kw = dict(out_dir=out, teacher_checkpoint=teacher, logits=logits, seed=seed,
                             num_samples=spec.num_samples, max_concurrent=args.max_concurrent)
            for kind, (sampler, scheduler, name) in kinds.items():
                runs[kind].append(run_search(spec, bundle, name=f"{name}_seed{seed}", sampler=sampler,
                                             scheduler=scheduler, **common_kw))
            for kind in kinds:
                r = runs[kind][-1]
                rows.append((seed, kind, r["trials"], r["errors"], r["epochs"], r["wall_s"],
                             100 * r["best_val_acc"], str(r["best_config"])))
    finally:
        import ray

        ray.shutdown()
    print()
    print(f"teacher: {teacher} ({'given' if args.teacher_checkpoint else f'trained in {teacher_s:.0f} s'})")
    print_table(["seed", "search", "trials", "errors", "epochs", "wall s", "best val_acc %",
                 "best config"], rows)
    print(f"val set: {len(bundle.val)} images (1 image = {100 / len(bundle.val):.2f} points)")
    if args.no_random:
        print(f"kdtune medians of {len(args.seeds)} seed(s): epochs {median([r['epochs'] for r in runs['kdtune']])}, "
              f"best val_acc {100 * median([r['best_val_acc'] for r in runs['kdtune']]):.2f}%")
        return
    ratio, wall, gap = versus_random(runs, "kdtune")
    ok = ratio <= EPOCH_TARGET and gap <= ACC_GAP_TARGET
    print(f"ratio kdtune/random epochs {ratio:.2f}x (wall {wall:.2f}x), accuracy gap "
          f"{gap:+.2f} points (random best - kdtune best; median of {len(args.seeds)} seed(s)) "
          f"-> target epochs <= 0.33x and gap <= {ACC_GAP_TARGET}: {'MET' if ok else 'NOT MET'}")
    if args.ray_asha:
        ray_ratio, ray_wall, ray_gap = versus_random(runs, "ray-asha")
        print(f"reference, Ray's ASHAScheduler + TPE: epochs {ray_ratio:.2f}x (wall {ray_wall:.2f}x), "
              f"accuracy gap {ray_gap:+.2f} points")


if __name__ == "__main__":
    main()
