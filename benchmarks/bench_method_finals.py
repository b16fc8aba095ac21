"""Final-stage table per KD method: one finished kdtune run per method, the same teacher.

Reads finished experiments (each a `--methods M` search adopting one teacher through
`--teacher-checkpoint`, the same preset, seed, split and trial budget) and prints one row per
run from its manifest's final stage: the best distilled config retrained over the final seeds
(test accuracy mean ± sd, each seed tested once on the whole test split), its undistilled
twin (same architecture, recipe and seeds, cross-entropy only) and the gain over it (paired t
interval on the per-seed differences), the best baseline config and the gain over it
(Welch's t interval), params, FLOPs per image and the run's wall time (its stages' `wall_s`
plus the teacher-logit cache builds; the teacher was trained once, elsewhere).

    python -m benchmarks.bench_method_finals RESULTS/m_kd RESULTS/m_dkd ...   # Markdown table
    python -m benchmarks.bench_method_finals RESULTS/m_* --json out.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import run_wall_s
from kdtune.search.record.final_summary import _gain
from kdtune.search.record.stage_names import BASELINE, FINAL
from kdtune.search.record.stats import MeanSd
from kdtune.trainables.losses import method_settings


def mean_sd(row: dict | None) -> str:
    """A final-table row's test accuracy, "80.62 ± 0.28" (percent)."""
    return "-" if row is None else MeanSd(row.get("test_acc_mean"), row.get("test_acc_sd")).text(unit="", missing="-")


def describe(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text())
    final = manifest["stages"].get(FINAL) or {}
    out = {"experiment": path.name, "wall_s": run_wall_s(manifest), "status": final.get("status")}
    rows = final.get("results") or []
    head = next((r for r in rows if r["role"] == final.get("headline")), None)
    if head is None:
        return out
    base = next((r for r in rows if r.get("source_stage") == BASELINE), None)
    twin = next((r for r in rows if r["role"] == head.get("twin")), None)
    method = head.get("kd_method") or "kd"
    cand = next((c for c in final.get("candidates", []) if c["role"] == head["role"]), {})
    out.update(method=method, model=f"{head.get('model')} {head.get('depth')}/{head.get('width')}",
               params=head.get("params"), flops=head.get("flops"), seeds=head.get("seeds"),
               distilled=mean_sd(head), twin=mean_sd(twin), gain_twin=_gain(head.get("kd_gain_twin"), unit=""),
               baseline=mean_sd(base), baseline_model=None if base is None else
               f"{base.get('model')} {base.get('depth')}/{base.get('width')}",
               gain_baseline=_gain(head.get("kd_gain_test"), unit=""),
               settings=method_settings(method, cand.get("config", {})),
               search_val=head.get("search_val_acc"),
               runs={r["role"]: [(x["seed"], x["test_acc"]) for x in r["runs"]] for r in rows},
               diverged=sum(r.get("diverged") or 0 for r in rows), failed=sum(r.get("failed") or 0 for r in rows))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+", type=Path)
    p.add_argument("--json", type=Path, help="also write every row (per-seed test accuracies included) here")
    args = p.parse_args(argv)
    rows = [describe(e) for e in args.experiments]
    print("| method | student (depth/width) | params | FLOPs/img | distilled test % (mean ± sd) | twin test % | "
          "gain over twin, pts [95% paired t] | best baseline | baseline test % | gain over baseline, pts "
          "[95% Welch] | method settings | run wall s |")
    print("|" + "---|" * 12)
    for r in rows:
        if "method" not in r:
            print(f"| {r['experiment']} | final stage {r.get('status')} |" + " |" * 10)
            continue
        print(f"| {r['method']} | {r['model']} | {r['params']:,.0f} | {r['flops'] / 1e6:.2f} M | {r['distilled']} | "
              f"{r['twin']} | {r['gain_twin']} | {r['baseline_model']} | {r['baseline']} | {r['gain_baseline']} | "
              f"{r['settings']} | {r['wall_s']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
