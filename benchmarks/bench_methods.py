"""KD methods as a searched dimension vs a KD-only search, at the same trial budget.

Two complete kdtune runs (search/run_kd_search.py's own `main`, so every stage the pipeline
has runs, a final stage included where the tree has one), same preset, seed and budget:
  - kd-only:  --methods kd (today's search: Hinton KD, alpha and T searched);
  - methods:  --methods kd,dkd,dist (the method is a categorical dimension, each method with
    its own conditional hyperparameters from the preset), adopting the first run's teacher
    (--teacher-checkpoint), so both distil from the same teacher.
Measured per run: the distill stage's best val_acc and config (which method won), its
wall time, the test accuracy of its best checkpoint (one evaluation of one model: a
figure, not a model choice, which is made on val), and each method's best trial in the
methods run (analysis/best_trials.py's per-method table). Where the manifest has a `final`
stage, its test mean and sd over seeds are reported as well.

    python -m benchmarks.bench_methods                                  # digits, a few minutes
    python -m benchmarks.bench_methods --dataset mnist --data-dir ./data
    python -m benchmarks.bench_methods --methods kd,dkd,dist,mse --num-samples 24 -- --max-epochs 12
(flags after `--` go to both runs unchanged.)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import machine_line, print_table, run_cli
from kdtune.search.record.stats import MeanSd
from kdtune.trainables.losses import all_hyperparameters


TEACHER_FLAGS = ("--teacher", "--teacher-epochs", "--teacher-weights", "--teacher-augment")


def without_teacher_flags(flags: list[str]) -> list[str]:
    """`flags` less the options of a teacher kdtune trains (each with its value)."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in TEACHER_FLAGS:
            skip = True
        elif not flag.startswith(tuple(f + "=" for f in TEACHER_FLAGS)):
            out.append(flag)
    return out


def test_accuracy(experiment: Path, checkpoint: str) -> float:
    """Top-1 accuracy of one checkpoint on the run's own test split."""
    import torch

    from kdtune.analysis.experiment import Experiment
    from kdtune.analysis.final_report import predict, rebuild_dataset
    from kdtune.trainables.checkpoint import load_model

    exp = Experiment.open(experiment)
    bundle = rebuild_dataset(exp)
    model, _ = load_model(checkpoint)
    with torch.inference_mode():
        pred = predict(model, bundle.test, bundle).argmax(1)
    return float((pred == bundle.test.labels).float().mean())


def summarise(experiment: Path, wall: float) -> dict:
    from kdtune.search.record.manifest import Manifest

    stages = Manifest.load(experiment).data["stages"]
    distill = stages["distill"]
    cfg = distill["config"]
    out = {"wall_s": wall, "best_val_acc": distill["metrics"]["val_acc"],
           "method": cfg.get("kd_method", "kd"), "params": distill["metrics"].get("params"),
           "config": {k: v for k, v in cfg.items() if k in (
               "model", "depth", "width", "kd_method", "alpha", "temperature", "lr", "weight_decay", *all_hyperparameters())},
           "test_acc_best_checkpoint": test_accuracy(experiment, distill["best_checkpoint"]),
           "final": stages.get("final")}
    return out


def headline_row(final: dict | None) -> dict | None:
    """The final stage's headline row (the distilled config with the best mean val_acc)."""
    if not final or final.get("status") != "done":
        return None
    return next((r for r in final.get("results", []) if r["role"] == final.get("headline")), None)


def final_cell(final: dict | None) -> str:
    row = headline_row(final)
    if row is None:
        return "no final stage (--final-seeds 0?)"
    if row.get("test_acc_mean") is None:
        return f"{row['role']}: no test figure"
    method = row.get("kd_method") or "kd"
    return (f"{row['role']} {method} {row.get('model')} {row.get('depth')}x{row.get('width')}: "
            f"{MeanSd(row['test_acc_mean'], row.get('test_acc_sd')).text()} ({row['seeds']} seeds)")


def headline_gap(final: dict | None, reference: dict | None) -> dict | None:
    """Welch's interval on the two headlines' per-seed test accuracies (methods - kd-only)."""
    from kdtune.search.record.stats import welch_interval

    a, b = headline_row(final), headline_row(reference)
    if a is None or b is None:
        return None
    tests = [[r["test_acc"] for r in row["runs"] if r.get("test_acc") is not None] for row in (a, b)]
    return welch_interval(*tests) if all(tests) else None


