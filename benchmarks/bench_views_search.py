"""A CIFAR-format search's distillation stage: the default (teacher-logit cache of K =
max_epochs fixed views, built by Ray tasks) against `--augment-views online` (the teacher
runs forward on every batch of every trial, the former default).

Two complete kdtune runs (search/run_kd_search.py's own `main`) on CIFAR-10-format files the
script writes (tests/fakedata.py: the real pickled batches, random pixels), same seed and
budget: first `--augment-views online`, which trains the teacher, then the default, which
adopts that teacher (`--teacher-checkpoint`). Figures, from each run's manifest.json:
  - the distill stage's wall time (`wall_s`, the attempt that finished it), and for the
    default run that plus its cache build (`cache_builds`: the cache is work the online run
    does not do, so it is charged to the default);
  - the sum of the distill trials' own seconds (Tune's time_total_s): the compute, apart from
    Ray's scheduling;
  - whether every distillation trial reached the same best val_acc in both runs (the two
    modes train the same pixels against the same teacher logits, up to bf16 rounding on a
    CPU with bf16).
The final stage is off (`--final-seeds 0`): it is not what is compared.

    python -m benchmarks.bench_views_search                        # ~10 min on 2 CPU cores
    python -m benchmarks.bench_views_search --per-batch 300 --num-samples 6 --max-epochs 4
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import machine_line, print_table, run_cli


def stage_figures(experiment: Path) -> dict:
    """Distill wall, cache build seconds, trials' summed seconds and best val_acc per trial."""
    manifest = json.loads((experiment / "manifest.json").read_text())
    distill = manifest["stages"]["distill"]
    trial_seconds, best = 0.0, []
    for result in sorted((experiment / "distill").rglob("result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        trial_seconds += max(r.get("time_total_s", 0.0) for r in rows)
        best.append(max(r["val_acc"] for r in rows))
    builds = [b["seconds"] for b in manifest.get("cache_builds", []) if b.get("views")]
    return {"distill_wall_s": distill["wall_s"], "cache_s": sum(builds), "trial_s": trial_seconds,
            "best_val_accs": sorted(best), "trials": len(best),
            "teacher": manifest["stages"]["teacher"]["best_checkpoint"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-batch", type=int, default=300, help="images per CIFAR-10 data batch (5 batches)")
    p.add_argument("--num-samples", type=int, default=6)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--out", help="data and runs go here (default: a temp dir)")
    args = p.parse_args(argv)

    from tests import fakedata

    out = Path(args.out or tempfile.mkdtemp(prefix="kdtune-bench-views-")).resolve()
    fakedata.write_cifar10(out / "data", n_per_batch=args.per_batch, n_test=200)
    common_flags = ["--dataset", "cifar10", "--data-dir", str(out / "data"), "--students", "cifar_resnet",
                    "--depth", "8:20", "--width", "8:16", "--num-samples", str(args.num_samples),
                    "--baseline-samples", "2", "--max-epochs", str(args.max_epochs), "--grace-period", "2",
                    "--reduction-factor", "3", "--cpus-per-trial", "1", "--max-concurrent", str(args.max_concurrent),
                    "--final-seeds", "0", "--storage-path", str(out / "runs"), "--seed", "0"]
    walls = {"online": run_cli([*common_flags, "--augment-views", "online", "--teacher-epochs", str(args.teacher_epochs),
                            "--name", "online"])}
    online = stage_figures(out / "runs" / "online")
    walls["default"] = run_cli([*common_flags, "--teacher-checkpoint", online["teacher"], "--name", "default"])
    default = stage_figures(out / "runs" / "default")

    print(f"\n{machine_line()}\nCIFAR-10 format, {5 * args.per_batch} training images (val 10%), teacher resnet56 "
          f"{args.teacher_epochs} epochs, {args.num_samples} distillation trials of at most {args.max_epochs} epochs, "
          f"{args.max_concurrent} at once, 1 CPU each; default K = {args.max_epochs} views")
    rows = []
    for name, f in (("--augment-views online", online), ("default (cached views)", default)):
        rows.append([name, f"{f['distill_wall_s']:.0f}", f"{f['cache_s']:.0f}", f"{f['distill_wall_s'] + f['cache_s']:.0f}",
                     f"{f['trial_s']:.0f}", f"{walls['online' if f is online else 'default']:.0f}"])
    print_table(["run", "distill stage wall s", "cache build s", "stage + cache s", "trials' own s", "run wall s"], rows)
    same = online["best_val_accs"] == default["best_val_accs"]
    ratio = (default["distill_wall_s"] + default["cache_s"]) / online["distill_wall_s"]
    print(f"ratio: default / online distill stage wall (cache included) = {ratio:.2f}x (target <= 0.75x); "
          f"trials' own seconds {default['trial_s'] / online['trial_s']:.2f}x; "
          f"every trial's best val_acc identical in both runs: {same}")
    if not same:
        print(f"  online  {online['best_val_accs']}\n  default {default['best_val_accs']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
