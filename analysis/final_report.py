"""Final test-set report: teacher vs best baseline vs best distilled student(s).

    python analysis/final_report.py kdtune_results/<name> [--top 1] [--repeats 50] [--out DIR]

The winners were chosen on the validation split during the search. When the run has a
finished final stage, the models measured are its retrained ones (every config x seed, at
the best-val epoch the stage tested; analysis/final_seeds.py) and a second table gives each
config's test accuracy mean ± sd over seeds and the KD gain with its 95% interval; without
one, the searches' single best trials. The test split is touched only here and by the
final stage. The dataset is rebuilt from the manifest's spec (same name, seed,
val fraction and subset), so the test split is the one the search held out. Each model is
rebuilt from its checkpoint (weights-only load) and reports test accuracy and loss (fp32),
params, reduction vs the teacher, FLOPs per image, CPU latency per image (median, batch 1,
inference mode), GPU latency when CUDA is present, and the KD gain over the best baseline.
For the best student: confusion_matrix.png and a per-class precision / recall / F1 report.
Writes final_report.md / .csv and classification_report.csv to <experiment>/analysis/.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt  # Agg backend: kdtune.analysis.report selects it
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import ConfusionMatrixDisplay, classification_report

from kdtune import datasets
from kdtune import models
from kdtune.analysis.cli import fail, make_parser, parse
from kdtune.analysis.experiment import Experiment
from kdtune.analysis import final_seeds
from kdtune.analysis.report import (fmt_float, fmt_int, fmt_pct, fmt_points, markdown_table,
                             notes_block, save_figure, write_text)
from kdtune.search.input.arg_types import positive_int
from kdtune.trainables.trial_outcome import reduction_pct
from kdtune.trainables.checkpoint import CheckpointError, check_compatible, load_model
from kdtune.trainables.reporting import METRIC
from kdtune.search.record.stage_names import BASELINE, DISTILL, TEACHER

EVAL_BATCH = 512  # no gradients: big batches, few Python iterations


def rebuild_dataset(exp: Experiment) -> datasets.DatasetBundle:
    """The run's dataset with the run's split settings: the same test split, never re-drawn."""
    spec = exp.spec
    bundle = datasets.create_dataset(spec["dataset"], spec.get("data_dir"), val_fraction=spec.get("val_fraction", 0.1),
                                     seed=spec.get("seed", 0), subset=spec.get("subset"),
                                     image_size=spec.get("image_size"))
    recorded = exp.dataset.get("sizes")
    if recorded and recorded != bundle.meta()["sizes"]:
        exp.note(f"split sizes {bundle.meta()['sizes']} differ from the run's {recorded}: different data files?")
    return bundle


def candidates(exp: Experiment, top: int) -> list[dict]:
    """(role, stage, trial, checkpoint): the teacher, the best baseline, the top distilled."""
    trials = exp.trials()
    out = []
    teacher = exp.stage_info(TEACHER)
    t_rows = trials[trials["stage"] == TEACHER]
    t_id = t_rows["trial_id"].iloc[0] if len(t_rows) else None
    out.append({"role": "teacher", "stage": TEACHER, "trial_id": t_id,
                "checkpoint": _existing(teacher.get("best_checkpoint")) or (exp.best_checkpoint(TEACHER, t_id)
                                                                            if t_id else None)})
    for stage, role, k in ((BASELINE, "student baseline", 1), (DISTILL, "student distilled", top)):
        rows = trials[(trials["stage"] == stage) & trials[METRIC].notna()].sort_values(METRIC, ascending=False)
        info = exp.stage_info(stage)
        for rank, tid in enumerate(rows["trial_id"].head(k), start=1):
            # The manifest names the stage winner's checkpoint; other ranks ask Tune for theirs.
            ckpt = _existing(info.get("best_checkpoint")) if info.get("trial_id") == tid else None
            out.append({"role": role if k == 1 else f"{role} #{rank}", "stage": stage, "trial_id": tid,
                        "checkpoint": ckpt or exp.best_checkpoint(stage, tid)})
    for c in out:
        if c["checkpoint"] is None:
            exp.note(f"{c['role']}: no checkpoint found, skipped")
    return [c for c in out if c["checkpoint"] is not None]


def _existing(path: str | None) -> str | None:
    return path if path and Path(path).is_file() else None


@torch.inference_mode()
def predict(model: torch.nn.Module, split: datasets.Split, bundle: datasets.DatasetBundle) -> torch.Tensor:
    """fp32 logits of every row of `split`, in order."""
    model.eval()
    loader = datasets.DeviceLoader(split, batch_size=EVAL_BATCH, device="cpu", mean=bundle.mean, std=bundle.std)
    return torch.cat([model(x).float() for x, _y, _idx in loader])


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int, device: str) -> float:
    """Median wall time of one batch-1 forward pass, in milliseconds, after a warm-up."""
    model = model.to(device).eval()
    x = x.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(5):  # first calls pay for allocation and kernel selection
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()  # CUDA launches are asynchronous: wait for the result
        times.append(1000 * (time.perf_counter() - start))
    model.to("cpu")
    return statistics.median(times)


def measure(c: dict, bundle: datasets.DatasetBundle, repeats: int) -> tuple[dict, torch.Tensor]:
    model, payload = load_model(c["checkpoint"], map_location="cpu")
    check_compatible(payload, bundle.meta())
    logits = predict(model, bundle.test, bundle)
    y = bundle.test.labels
    spec, cfg = payload["model_spec"], payload.get("config", {})
    kw = spec.get("kwargs", {})
    one = next(iter(datasets.DeviceLoader(bundle.test, batch_size=1, mean=bundle.mean, std=bundle.std)))[0]
    row = {"role": c["role"], "trial": c["trial_id"],
           "model": spec["name"] + "".join(f" {k[0]}{kw[k]}" for k in ("depth", "width") if k in kw),
           # T means nothing without a soft term (alpha = 0, or the teacher itself)
           "alpha": cfg.get("alpha"), "temperature": cfg.get("temperature") if cfg.get("alpha") else None,
           "val_acc": (payload.get("metrics") or {}).get(METRIC),
           "test_acc": float((logits.argmax(1) == y).float().mean()),
           "test_loss": float(F.cross_entropy(logits, y)),
           "params": models.count_params(model), "reduction_pct": None,
           "flops": models.flops_per_image(model, bundle.in_shape),
           "cpu_ms": latency_ms(model, one, repeats, "cpu"),
           "gpu_ms": latency_ms(model, one, repeats, "cuda") if torch.cuda.is_available() else None,
           "kd_gain_pts": None, "checkpoint": c["checkpoint"]}
    return row, logits.argmax(1)


def _ms(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{v:.3f}"


def confusion_png(exp: Experiment, y, pred, names: list[str], title: str) -> plt.Figure:
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(4 + 0.45 * n, 14), min(3.5 + 0.45 * n, 13)))
    # Past ~20 classes the numbers in the cells are unreadable: colours only.
    ConfusionMatrixDisplay.from_predictions(y, pred, labels=list(range(n)), display_labels=names, cmap="Blues",
                                            ax=ax, include_values=n <= 20, colorbar=True,
                                            xticks_rotation=45 if max(map(len, names)) > 3 else "horizontal")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{exp.dataset.get('name', '?')} test split: {title}", fontsize=11)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__)
    parser.add_argument("--top", type=positive_int, default=1, help="distilled students evaluated (default 1)")
    parser.add_argument("--repeats", type=positive_int, default=50, help="timed forward passes per latency (default 50)")
    args, exp = parse(parser, argv)
    try:
        bundle = rebuild_dataset(exp)
    except (ValueError, OSError) as exc:  # DatasetError: missing files, with the fix in the message
        fail(parser, f"cannot rebuild the run's dataset: {exc}")

    todo = candidates(exp, args.top)
    final = final_seeds.final_stage(exp)
    if final is not None:  # the retrained models replace the searches' single best trials
        todo = [c for c in todo if c["role"] == "teacher"] + final_seeds.candidates(exp)
    groups = {c["role"]: c["group"] for c in todo if "group" in c}
    rows, preds = [], {}
    for c in todo:
        try:
            row, preds[c["role"]] = measure(c, bundle, args.repeats)
            rows.append(row)
        except CheckpointError as exc:
            exp.note(f"{c['role']}: {str(exc).splitlines()[0]}")
    table = pd.DataFrame(rows, columns=["role", "trial", "model", "alpha", "temperature", "val_acc", "test_acc",
                                        "test_loss", "params", "reduction_pct", "flops", "cpu_ms", "gpu_ms",
                                        "kd_gain_pts", "checkpoint"])
    by_role = table.set_index("role")
    t_params = by_role.at["teacher", "params"] if "teacher" in by_role.index else exp.teacher_params()
    table["reduction_pct"] = [None if r == "teacher" else reduction_pct(p, t_params)
                              for r, p in zip(table["role"], table["params"])]
    if "student baseline" in by_role.index:
        base_acc = by_role.at["student baseline", "test_acc"]
        is_kd = table["role"].str.startswith("student distilled")
        table.loc[is_kd, "kd_gain_pts"] = 100 * (table.loc[is_kd, "test_acc"] - base_acc)
    table.to_csv(exp.output("final_report.csv"), index=False)

    fmts = {"val_acc": fmt_pct, "test_acc": fmt_pct, "test_loss": fmt_float, "params": fmt_int,
            "reduction_pct": fmt_points, "flops": fmt_int, "cpu_ms": _ms, "gpu_ms": _ms,
            "kd_gain_pts": lambda v: "" if v is None or pd.isna(v) else f"{v:+.2f} pts",
            "alpha": fmt_float, "temperature": fmt_float}
    heads = {"temperature": "T", "reduction_pct": "reduction", "cpu_ms": "CPU ms/img", "gpu_ms": "GPU ms/img",
             "kd_gain_pts": "KD gain (test)"}
    seeds = pd.DataFrame({r: [fmt_pct(a), fmt_int(p)] for r, a, p in zip(table["role"], table["test_acc"],
                                                                      table["params"])}, index=["test accuracy", "params"])
    lines = [f"# Final report (TEST split): {exp.title}", "",
             f"{len(bundle.test)} test images, {bundle.num_classes} classes; winners were picked on the validation "
             f"split. Latency: batch 1, median of {args.repeats}, {torch.get_num_threads()} CPU threads"
             f"{', CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no CUDA device'}. "
             f"git `{exp.manifest.get('git_revision')}`.", "", notes_block(exp.notes),
             markdown_table(table.drop(columns=["checkpoint"]), fmts, heads), "",
             markdown_table(seeds.reset_index(names=""), {}), ""]
    best = next((r for r in table["role"] if r.startswith("student distilled")),
                "student baseline" if "student baseline" in preds else None)
    pooled = [best] if best is not None else []
    if groups:
        configs = final_seeds.per_config(table, groups, twin_of=final_seeds.twins(exp))
        configs.to_csv(exp.output("final_seeds.csv"), index=False)
        shown = configs.assign(val=[final_seeds.mean_sd_text(m, s) for m, s in zip(configs["val_acc_mean"], configs["val_acc_sd"])],
                               test=[final_seeds.mean_sd_text(m, s) for m, s in zip(configs["test_acc_mean"], configs["test_acc_sd"])],
                               gain=[final_seeds.gain_text(r) for _, r in configs.iterrows()],
                               twin=[final_seeds.gain_text(r, "twin") for _, r in configs.iterrows()])
        lines += [f"## Final stage: each config over {len(final.get('seeds', []))} seeds", "",
                  markdown_table(shown[["config", "model", "seeds", "val", "test", "params", "flops", "cpu_ms", "twin", "gain"]],
                                 {"params": fmt_int, "flops": fmt_int, "cpu_ms": _ms},
                                 {"val": "val_acc (mean ± sd)", "test": "test_acc (mean ± sd)", "cpu_ms": "CPU ms/img",
                                  "twin": "KD gain over its undistilled twin, 95% CI (paired t by seed)",
                                  "gain": "KD gain over the best baseline, 95% CI (Welch's t)"}), ""]
        # Per-class report and confusion matrix: the stage's headline config, pooled over its seeds.
        best = final.get("headline")
        pooled = [r for r in table["role"] if groups.get(r) == best and r in preds]
        if not pooled:
            best = None
    if best is not None:
        names = [str(n) for n in (exp.dataset.get("class_names") or bundle.class_names)]
        y = np.tile(bundle.test.labels.numpy(), len(pooled))
        pred = torch.cat([preds[r] for r in pooled]).numpy()
        report = classification_report(y, pred, labels=list(range(len(names))), target_names=names,
                                       output_dict=True, zero_division=0)
        accuracy = report.pop("accuracy")  # a bare number in sklearn's dict: its own row below
        per_class = pd.DataFrame(report).T.reset_index(names="class")
        per_class.loc[len(per_class)] = {"class": "accuracy", "f1-score": accuracy, "support": len(y)}
        per_class.to_csv(exp.output("classification_report.csv"), index=False)
        over = f", pooled over {len(pooled)} seeds" if groups else ""
        lines += [f"## Per-class report: {best}{over}", "",
                  markdown_table(per_class, {"precision": fmt_float, "recall": fmt_float, "f1-score": fmt_float,
                                             "support": fmt_int}), ""]
        who = table.set_index("role").loc[pooled[0]]
        title = f"{best} {who['model']}" + (over if groups else f" (trial {who['trial']})")
        save_figure(confusion_png(exp, y, pred, names, title), exp.output("confusion_matrix.png"))
    write_text(exp.output("final_report.md"), "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