def per_method(experiment: Path) -> list[dict]:
    from kdtune.analysis.best_trials import best_per_method
    from kdtune.analysis.experiment import Experiment

    table = best_per_method(Experiment.open(experiment).trials(("distill",)))
    return table.to_dict("records")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--methods", default="kd,dkd,dist", help="the methods run's --methods")
    p.add_argument("--num-samples", type=int, help="distillation trials of each run (default: the preset's)")
    p.add_argument("--baseline-samples", type=int, default=2,
                   help="baseline trials of each run (not compared here; kept small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_methods_results", help="storage path of both runs")
    p.add_argument("--kd-only", help="reuse this finished kd-only run (a folder an earlier call made)")
    p.add_argument("extra", nargs="*", help="flags after -- for both runs")
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common_flags = ["--dataset", args.dataset, "--seed", str(args.seed), "--storage-path", str(out),
                    "--baseline-samples", str(args.baseline_samples), *args.extra]
    if args.data_dir:
        common_flags += ["--data-dir", args.data_dir]
    if args.num_samples:
        common_flags += ["--num-samples", str(args.num_samples)]
    methods_dir = out / f"methods-{stamp}"
    if args.kd_only:  # a finished kd-only run of an earlier call: only the methods run is new
        kd_dir = Path(args.kd_only).resolve()
        walls = {"kd-only": json.loads((kd_dir / "bench_wall.json").read_text())["wall_s"]}
    else:
        kd_dir = out / f"kd-only-{stamp}"
        walls = {"kd-only": run_cli([*common_flags, "--methods", "kd", "--name", kd_dir.name])}
        (kd_dir / "bench_wall.json").write_text(json.dumps({"wall_s": walls["kd-only"]}))
    from kdtune.search.record.manifest import Manifest

    teacher = Manifest.load(kd_dir).teacher_checkpoint()
    # The methods run adopts that teacher, so flags that shape a teacher kdtune trains would be
    # refused there (an option accepted and ignored is an error).
    walls["methods"] = run_cli([*without_teacher_flags(common_flags), "--methods", args.methods,
                            "--teacher-checkpoint", teacher, "--name", methods_dir.name])
    results = {"kd-only": summarise(kd_dir, walls["kd-only"]), "methods": summarise(methods_dir, walls["methods"])}
    results["per_method"] = per_method(methods_dir)

    print(f"\n{machine_line()}\n{args.dataset}, seed {args.seed}, same trial budget; methods run: {args.methods}")
    rows = []
    for name in ("kd-only", "methods"):
        r = results[name]
        rows.append([name, f"{100 * r['best_val_acc']:.2f}%", r["method"], f"{100 * r['test_acc_best_checkpoint']:.2f}%",
                     f"{r['params']:,}" if r["params"] else "-", f"{r['wall_s']:.0f}", final_cell(r["final"])])
    print_table(["run", "distill best val_acc", "winning method", "test acc (best ckpt)", "params",
                 "run wall s", "final stage: headline, test mean ± sd"], rows)
    print("\nmethods run, best trial per method:")
    print_table(["method", "trials", "best val_acc", "median val_acc", "settings", "width", "params"],
                [[m["kd_method"], m["trials"], f"{100 * m['val_acc']:.2f}%", f"{100 * m['median_val_acc']:.2f}%",
                  m["settings"], m["width"], f"{int(m['params']):,}"] for m in results["per_method"]])
    gain = results["methods"]["best_val_acc"] - results["kd-only"]["best_val_acc"]
    print(f"\nmethods - kd-only: best val_acc {100 * gain:+.2f} points; test (best ckpt) "
          f"{100 * (results['methods']['test_acc_best_checkpoint'] - results['kd-only']['test_acc_best_checkpoint']):+.2f} points")
    final_gap = headline_gap(results["methods"]["final"], results["kd-only"]["final"])
    if final_gap is not None:
        results["final_gap"] = final_gap
        print(f"final stage, methods - kd-only headline test acc: {100 * final_gap['diff']:+.2f} points"
              + (f", 95% CI [{100 * final_gap['low']:+.2f}, {100 * final_gap['high']:+.2f}] ({final_gap['method']})"
                 if final_gap.get("low") is not None else " (no interval: fewer than 2 seeds)"))
    (out / f"bench_methods-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
