"""The search's teacher-logit cache: computed once per teacher, on the workers, shared read-only.

The cache is a list of *parts*, each one (rows, classes) array of teacher logits:
- "val": the validation split (every trial's `agreement`; also for an online teacher);
- "train": the plain training images, when the data is not augmented;
- "view-0001" .. : with `augment_views` K on augmented data, the K fixed augmented views of
  the training images that the trials' loaders cycle through (FKD, Shen & Xing 2022). This
  costs K teacher passes over the training split once per search, in place of one pass
  per trial and epoch: a search of T trial-epochs saves T - K passes;
- nothing more with the online teacher (augmented data, `augment_views` 0): trials run
  their teacher on each batch and read only "val".

`build_cache` computes the parts in Ray tasks that ask for a trial's resources (CPUs and a
GPU share where trials have one), as many tasks as the cluster can run at once, spread over
its nodes, the parts dealt round-robin among them. Each task returns every part as its own
object, so an array stays in the object store of the node that computed it and the driver
holds only references (a `SharedLogitCache`); trials get them through `tune.with_parameters`
and map the arrays from their node's store without copying (trainables/logit_cache.py).
Each task also saves its parts under the experiment (`<cache_dir>/<key>/<part>-<dtype>.npy`,
atomically), and a later build (`--resume`) loads saved parts instead of recomputing them.

Logits keep the teacher's compute dtype (bf16 under bf16 autocast: exact, half the bytes).

Large caches stay on disk. When the cache would exceed `resident_max_mb` (default
RESIDENT_MAX_MB, the image store's threshold; a search passes its --resident-max-mb when
given), the tasks only save their parts, nothing goes into the object store, and the build
returns a `MappedLogitCache` of the files, which every trial maps read-only
(trainables/logit_cache.py): one page-cache copy per node, a trial's own memory flat in the
cache's size.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import ray
import torch

from kdtune.datasets import DatasetBundle
from kdtune.trainables.logit_cache import LogitCache, MappedLogitCache, SharedLogitCache, dtype_name, to_numpy
from kdtune.trainables.teacher_logits import prepare_teacher, split_logits

# Inference only: large batches on a GPU (few kernel launches). On CPU a resnet56 forward in
# bf16 ran 1,150 img/s at batch 128-256 and 750-810 at 1,024 (activations spill the caches).
GPU_BATCH, CPU_BATCH = 1024, 256
VAL, TRAIN = "val", "train"
# Caches up to this size stay resident (object store); larger ones are mapped from their files.
# The image store's threshold (datasets/image_folder.py RESIDENT_MAX_MB): one notion of "large".
RESIDENT_MAX_MB = 1024.0


def cache_parts(bundle: DatasetBundle, views: int | None) -> list[str]:
    """The parts a search of `bundle` needs: val, then the train rows the trials read."""
    if bundle.augment == "none":
        return [VAL, TRAIN]
    return [VAL] + [f"view-{v:04d}" for v in range(1, (views or 0) + 1)]


def _view(part: str) -> int | None:
    return int(part.split("-")[1]) if part.startswith("view-") else None


def compute_parts(bundle: DatasetBundle, teacher_checkpoint: str, parts: list[str], *,
                  seed: int, precision: str, device: str = "auto", threads: int = 1,
                  save_dir: str | None = None, keep: bool = True) -> tuple[list[np.ndarray], str]:
    """The arrays of `parts` and their dtype name; saved parts are read back from `save_dir`.
    `keep` False (a mapped cache): parts are only saved (saved ones left unread); no arrays.

    The teacher runs as in a trial (trainables.teacher_logits.prepare_teacher), so the
    cached logits are the ones an online teacher would produce for the same pixels."""
    torch.set_num_threads(max(1, threads))
    teacher = rt = None
    arrays: list[np.ndarray] = []
    dtypes: set[str] = set()
    for part in parts:
        saved = _saved_file(save_dir, part)
        if saved is not None:
            if keep:
                arrays.append(np.load(saved))
            dtypes.add(saved.stem.rsplit("-", 1)[1])
            continue
        if teacher is None:
            teacher, rt = prepare_teacher(teacher_checkpoint, bundle.meta(), device=device,
                                          precision=precision, threads=max(1, threads))
        logits = split_logits(teacher, bundle.val if part == VAL else bundle.train,
                              GPU_BATCH if rt.device.type == "cuda" else CPU_BATCH, rt.device,
                              mean=bundle.mean, std=bundle.std, autocast_dtype=rt.autocast_dtype,
                              channels_last=rt.channels_last, augment=bundle.augment,
                              augment_pixels=bundle.augment_pixels,  # the trials' shift / padding
                              view=_view(part), seed=seed, dtype=None)
        array, dtype = to_numpy(logits), dtype_name(logits)
        if save_dir is not None:
            _save(Path(save_dir) / f"{part}-{dtype}.npy", array)
        if keep:
            arrays.append(array)
        del logits
        dtypes.add(dtype)
    if len(dtypes) > 1:
        raise ValueError(f"teacher logits of mixed dtypes {sorted(dtypes)} in {save_dir}: "
                         "delete that folder to recompute it")
    return arrays, dtypes.pop()


# max_calls=1: the worker process exits after its part of the build. Ray hands idle workers
# to later tasks and actors, trials included; a reused build worker would carry the teacher,
# the allocator's cached heap of the K arrays it produced (measured: +48 MiB anonymous and
# +52 MiB mapped object-store pages at K = 60 vs K = 6, 10,000 CIFAR-100-shaped images) and,
# on a GPU, its CUDA context into the trial.
@ray.remote(max_calls=1)
def _shard(bundle: DatasetBundle, teacher_checkpoint: str, parts: list[str], kwargs: dict):
    """One task's parts, each returned as its own object, then (dtype, node id); only the
    latter for a mapped cache (kwargs keep False: the parts are only saved)."""
    arrays, dtype = compute_parts(bundle, teacher_checkpoint, parts, **kwargs)
    meta = (dtype, ray.get_runtime_context().get_node_id())
    return (*arrays, meta) if kwargs.get("keep", True) else meta  # mapped: one return, the meta


def estimated_mb(bundle: DatasetBundle, views: int | None) -> float:
    """The cache's size in MiB at float32 (an upper bound: bf16 logits are half of it)."""
    rows = sum(len(bundle.val) if p == VAL else len(bundle.train) for p in cache_parts(bundle, views))
    return rows * bundle.num_classes * 4 / 2**20


