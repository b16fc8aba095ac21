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


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def mean_sd(row: dict | None) -> str:
    if row is None or row.get("test_acc_mean") is None:
        return "-"
    sd = row.get("test_acc_sd")
    return f"{pct(row['test_acc_mean'])} ± {pct(sd) if sd is not None else '?'}"


def gain(g: dict | None) -> str:
    if not g or g.get("diff") is None:
        return "-"
    if g.get("low") is None:
        return f"{100 * g['diff']:+.2f} (no interval: {g.get('reason')})"
    return f"{100 * g['diff']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"


def hyper(cfg: dict, method: str) -> str:
    """The winning config's own method settings (trainables/losses' method_settings)."""
    from kdtune.trainables.losses.registry import method_settings

    return method_settings(method, cfg)


def describe(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text())
    stages = manifest["stages"]
    final = stages.get("final") or {}
    wall = sum(float(s.get("wall_s") or 0) for s in stages.values())
    wall += sum(float(b.get("seconds") or 0) for b in manifest.get("cache_builds", []))
    out = {"experiment": path.name, "wall_s": wall, "status": final.get("status")}
    rows = final.get("results") or []
    head = next((r for r in rows if r["role"] == final.get("headline")), None)
    base = next((r for r in rows if r.get("source_stage") == "baseline"), None)
    twin = next((r for r in rows if head is not None and r["role"] == head.get("twin")), None)
    if head is None:
        return out
    method = head.get("kd_method") or "kd"
    cand = next((c for c in final.get("candidates", []) if c["role"] == head["role"]), {})
    out.update(method=method, model=f"{head.get('model')} {head.get('depth')}/{head.get('width')}",
               params=head.get("params"), flops=head.get("flops"), seeds=head.get("seeds"),
               distilled=mean_sd(head), twin=mean_sd(twin), gain_twin=gain(head.get("kd_gain_twin")),
               baseline=mean_sd(base), baseline_model=None if base is None else
               f"{base.get('model')} {base.get('depth')}/{base.get('width')}",
               gain_baseline=gain(head.get("kd_gain_test")), settings=hyper(cand.get("config", {}), method),
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
