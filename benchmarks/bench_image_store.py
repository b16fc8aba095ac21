"""The image-folder store (datasets/store.py) on a JPEG folder this benchmark writes.

Figures, per folder size (default 20,000 and 80,000 images of 96 x 96, 10 classes):
  - decode once: wall seconds to decode the folder into a fresh store with 1 and 2 workers
    (the search's pre-flight path: forked processes), and with Ray tasks on a 2-CPU local
    Ray (`--ray`); ratio 1 / 2 workers.
  - epoch img/s: one training epoch of the same small model (kdtune's `mlp`, 1 x 128, on the
    3 x 96 x 96 pixels, SGD lr 0.01 momentum 0.9 on both sides) as a kdtune trial trains it
    (DeviceLoader over the stored split: pread gather, batched crop + flip, one normalisation;
    kdtune's optimiser, trainables/optim.py: torch's fused SGD kernel) against the loop users
    would write, torchvision ImageFolder + DataLoader(num_workers=2) with PIL transforms
    (RandomCrop(96, padding=4), RandomHorizontalFlip, ToTensor, Normalize) and
    torch.optim.SGD's default implementation. Target >= 3x.
  - peak RSS: a driver (create_dataset on the stored folder + pickling the bundle, as a
    search's pre-flight and tune.with_parameters do) and a trial (unpickling the bundle and
    training one epoch over it), each in its own process (its VmHWM); 80k / 20k ratio, target
    within 10%.

    python -m benchmarks.bench_image_store --root /tmp/kdtune-jpegs --sizes 20000 80000
    python -m benchmarks.bench_image_store --root /tmp/kdtune-jpegs --sizes 2000 --epoch-batches 20

The folders are written once under --root (resumable: existing files are kept) and the
stores under --root/stores.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray needs no token

CLASSES = 10
SIZE = 96
BATCH = 128


def write_folder(root: Path, n: int, seed: int = 0) -> Path:
    """n JPEGs (quality 90) of SIZE px in CLASSES class folders: smooth class-coloured noise."""
    from PIL import Image

    folder = root / f"jpeg{n}"
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (CLASSES, 3), dtype=np.uint8)
    for k in range(CLASSES):
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"c{i % CLASSES}" / f"{i:06d}.jpg"
        if path.exists():
            continue
        small = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) // 2 + base[i % CLASSES] // 2
        Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR).save(path, quality=90)
    return folder


def decode_wall(folder: Path, workers: int, store_root: Path, use_ray: bool = False) -> float:
    from kdtune.datasets.store import open_or_build

    shutil.rmtree(store_root, ignore_errors=True)
    start = time.perf_counter()
    info, _, _ = open_or_build(str(folder), SIZE, root=store_root, workers=workers)
    wall = time.perf_counter() - start
    assert info.built
    shutil.rmtree(store_root, ignore_errors=True)
    return wall


LR, MOMENTUM = 0.01, 0.9  # SGD's settings, the same on both sides


def _model(kdtune_optimizer: bool):
    """The model and its SGD: kdtune's (`create_optimizer`, as a trial builds it) or the one
    users would write (torch.optim.SGD with torch's default implementation)."""
    import torch

    from kdtune.models import create_model
    from kdtune.trainables.config import DistillConfig
    from kdtune.trainables.optim import create_optimizer

    torch.manual_seed(0)
    model = create_model("mlp", CLASSES, (3, SIZE, SIZE), depth=1, width=128)
    if kdtune_optimizer:
        cfg = DistillConfig(optimizer="sgd", lr=LR, momentum=MOMENTUM, nesterov=False, weight_decay=0.0)
        return model, create_optimizer(cfg, model)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def _train(batches, limit: int, kdtune_optimizer: bool) -> float:
    """img/s of up to `limit` training steps over `batches` (x, y, ...)."""
    from benchmarks.common import train_step

    model, opt = _model(kdtune_optimizer)
    n, start = 0, None
    for b, batch in enumerate(batches):
        if b == 1:  # the first batch starts workers / opens files: warm-up
            start = time.perf_counter()
        x, y = batch[0], batch[1]
        train_step(model, opt, x, y)
        if b >= 1:
            n += len(y)
        if b >= limit:
            break
    return n / (time.perf_counter() - start)


def _kdtune_loader(bundle, seed: int, epoch: int):
    """The trial path: DeviceLoader over the stored split, crop + flip, batches of BATCH."""
    from kdtune.datasets import DeviceLoader

    loader = DeviceLoader(bundle.train, batch_size=BATCH, mean=bundle.mean, std=bundle.std,
                          augment="crop_flip", shuffle=True, seed=seed, drop_last=True)
    loader.set_epoch(epoch)
    return loader


def kdtune_epoch(bundle, limit: int) -> float:
    return _train(_kdtune_loader(bundle, seed=0, epoch=1), limit, kdtune_optimizer=True)


def torchvision_epoch(folder: Path, mean, std, limit: int, workers: int = 2) -> float:
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.RandomCrop(SIZE, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = DataLoader(ImageFolder(str(folder), transform=tf), batch_size=BATCH, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=False)
    return _train(loader, limit, kdtune_optimizer=False)


def breakdown(bundle, batches: int = 40) -> dict:
    """Medians (ms) of a kdtune step's two parts alone: one DeviceLoader batch from the store
    (pread gather, crop + flip, normalise) and one training step of the model on a batch already
    in memory with kdtune's optimiser, which bounds kdtune's img/s; and the same step with
    torch's default SGD, which bounds the other side's."""
    from benchmarks.common import median, train_step

    loader = _kdtune_loader(bundle, seed=1, epoch=2)
    it, times = iter(loader), []
    x, y = next(it)[:2]
    for _ in range(min(batches, len(loader) - 1)):
        start = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - start)
    out = {"loader_ms": 1000 * median(times)}
    for key, kdtune_optimizer in (("model_ms", True), ("model_default_ms", False)):
        model, opt = _model(kdtune_optimizer)
        steps = []
        for i in range(batches):
            start = time.perf_counter()
            train_step(model, opt, x, y)
            if i >= 5:
                steps.append(time.perf_counter() - start)
        out[key] = 1000 * median(steps)
    return out


def _bundle(folder: Path, store_root: Path):
    from kdtune.datasets import create_dataset

    return create_dataset("image_folder", str(folder), image_size=SIZE, resident_max_mb=0,
                          store_dir=str(store_root), decode_workers=2)


def child(role: str, folder: Path, store_root: Path, pickled: Path, limit: int, threads: int) -> None:
    """One process's peak RSS: 'driver' (decode/open + pickle) or 'trial' (unpickle + epoch).
    `threads`: the trial's torch threads, the same as the ImageFolder loop's model gets (an
    earlier version ran the trial at 1 thread against the loop's default 2, halving kdtune's side)."""
    import torch

    from kdtune.trainables.runtime import Runtime

    if role == "trial":  # the trial process's set-up, as run_trial makes it: threads + allocator
        Runtime(torch.device("cpu"), None, False, threads).apply()
    else:
        torch.set_num_threads(threads)
    if role == "driver":
        bundle = _bundle(folder, store_root)
        pickled.write_bytes(pickle.dumps(bundle))
        extra = {"pickle_bytes": pickled.stat().st_size}
    else:
        bundle = pickle.loads(pickled.read_bytes())
        extra = {"img_s": kdtune_epoch(bundle, limit)}
    extra["peak_rss_mib"] = peak_rss_mib()  # before the breakdown's second loader and model
    if role == "trial":
        extra.update(breakdown(bundle))
    print(json.dumps({"role": role, **extra}), flush=True)


def peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, the high-water mark of its address space since its
    exec. Not ru_maxrss: Linux keeps that across execve, so a child started from a parent
    that had grown to X MiB reports at least X (the parent grows over the run: the bundles and
    the ImageFolder loop), which made the later, larger sizes' children read the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(role: str, folder: Path, store_root: Path, pickled: Path, limit: int) -> dict:
    import torch

    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_image_store", "--child", role,
                          "--folder", str(folder), "--store-root", str(store_root), "--pickled", str(pickled),
                          "--epoch-batches", str(limit), "--threads", str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/kdtune-jpegs")
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000])
    p.add_argument("--epoch-batches", type=int, default=0,
                   help="timed training steps per epoch figure (0: a whole epoch)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved (kdtune epoch, torchvision epoch) pairs per size; the ratio is their median")
    p.add_argument("--skip-decode", action="store_true", help="skip the decode-wall figures")
    p.add_argument("--ray", action="store_true", help="also decode with Ray tasks on a 2-CPU local Ray")
    p.add_argument("--child", choices=("driver", "trial"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--store-root", help=argparse.SUPPRESS)
    p.add_argument("--pickled", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, Path(args.folder), Path(args.store_root), Path(args.pickled), args.epoch_batches or 10**9, args.threads)
        return
    from benchmarks.common import interleave, machine_line, median, print_table

    print(machine_line(), flush=True)
    root = Path(args.root)
    store_root = root / "stores"
    rows, rss = [], {}
    for n in args.sizes:
        start = time.perf_counter()
        folder = write_folder(root, n)
        print(f"{n} JPEGs at {folder} ({time.perf_counter() - start:.0f} s to write/check)", flush=True)
        walls = {}
        if not args.skip_decode:
            for w in (1, 2):
                walls[w] = decode_wall(folder, w, root / f"decode-timing-{w}")
                print(f"  decode once, {w} worker(s): {walls[w]:.1f} s", flush=True)
            if args.ray:
                import ray

                ray.init(num_cpus=2, include_dashboard=False, address="local")
                try:
                    walls["ray"] = decode_wall(folder, 2, root / "decode-timing-ray")
                finally:
                    ray.shutdown()
                print(f"  decode once, Ray tasks (2 CPUs): {walls['ray']:.1f} s", flush=True)
        pickled = root / f"bundle{n}.pkl"
        driver = run_child("driver", folder, store_root, pickled, 0)
        limit = args.epoch_batches or n
        bundle = pickle.loads(pickled.read_bytes())
        # Paired, interleaved repeats: this VM's speed drifts by up to ~1.6x over minutes, so
        # each kdtune epoch is divided by the torchvision epoch run right after it and the
        # median of those ratios is the figure (not a ratio of two separately taken medians).
        trials = []

        def kdtune_side(_repeat: int) -> float:
            trials.append(run_child("trial", folder, store_root, pickled, limit))
            return trials[-1]["img_s"]

        img_s = interleave({"kdtune trial": kdtune_side,
                            "ImageFolder + DataLoader(2)": lambda _repeat: torchvision_epoch(
                                folder, bundle.mean, bundle.std, min(limit, len(bundle.train) // BATCH))},
                           args.repeats, log=lambda line: print(line, flush=True))
        tvs = img_s["ImageFolder + DataLoader(2)"]
        for r, t in enumerate(trials):
            print(f"  pair {r + 1}: {t['img_s'] / tvs[r]:.2f}x; kdtune step parts (medians): loader batch alone "
                  f"{t['loader_ms']:.1f} ms, model step on a resident batch {t['model_ms']:.1f} ms "
                  f"({BATCH / t['model_ms'] * 1000:.0f} img/s: kdtune's ceiling; with torch's default SGD "
                  f"{t['model_default_ms']:.1f} ms, {BATCH / t['model_default_ms'] * 1000:.0f} img/s: the other "
                  f"side's)", flush=True)
        ratios = [t["img_s"] / tv for t, tv in zip(trials, tvs)]
        trial_rss = median([t["peak_rss_mib"] for t in trials])
        rss[n] = (driver["peak_rss_mib"], trial_rss)
        rows.append((n, *(f"{walls[k]:.1f}" if k in walls else "-" for k in (1, 2, "ray")),
                     round(median([t["img_s"] for t in trials])), round(median(tvs)),
                     " ".join(f"{r:.2f}" for r in ratios), f"{median(ratios):.2f}x",
                     round(driver["peak_rss_mib"]), round(trial_rss), driver["pickle_bytes"]))
        print(f"  peak RSS driver {driver['peak_rss_mib']:.0f} MiB, trial {trial_rss:.0f} MiB (median of "
              f"{len(trials)})", flush=True)
    print()
    print_table(["images", "decode 1w s", "decode 2w s", "decode ray s", "kdtune img/s", "torchvision img/s",
                 "paired ratios", "median ratio (>= 3x)", "driver RSS MiB", "trial RSS MiB", "bundle pickle B"], rows)
    for n, r in zip(args.sizes, rows):
        if r[1] != "-":
            print(f"ratio decode 1 / 2 workers at {n}: {float(r[1]) / float(r[2]):.2f}x")
    if len(args.sizes) > 1:
        a, b = args.sizes[0], args.sizes[-1]
        for i, role in enumerate(("driver", "trial")):
            print(f"ratio peak RSS {role} {b} / {a} images: {rss[b][i] / rss[a][i]:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