def build_cache(bundle: DatasetBundle, teacher_checkpoint: str, *, views: int | None = None,
                seed: int = 0, precision: str = "auto", device: str = "auto", cpus: float = 1,
                gpus: float = 0, cache_dir: Path | None = None,
                resident_max_mb: float | None = None) -> SharedLogitCache | MappedLogitCache:
    """Compute (or read back) the cache on the cluster's workers; references to its parts, or,
    above `resident_max_mb` (default RESIDENT_MAX_MB; needs `cache_dir`), its mapped files.

    `views`: K fixed augmented views (augmented data); 0 or None there: validation logits
    only (the trials run the teacher online). `cpus`/`gpus`: one task's resources, a
    trial's. Ray must be initialised."""
    parts = cache_parts(bundle, views)
    key_dir = None if cache_dir is None else Path(cache_dir) / _key(bundle, teacher_checkpoint, seed, precision)
    limit = RESIDENT_MAX_MB if resident_max_mb is None else float(resident_max_mb)
    mapped = key_dir is not None and estimated_mb(bundle, views) > limit
    saved = sum(_saved_file(key_dir, part) is not None for part in parts)
    tasks = min(len(parts), _task_slots(cpus, gpus))
    print(f"kdtune: teacher logits for {_describe(bundle, views)} (once per search"
          f"{', mapped from disk' if mapped else ''}): "
          f"{len(parts) - saved} part(s) to compute, {saved} saved, in {tasks} task(s) ...", flush=True)
    start = time.perf_counter()
    kwargs = dict(seed=seed, precision=precision, device=device, threads=max(1, int(cpus)),
                  save_dir=None if key_dir is None else str(key_dir), keep=not mapped)
    bundle_ref = ray.put(bundle)
    refs: dict[str, ray.ObjectRef] = {}
    meta = []
    for i in range(tasks):
        mine = parts[i::tasks]
        returns = (len(mine) if not mapped else 0) + 1
        out = _shard.options(num_cpus=cpus, num_gpus=gpus, num_returns=returns,
                             scheduling_strategy="SPREAD").remote(bundle_ref, teacher_checkpoint, mine, kwargs)
        out = out if returns > 1 else [out]
        refs.update(zip(mine, out[:-1]))
        meta.append(out[-1])
    done = ray.get(meta)  # waits for every task; the arrays stay where they were made
    dtypes = {dtype for dtype, _ in done}
    if len(dtypes) > 1:
        raise RuntimeError(f"teacher-logit tasks produced different dtypes {sorted(dtypes)}; "
                           "set train.precision (fp32 or bf16) so every node computes alike")
    nodes = tuple(sorted({node for _, node in done}))
    print(f"kdtune: teacher logits done in {time.perf_counter() - start:.0f} s on {len(nodes)} node(s)",
          flush=True)
    if mapped:
        files = [str(_saved_file(key_dir, p)) for p in parts]
        return MappedLogitCache(tuple(files[1:]), files[0], dtypes.pop())
    return SharedLogitCache(tuple(refs[p] for p in parts[1:]), refs[VAL], dtypes.pop(), nodes)


