"""Export a searched student as ONNX, torch.export and TorchScript files, with a model card.

    python analysis/export.py kdtune_results/<name> [--stage final|distill] [--rank N] [--out DIR]

Picks the stage's N-th best student by validation accuracy (never by test), rebuilds it from
its checkpoint and writes model.onnx, model.pt2 (torch.export) and model.torchscript.pt, each
with a dynamic batch dimension, plus model_card.json: classes, input shape and normalisation,
params, FLOPs, val and test accuracy per seed, KD config, teacher, git revisions, and latency
at batch 1 and 64 on this machine. Trials that differ only in their seed are one config
(the final stage retrains each config over seeds): configs are ranked by mean val_acc and
the config's best-val seed is exported.

Every file is read back with its own runtime and run on the whole test split; its logits
must match the checkpoint's within |a - b| <= 1e-4 + 1e-4 |b| with the same top-1 class
(near-ties excepted). Max abs difference and top-1 agreement are printed. Only a verified
export lands in DIR (default <experiment>/export/<stage>-rank<N>); a failing one is left in
DIR-unverified for inspection, with exit code 1. `--stage` defaults to final once the
run's final stage is done, else distill.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdtune import datasets
from kdtune import models
from kdtune.analysis import exporters
from kdtune.search.record.stats import MeanSd
from kdtune.analysis.cli import fail, make_parser, parse
from kdtune.analysis.experiment import Experiment, distils
from kdtune.analysis.final_report import rebuild_dataset
from kdtune.search.input.arg_types import positive_int
from kdtune.search.record.manifest import git_revision
from kdtune.trainables.checkpoint import CheckpointError, check_compatible, load_model
from kdtune.trainables.reporting import METRIC
from kdtune.search.record.stage_names import DISTILL, FINAL, TEACHER

STAGE_CHOICES = (FINAL, DISTILL)
EVAL_BATCH = 256  # rows per call when verifying; the test split's last batch is shorter
LATENCY_BATCHES = (1, 64)
CARD = "model_card.json"
# Config keys that are not the distillation method: how the student was trained, what it is,
# which data it saw. Everything else a trial's config holds (alpha, temperature, a loss name
# and its settings) is reported as the KD config, so new KD settings need no change here.
TRAINING_KEYS = ("batch_size", "epochs", "lr", "momentum", "nesterov", "optimizer", "schedule",
                 "weight_decay", "seed", "precision", "track_grad_norms")
MODEL_KEYS = ("model", "depth", "width", "model_kwargs")
DATA_KEYS = ("dataset", "data_dir", "subset", "val_fraction", "augment_views")


class ExportError(ValueError):
    """The experiment has no student to export as asked; the message is one line."""


def rank_configs(exp: Experiment, stage: str) -> list[list[dict[str, Any]]]:
    """The stage's configs, best mean val_acc first; each a list of its seeds' trials
    (trial_id, seed, val_acc, config), best val_acc first."""
    if stage not in exp.manifest.get("stages", {}):
        recorded = ", ".join(exp.manifest.get("stages", {})) or "none"
        raise ExportError(f"this experiment has no {stage} stage (its manifest records: {recorded})")
    records = exp.records(stage)
    if not records:
        raise ExportError(f"stage {stage} has no trials yet (status {exp.status(stage)})")
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec.val_acc is None:
            continue  # no finished epoch yet, or no finite one
        config = dict(rec.config)
        key = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)
        groups.setdefault(key, []).append({"trial_id": rec.trial_id, "seed": config.get("seed"),
                                           "val_acc": rec.val_acc, "config": config})
    if not groups:
        raise ExportError(f"stage {stage}: no trial has reported a {METRIC} yet")
    ranked = [sorted(g, key=lambda t: -t["val_acc"]) for g in groups.values()]
    return sorted(ranked, key=lambda g: -statistics.fmean(t["val_acc"] for t in g))


def checkpoint_of(exp: Experiment, stage: str, trial_id: str) -> str:
    """The trial's best-epoch checkpoint: the manifest's for the stage winner, else Tune's."""
    info = exp.stage_info(stage)
    named = info.get("best_checkpoint") if info.get("trial_id") == trial_id else None
    path = named if named and Path(named).is_file() else exp.best_checkpoint(stage, trial_id)
    if path is None or not Path(path).is_file():
        raise ExportError(f"stage {stage}, trial {trial_id}: no checkpoint on disk")
    return path


def normalised(split: datasets.Split, bundle: datasets.DatasetBundle) -> np.ndarray:
    """The split's images as the model sees them: (u8 / 255 - mean) / std, float32 NCHW."""
    loader = datasets.DeviceLoader(split, batch_size=EVAL_BATCH, device="cpu", mean=bundle.mean, std=bundle.std)
    return torch.cat([x for x, _y, _idx in loader]).numpy()


