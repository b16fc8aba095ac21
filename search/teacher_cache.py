"""The driver's teacher-logit cache: computed once per teacher, shared by every trial.

- Inputs not augmented: the teacher's logits for each training image (float32, N rows).
- Augmented inputs with `augment_views` K: the teacher's logits for each of the K fixed
  augmented views of each image that the trials' loaders cycle through (FKD, Shen & Xing
  2022), K x N rows in the teacher's compute dtype (bf16 under bf16 autocast: exact and half
  the memory). This costs K teacher passes over the training split once per search, in
  place of one pass per trial and epoch: a search of T trial-epochs saves T - K passes.
  It is saved under the experiment directory, so `--resume` does not pay for it again.
- Augmented inputs otherwise: None, the trials run the teacher online on each batch.

Trials get the tensor through Ray's object store (`tune.with_parameters`).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from datasets import DatasetBundle
from trainables.runtime import Runtime, is_conv_net, resolve_autocast
from trainables.teacher_logits import compute_logits, for_inference, load_teacher

# Inference only: large batches on a GPU (few kernel launches). On CPU a resnet56 forward in
# bf16 ran 1,150 img/s at batch 128-256 and 750-810 at 1,024 (activations spill the caches).
GPU_BATCH, CPU_BATCH = 1024, 256


def cached_teacher_logits(bundle: DatasetBundle, teacher_checkpoint: str, *,
                          views: int | None = None, seed: int = 0, precision: str = "auto",
                          cache_dir: Path | None = None) -> torch.Tensor | None:
    """The cache trials of this teacher share (None: they compute logits online)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if bundle.augment == "none":
        teacher = for_inference(load_teacher(teacher_checkpoint, device))
        return compute_logits(teacher, bundle.train, batch_size=_batch(device), device=device,
                              mean=bundle.mean, std=bundle.std).cpu()
    if not views:
        return None
    path = None if cache_dir is None else cache_dir / _file_name(teacher_checkpoint, views, seed, precision, bundle)
    if path is not None and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    logits = view_logits(bundle, teacher_checkpoint, views=views, seed=seed, precision=precision,
                         device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(logits, tmp)
        os.replace(tmp, path)  # atomic: an interrupt never leaves half a cache behind
    return logits


def view_logits(bundle: DatasetBundle, teacher_checkpoint: str, *, views: int, seed: int,
                precision: str, device: torch.device) -> torch.Tensor:
    """Teacher logits for `views` augmented views of every training image, on CPU.

    The teacher runs as in a trial (BatchNorm folded, the trial's autocast precision and
    channels_last for conv nets), so the cached logits are the ones an online teacher would
    produce for the same pixels.
    """
    teacher = load_teacher(teacher_checkpoint, device, bundle.meta())
    rt = Runtime(device, resolve_autocast(precision, device), is_conv_net(teacher), torch.get_num_threads())
    teacher = rt.prepare(for_inference(teacher, rt.autocast_dtype))  # as distill_student does
    start = time.perf_counter()
    print(f"kdtune: teacher logits for {views} augmented views x {len(bundle.train)} images "
          f"(once per search) ...", flush=True)
    logits = compute_logits(teacher, bundle.train, _batch(device), device, mean=bundle.mean, std=bundle.std,
                            autocast_dtype=rt.autocast_dtype, channels_last=rt.channels_last,
                            augment=bundle.augment, augment_pixels=bundle.augment_pixels, views=views,
                            seed=seed, dtype=None)
    print(f"kdtune: teacher logits for {views} views done in {time.perf_counter() - start:.0f} s",
          flush=True)
    return logits.cpu()


def _batch(device: torch.device) -> int:
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


def _file_name(teacher_checkpoint: str, views: int, seed: int, precision: str,
               bundle: DatasetBundle) -> str:
    """One file per (teacher, views, seed, precision, split): a changed input never matches."""
    key = f"{Path(teacher_checkpoint).resolve()}|{views}|{seed}|{precision}|{len(bundle.train)}"
    if (bundle.augment, bundle.augment_pixels) != ("crop_flip", None):  # older names stay valid
        key += f"|{bundle.augment}|{bundle.augment_pixels}"
    return f"view_logits-{views}x{len(bundle.train)}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
