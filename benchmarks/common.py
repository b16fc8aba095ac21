"""Helpers shared by the benchmarks: fake data, teacher checkpoints, medians, tables.

Benchmarks are measured comparisons, not timed tests: both sides run in the same process,
interleaved (A, B, A, B, ...), and the figure quoted is the median over repeats, so a noisy
machine (other jobs on the same 2 cores) slows both sides alike.

    from benchmarks.common import random_bundle, save_teacher, median, print_table
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

_ROOT = Path(__file__).resolve().parents[1]  # the repository: MNIST_DIR below is its ./data

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# Real MNIST (torchvision layout: MNIST/raw/*-ubyte[.gz]): by default the search's own data
# root, ./data of the repository; every benchmark that reads it takes --data-dir to point elsewhere.
MNIST_DIR = str(_ROOT / "data")


# ---- data ---------------------------------------------------------------------------------
def random_bundle(shape: tuple[int, int, int], n_train: int, augment: str, classes: int = 10,
                  n_val: int | None = None, seed: int = 0):
    """A DatasetBundle of random uint8 images (timing does not depend on pixel values).

    Named "digits" (always registered) so trainable configs validate; only shapes matter.
    """
    from kdtune.datasets.bundle import DatasetBundle, Split

    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                     torch.randint(0, classes, (n,), generator=g))

    c = shape[0]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if c == 3 else ((0.5,) * c, (0.25,) * c)
    return DatasetBundle("digits", split(n_train), split(n_val or max(n_train // 10, 1)),
                         split(16), tuple(map(str, range(classes))), mean, std, augment)


def mnist_present(root: str = MNIST_DIR) -> bool:
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / f"{name}-idx{k}-ubyte.gz").exists() or (raw / f"{name}-idx{k}-ubyte").exists()
               for name, k in (("train-images", 3), ("train-labels", 1),
                               ("t10k-images", 3), ("t10k-labels", 1)))


class HWCDataset(Dataset):
    """The seed repos' per-sample path: one PIL image per __getitem__, transformed alone.

    images: uint8 (N, H, W, C) or (N, H, W) numpy array (the CIFAR pickle / MNIST layout).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        # (H, W) uint8 -> mode L, (H, W, 3) -> RGB, as torchvision's MNIST / CIFAR10 get them
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def split_to_numpy(split) -> tuple[np.ndarray, np.ndarray]:
    """A kdtune Split (N, C, H, W) as the HWC (or HW for 1 channel) arrays seed code reads."""
    images = split.images.permute(0, 2, 3, 1).numpy()
    if images.shape[-1] == 1:
        images = images[..., 0]
    return np.ascontiguousarray(images), split.labels.numpy()


# ---- models and checkpoints ---------------------------------------------------------------
def save_teacher(model_name: str, kwargs: dict, bundle, directory: str | None = None,
                 model: torch.nn.Module | None = None) -> str:
    """Save a (random-weight unless `model` is given) teacher as a kdtune checkpoint dir."""
    from kdtune import models
    from kdtune.trainables import checkpoint

    directory = directory or tempfile.mkdtemp(prefix="kdtune-bench-teacher-")
    model = model or models.create_model(model_name, bundle.num_classes, bundle.in_shape, **kwargs)
    checkpoint.save_checkpoint(directory, model=model, config={}, dataset_meta=bundle.meta(),
                               epoch=0, metrics={})
    return directory