@torch.inference_mode()
def eager_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The checkpoint's own fp32 logits, in eval mode: the reference every export must match."""
    model.eval()
    return exporters.run_batched(lambda b: model(torch.from_numpy(b)).numpy(), x, EVAL_BATCH)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def seed_rows(exp: Experiment, stage: str, group: list[dict[str, Any]], bundle: datasets.DatasetBundle,
              x_test: np.ndarray, y_test: np.ndarray) -> list[dict[str, Any]]:
    """Val accuracy (the trial's best epoch) and test accuracy of every seed of the config."""
    rows = []
    for trial in group:
        model, payload = load_model(checkpoint_of(exp, stage, trial["trial_id"]))
        check_compatible(payload, bundle.meta())
        rows.append({"seed": trial["seed"], "trial_id": trial["trial_id"], "val_acc": trial["val_acc"],
                     "test_acc": accuracy(eager_logits(model, x_test), y_test)})
    return rows


def teacher_card(exp: Experiment, config: dict[str, Any]) -> dict[str, Any] | None:
    """The model the student was distilled from (its config's teacher checkpoint: the
    search's teacher, or an assistant in a chain); None for an undistilled student."""
    if not distils(config):
        return None
    path = config.get("teacher_checkpoint") or exp.stage_info(TEACHER).get("best_checkpoint")
    card: dict[str, Any] = {"checkpoint": path}
    try:
        teacher, payload = load_model(path)
        spec = payload["model_spec"]
        card.update(model=spec["name"], kwargs=spec.get("kwargs", {}), params=models.count_params(teacher),
                    val_acc=(payload.get("metrics") or {}).get(METRIC))
    except (CheckpointError, TypeError):  # a results folder copied from another machine
        metrics = exp.teacher_metrics()
        card.update(model=exp.spec.get("teacher"), params=metrics.get("params"), val_acc=metrics.get(METRIC),
                    note="teacher checkpoint not readable here; figures from the manifest")
    return card


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    # A shared machine's load moves latency medians (threads wait for preempted siblings).
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def latency(runners: dict[str, exporters.Runner], x_test: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """Median and fastest ms per batch of each runtime at batch 1 and 64 (test images, tiled
    if fewer)."""
    out = {}
    for fmt, run in runners.items():
        out[fmt] = {}
        for b in LATENCY_BATCHES:
            batch = np.ascontiguousarray(np.resize(x_test, (b, *x_test.shape[1:])))
            median, fastest = exporters.timings_ms(lambda: run(batch), repeats)
            out[fmt].update({f"batch_{b}_ms": median, f"batch_{b}_fastest_ms": fastest})
    return out


def split_config(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {"model": {}, "training": {}, "data": {}, "distillation": {}}
    for k, v in sorted(config.items()):
        if k == "teacher_checkpoint":
            continue  # reported under "teacher"
        part = ("model" if k in MODEL_KEYS else "training" if k in TRAINING_KEYS
                else "data" if k in DATA_KEYS else "distillation")
        parts[part][k] = v
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, __file__, out_default="<experiment_dir>/export/<stage>-rank<N>")
    parser.add_argument("--stage", choices=STAGE_CHOICES, default=None,
                        help="stage to take the student from (default: final once the run's final stage is done, else distill)")
    parser.add_argument("--rank", type=positive_int, default=1,
                        help="export the N-th best config by mean val_acc (default 1)")
    parser.add_argument("--repeats", type=positive_int, default=30,
                        help="timed runs per latency figure (default 30)")
    args, exp = parse(parser, argv)
    missing = exporters.missing_runtimes()
    if missing:
        fail(parser, f"{', '.join(missing)} not installed: pip install 'kdtune[export]' "
                     "(in a checkout: pip install -e '.[export]')")
    # A final stage that is planned or still running has not confirmed its winners yet.
    stage = args.stage or (FINAL if exp.status(FINAL) == "done" else DISTILL)

    # Everything that can be wrong with the input is found before anything is written.
    try:
        configs = rank_configs(exp, stage)
        if args.rank > len(configs):
            raise ExportError(f"--rank {args.rank}: stage {stage} has only {len(configs)} configs with a {METRIC}")
        group = configs[args.rank - 1]
        chosen = group[0]
        ckpt = checkpoint_of(exp, stage, chosen["trial_id"])
        model, payload = load_model(ckpt)
        bundle = rebuild_dataset(exp)
        check_compatible(payload, bundle.meta())
    except (ExportError, CheckpointError) as exc:
        fail(parser, f"{exc}")
    except (ValueError, OSError) as exc:  # DatasetError: missing files, with the fix in the message
        fail(parser, f"cannot rebuild the run's dataset: {exc}")
    model.eval()
    out = args.out or exp.path / "export" / f"{stage}-rank{args.rank}"
    staging = out.with_name(out.name + "-unverified")
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as exc:
        fail(parser, f"cannot write to {staging.parent}: {exc.strerror or exc}")

    x_test, y_test = normalised(bundle.test, bundle), bundle.test.labels.numpy()
    reference = eager_logits(model, x_test)
    start = time.perf_counter()
    paths = exporters.write_all(model, bundle.in_shape, staging)
    export_s = time.perf_counter() - start
    runners = exporters.load_runners(paths, threads=torch.get_num_threads())
    checks = {fmt: exporters.compare(exporters.run_batched(run, x_test, EVAL_BATCH), reference)
              for fmt, run in runners.items()}
    passed = all(c.passed for c in checks.values())

    seeds = seed_rows(exp, stage, group, bundle, x_test, y_test)
    spec, config = payload["model_spec"], chosen["config"]
    parts = split_config(config)
    card = {
        "format": "kdtune-model-card", "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "experiment": str(exp.path), "stage": stage, "rank": args.rank, "trial_id": chosen["trial_id"],
        "checkpoint": ckpt, "files": {fmt: p.name for fmt, p in paths.items()},
        # The checkpoint's own split record (datasets/split_identity.py): a search that adopts
        # this file as its teacher checks it for having trained on that run's validation images.
        "split": payload.get("split"),
        "model": {"name": spec["name"], "kwargs": spec.get("kwargs", {}), "params": models.count_params(model),
                  "flops_per_image": models.flops_per_image(model, bundle.in_shape)},
        "dataset": bundle.name,
        "classes": [str(c) for c in bundle.class_names],
        "input": {"name": exporters.INPUT_NAME, "shape": ["batch", *bundle.in_shape], "dtype": "float32",
                  "layout": "NCHW", "pixels": "uint8 0..255 per channel",
                  "normalisation": {"formula": "x = (pixels / 255 - mean) / std, per channel",
                                    "mean": list(bundle.mean), "std": list(bundle.std)}},
        "output": {"name": exporters.OUTPUT_NAME, "shape": ["batch", bundle.num_classes],
                   "meaning": "unnormalised class scores in `classes` order; softmax gives probabilities"},
        "accuracy": {"val_acc": chosen["val_acc"], "test_acc": next(s["test_acc"] for s in seeds
                                                                   if s["trial_id"] == chosen["trial_id"]),
                     "val_acc_over_seeds": MeanSd.of(s["val_acc"] for s in seeds).as_dict(),
                     "test_acc_over_seeds": MeanSd.of(s["test_acc"] for s in seeds).as_dict(),
                     "seeds": seeds, "best_epoch": payload.get("epoch"),
                     "split": {"seed": exp.spec.get("seed"), "val_fraction": exp.spec.get("val_fraction"),
                               "subset": exp.spec.get("subset"), "sizes": bundle.meta()["sizes"]}},
        "distillation": {**parts["distillation"], "distilled": distils(config)},
        "training": parts["training"],
        "teacher": teacher_card(exp, config),
        "git_revision": {"search": exp.manifest.get("git_revision"), "export": git_revision()},
        "latency": {"machine": machine(), "repeats": args.repeats, "unit": "ms per batch (median and fastest run)",
                    **latency(runners, x_test, args.repeats)},
        "verification": {"split": "test", "images": int(len(x_test)),
                         "tolerance": f"|exported - checkpoint| <= {exporters.ATOL:g} + {exporters.RTOL:g} "
                                      "* |checkpoint| per logit; same top-1 except near-ties",
                         "passed": passed, **{fmt: c.as_dict() for fmt, c in checks.items()}},
        "export_s": export_s,
    }
    (staging / CARD).write_text(json.dumps(card, indent=2, default=str) + "\n")
    if passed:
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    _print_report(card, out if passed else staging, len(x_test))
    return 0 if passed else 1


def _print_report(card: dict[str, Any], folder: Path, n: int) -> None:
    m, acc = card["model"], card["accuracy"]
    print(f"{card['stage']} rank {card['rank']}: trial {card['trial_id']}, {m['name']} {m['kwargs']}, "
          f"{m['params']:,} params, {m['flops_per_image']:,} FLOPs/image; val {100 * acc['val_acc']:.2f}%, "
          f"test {100 * acc['test_acc']:.2f}%")
    print(f"verified on {n} test images ({card['verification']['tolerance']}):")
    for fmt in exporters.FILES:
        c, lat = card["verification"][fmt], card["latency"][fmt]
        print(f"  {fmt:<12} max abs diff {c['max_abs_diff']:.2e}  top-1 agreement {100 * c['top1_agreement']:.2f}%"
              f"  {'ok' if c['passed'] else 'FAILED'}  ms median (fastest): batch 1 {lat['batch_1_ms']:.3f} "
              f"({lat['batch_1_fastest_ms']:.3f}), batch 64 {lat['batch_64_ms']:.3f} ({lat['batch_64_fastest_ms']:.3f})")
    if card["verification"]["passed"]:
        print(f"wrote {folder}/ ({', '.join(card['files'].values())}, {CARD})")
    else:
        print(f"export FAILED verification: do not deploy; files kept in {folder}/", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