def local_cache(bundle: DatasetBundle, teacher_checkpoint: str, *, views: int | None = None,
                seed: int = 0, precision: str = "auto", device: str = "auto",
                threads: int | None = None) -> LogitCache:
    """The same cache computed in this process, without Ray (benchmarks, scripts)."""
    parts = cache_parts(bundle, views)
    arrays, dtype = compute_parts(bundle, teacher_checkpoint, parts, seed=seed, precision=precision,
                                  device=device, threads=threads or torch.get_num_threads())
    return LogitCache(tuple(arrays[1:]), arrays[0], dtype)


def _task_slots(cpus: float, gpus: float) -> int:
    """How many tasks of (cpus, gpus) the cluster's alive nodes can run at once (>= 1)."""
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = int(have.get("CPU", 0) // cpus) if cpus > 0 else len(ray.nodes()) * 64
        if gpus > 0:
            fits = min(fits, int(have.get("GPU", 0) // gpus))
        total += fits
    return max(1, total)


def _describe(bundle: DatasetBundle, views: int | None) -> str:
    n, n_val = len(bundle.train), len(bundle.val)
    if bundle.augment == "none":
        return f"{n} train + {n_val} val images"
    if views:
        return f"{views} augmented views x {n} train images + {n_val} val images"
    return f"{n_val} val images (training batches: online teacher)"


def _key(bundle: DatasetBundle, teacher_checkpoint: str, seed: int, precision: str) -> str:
    """One folder per (teacher, seed, precision, split): a changed input never matches.

    K is not in it: view v is the same pixels whatever K, so a larger K reuses the views."""
    key = (f"{Path(teacher_checkpoint).resolve()}|{seed}|{precision}|{bundle.name}|{bundle.augment}|"
           f"{len(bundle.train)}|{len(bundle.val)}")
    if bundle.augment_pixels is not None:  # a non-default crop padding / jitter shift
        # "px": caches saved before 2026-12-05 under "|<pixels>" hold views at the default shift
        # (the bug fixed then); this key never matches them, so a resumed search recomputes.
        key += f"|px{bundle.augment_pixels}"
    return f"logits-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _saved_file(folder: str | Path | None, part: str) -> Path | None:
    if folder is None or not Path(folder).is_dir():
        return None
    found = sorted(Path(folder).glob(f"{part}-*.npy"))
    return found[0] if found else None


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)  # atomic: an interrupt never leaves half a part behind