# ---- timing and printing ------------------------------------------------------------------
def train_step(model, opt, x, y) -> None:
    """One optimiser step on cross-entropy: the plain training step benchmarks time on both
    sides (bench_image_store, bench_optim)."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_wall_s(manifest: dict) -> float:
    """A finished run's wall time from its manifest: every stage's `wall_s` (the attempt that
    finished it) plus the teacher-logit cache builds (an adopted teacher has no stage time)."""
    wall = sum(float(s.get("wall_s") or 0) for s in manifest["stages"].values())
    return wall + sum(float(b.get("seconds") or 0) for b in manifest.get("cache_builds", []))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleave(variants: dict[str, Callable[[int], float]], repeats: int,
               log: Callable[[str], None] | None = print) -> dict[str, list[float]]:
    """Run every variant once per repeat, in turn (A, B, A, B, ...); their values per name."""
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            value = fn(r)
            out[name].append(value)
            if log:
                log(f"  repeat {r + 1}/{repeats}  {name:34s} {value:12,.2f}")
    return out


def fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return str(value)


def mean_sd(values: Sequence[float], digits: int = 1) -> str:
    """"mean ± sd" of repeated measurements (seeds); the mean alone for a single one
    (kdtune's one mean ± sd, search/record/stats.MeanSd, printed unscaled)."""
    from kdtune.search.record.stats import MeanSd

    return MeanSd.of(values).text(scale=1.0, digits=digits, unit="")


def print_table(headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A small Markdown table (pastes straight into benchmarks/README.md)."""
    cells = [list(map(str, headers))] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    return f"target {sign} {target:g}: {'MET' if ok else 'NOT MET'}"


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return (f"torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu}), torch threads "
            f"{torch.get_num_threads()}, load avg {load:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")


# ---- search benchmarks: the search's own pieces (kdtune.search.stages.tune_stage, kdtune.search.tune.search_spaces) -------------
def search_spec(argv: Sequence[str]):
    """(SearchSpec, DatasetBundle) exactly as run_kd_search.py builds them from its flags."""
    from kdtune.search.input.cli import parse_args
    from kdtune.search.input.validate import preflight

    spec, _ = parse_args(list(argv))
    return preflight(spec)


def ensure_teacher(spec, bundle, out_dir: Path, checkpoint_path: str | None = None) -> str:
    """The teacher checkpoint file: the given one, else the spec's teacher trained once here
    (plain call of trainables.teacher.train_teacher, as the pipeline's teacher stage runs it)."""
    from kdtune.trainables import checkpoint, reporting
    from kdtune.trainables.teacher import train_teacher

    if checkpoint_path:
        return checkpoint.checkpoint_file(checkpoint_path)
    out = Path(out_dir) / "teacher"
    with reporting.local_session(root=str(out)) as rec:
        metrics = train_teacher(spec.teacher_config(), data=bundle)
    best = max(range(len(rec.results)), key=lambda i: rec.results[i].get("val_acc", 0.0))
    print(f"teacher {spec.teacher.get('model')} trained {metrics['epoch']} epochs: best val_acc "
          f"{rec.results[best]['val_acc']:.4f} (epoch {best + 1})", flush=True)
    return checkpoint.checkpoint_file(rec.checkpoints[best])


def run_cli(flags: list[str]) -> float:
    """One complete kdtune run through search/run_kd_search.py's own `main` (every stage the
    pipeline has); its wall seconds. A non-zero exit stops the benchmark with the command."""
    from kdtune.search.run_kd_search import main

    start = time.perf_counter()
    code = main(flags)
    if code != 0:
        raise SystemExit(f"run_kd_search.py {' '.join(flags)} exited with {code}")
    return time.perf_counter() - start


def run_search(spec, bundle, *, name: str, out_dir: Path, teacher_checkpoint: str, logits,
               sampler: str, scheduler: str, seed: int, num_samples: int, max_concurrent: int,
               max_epochs: int | None = None, cpus: float | None = None,
               gpus: float | None = None) -> dict:
    """One distillation search over the spec's space through kdtune.search.stages.tune_stage.run_stage.

    sampler "tpe" is kdtune's (kdtune.search.stages.tune_stage.optuna_search); "random" is Optuna's
    RandomSampler behind the same ConcurrencyLimiter. scheduler "asha" is kdtune's
    (kdtune.search.stages.tune_stage.asha: search/tune/capped_asha.py with the spec's grace period and reduction factor);
    "ray-asha" is Ray's ASHAScheduler with the same rungs (what kdtune used before); "fifo"
    runs every trial to max_epochs. Returns epochs (sum of training_iteration), wall_s,
    best val_acc, trials, and trials per hour.
    """
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from kdtune.search.tune import search_spaces as spaces
    from kdtune.search.record.trials import from_result, winner
    from kdtune.search.stages.tune_stage import Stage, asha, optuna_search, run_stage
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.reporting import METRIC, MODE

    max_epochs = max_epochs or spec.max_epochs
    constants = {**spec.student_constants(teacher_checkpoint), "epochs": max_epochs}
    define = spaces.make_space(spec.space, spec.students, constants, distill=True)
    if sampler == "tpe":
        search_alg = optuna_search(define, seed=seed, objective="accuracy",
                                   max_concurrent=max_concurrent, max_epochs=max_epochs)
    else:
        search_alg = ConcurrencyLimiter(
            OptunaSearch(space=define, metric=METRIC, mode=MODE,
                         sampler=optuna.samplers.RandomSampler(seed=seed)),
            max_concurrent=max_concurrent)
    if scheduler == "asha":
        sched = asha(max_epochs, spec.grace_period, spec.reduction_factor, num_samples=num_samples)
    elif scheduler == "ray-asha":
        from ray.tune.schedulers import ASHAScheduler

        sched = ASHAScheduler(metric=METRIC, mode=MODE, max_t=max_epochs, grace_period=spec.grace_period,
                              reduction_factor=spec.reduction_factor)
    else:
        sched = None
    params = {"data": bundle}
    if logits is not None:
        params["teacher_logits"] = logits
    stage = Stage(name=name, experiment_dir=Path(out_dir),
                  trainable=tune.with_parameters(distill_student, **params),
                  num_samples=num_samples, cpus=spec.cpus_per_trial if cpus is None else cpus,
                  gpus=spec.gpus_per_trial if gpus is None else gpus, max_failures=0,
                  search_alg=search_alg, scheduler=sched)
    start = time.perf_counter()
    results = run_stage(stage, resume=False)
    wall = time.perf_counter() - start
    epochs = sum(int((r.metrics or {}).get("training_iteration", 0) or 0) for r in results)
    top = winner([from_result(r) for r in results])
    best = top.winner_record() if top is not None else None
    errors = sum(r.error is not None for r in results)
    return {"name": name, "epochs": epochs, "wall_s": wall, "trials": len(results),
            "errors": errors, "trials_per_hour": len(results) / wall * 3600,
            "best_val_acc": best["metrics"][METRIC] if best else float("nan"),
            "best_config": {k: best["config"].get(k) for k in
                            ("model", "depth", "width", "alpha", "temperature", "lr")} if best else {}}
