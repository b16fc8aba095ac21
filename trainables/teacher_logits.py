"""Teacher logits for distillation: computed once and cached, or online per batch.

The teacher is loaded from a kdtune checkpoint (rebuilt from the spec stored inside), put
in eval mode with requires_grad off, and only ever run under `torch.inference_mode()`: a
student trial never trains it. `prepare_teacher` is the one way a teacher is readied for
inference, in a trial and in the search's cache tasks alike (checked against the dataset,
BatchNorm folded, weights in the autocast dtype, on the runtime's device and layout).

- cached: `split_logits` runs the teacher once over a split (one augmented view of it, or
  the plain images); a batch's logits are then the cache's rows for its keys
  (trainables/logit_cache.py). Right when the inputs are not augmented (the teacher would
  see the same pixels every epoch), and with augmentation when the trial cycles through K
  fixed augmented views (`augment_views`): the cache then holds K arrays, one per view. A
  search computes it once per teacher on its workers (search/stages/teacher_cache.py) and shares
  it read-only through Ray's object store.
- online: the teacher runs on each (augmented) training batch; the validation logits still
  come from the cache when the search built one.

(A teacher *trained* during the student's trial is online_teacher.OnlineTeacher.)

    teacher, rt = prepare_teacher("results/teacher/checkpoint_000009", bundle.meta(), precision="fp32")
    cache = compute_logits(teacher, bundle.train, 512, "cpu", mean=bundle.mean, std=bundle.std)
"""
from __future__ import annotations

import copy
import logging
import os

import torch
from torch import nn

from kdtune.trainables import checkpoint
from kdtune.trainables.logit_cache import LogitCache
from kdtune.trainables.runtime import Runtime, autocast

# Teacher logits are stored in float32 whatever the compute precision: N x classes is small
# (a cache of K augmented views per image keeps the teacher's bf16: see compute_logits).
LOGITS_DTYPE = torch.float32

log = logging.getLogger(__name__)


def load_teacher(path: str | os.PathLike, device: str | torch.device = "cpu",
                 dataset_meta: dict | None = None) -> nn.Module:
    """The frozen teacher of checkpoint `path`; checked against `dataset_meta` when given."""
    model, payload = checkpoint.load_model(path, map_location=device)
    if dataset_meta is not None:
        checkpoint.check_compatible(payload, dataset_meta)
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def for_inference(teacher: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """The frozen teacher in the form logits are computed from: a new module.

    BatchNorm is folded into the convolution or linear layer before it (torch.fx's `fuse`,
    from the traced dataflow graph; exact in eval mode up to float rounding), which removes
    one pass over every activation: the resnet56 forward in bf16 ran ~15% faster. With an
    autocast `dtype` the weights are stored in it, so autocast does not re-cast them on every
    forward (~3% more). A model torch.fx cannot trace is kept as it is (eager, unfolded).
    """
    from torch.fx.experimental.optimization import fuse

    freeze(teacher)
    if getattr(teacher, "kdtune_exported", False):
        return teacher  # an exported file runs as exported, in float32 (exported_teacher.py)
    try:
        folded = fuse(teacher, inplace=False)
    except Exception as exc:  # data-dependent Python control flow is not traceable: keep eager
        # Said once per teacher, with torch.fx's reason: the fallback is correct but ~15% slower.
        log.warning("teacher %s cannot be traced by torch.fx (%s: %s); its BatchNorm stays "
                    "unfolded (eager forward, correct but slower)", type(teacher).__name__,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        folded = copy.deepcopy(teacher)
    folded.kdtune_spec = getattr(teacher, "kdtune_spec", None)  # what the checkpoint holds
    if dtype is not None:
        folded = folded.to(dtype)
    return freeze(folded)


def prepare_teacher(path: str | os.PathLike, dataset_meta: dict | None, rt: Runtime | None = None, *,
                    device: str = "auto", precision: str = "auto",
                    threads: int = 1) -> tuple[nn.Module, Runtime]:
    """The teacher of checkpoint `path` as every kdtune path runs it for inference, and its Runtime.

    Checked against `dataset_meta` (classes, input shape; None only where no dataset is
    known), BatchNorm folded and weights stored in the autocast dtype (`for_inference`), on
    the runtime's device, channels_last when it uses it. `rt`: a trial's runtime; without
    one it is resolved for the teacher itself from `device`, `precision` and `threads` (a
    search's cache task). A trial's online teacher and a search's cache thus compute their
    logits with the same module for the same pixels.
    """
    teacher = load_teacher(path, "cpu", dataset_meta)
    if rt is None:
        rt = Runtime.resolve(device, precision, teacher, threads)
    return rt.prepare(for_inference(teacher, rt.autocast_dtype)), rt


def split_logits(teacher: nn.Module, split, batch_size: int, device: str | torch.device, *,
                 mean, std, autocast_dtype: torch.dtype | None = None,
                 channels_last: bool = False, augment: str = "none", view: int | None = None,
                 seed: int = 0, dtype: torch.dtype | None = LOGITS_DTYPE,
                 augment_pixels: int | None = None) -> torch.Tensor:
    """Teacher logits for one view of `split`: (len(split), classes) on `device`, row i = image i.

    `view` None (or `augment` "none"): the plain images. `view=v` with an `augment` (and its
    `augment_pixels`): the v-th augmented view (1-based), the pixels a training
    `DeviceLoader(seed=seed)` shows in view v, whatever its `views` (a view depends only on
    (seed, v, image)). `dtype` None
    keeps the dtype the teacher produced (bf16 under bf16 autocast: exact, and half the
    memory of float32, which matters at K x N rows).
    """
    from kdtune.datasets import DeviceLoader  # lazy: datasets imports its readers

    device = torch.device(device)
    freeze(teacher)
    loader = DeviceLoader(split, batch_size=batch_size, device=device, mean=mean, std=std,
                          augment=augment if view else "none", shuffle=False, seed=seed,
                          drop_last=False, channels_last=channels_last,
                          augment_pixels=augment_pixels if view else None)
    loader.set_epoch(view or 1)  # without `views`, epoch v shows view v
    out: torch.Tensor | None = None
    with torch.inference_mode():
        for x, _, idx in loader:
            with autocast(device, autocast_dtype):
                logits = teacher(x)
            if out is None:
                out = torch.empty(len(split), logits.shape[1], dtype=dtype or logits.dtype,
                                  device=device)
            out[idx] = logits.to(out.dtype)
    if out is None:
        raise ValueError("teacher logits of an empty split were asked for")
    return out


def compute_logits(teacher: nn.Module, split, batch_size: int, device: str | torch.device, *,
                   mean, std, autocast_dtype: torch.dtype | None = None,
                   channels_last: bool = False, augment: str = "none", views: int | None = None,
                   seed: int = 0, dtype: torch.dtype | None = LOGITS_DTYPE,
                   augment_pixels: int | None = None) -> torch.Tensor:
    """Teacher logits on `device`, one row per key of the training loader.

    Without `views` (or without augmentation): (len(split), classes), row i = split row i,
    the un-augmented images. With `augment` and `views=K`: (K * len(split), classes), the
    split_logits of views 1..K stacked view-major: row (v - 1) * len(split) + i is what a
    `DeviceLoader(views=K, seed=seed)` keys image i of view v with. `mean`/`std` are the
    dataset's normalisation; `dtype` as in split_logits.
    """
    common = dict(mean=mean, std=std, autocast_dtype=autocast_dtype, channels_last=channels_last,
                  augment=augment, augment_pixels=augment_pixels, seed=seed, dtype=dtype)
    if not views or augment == "none":
        return split_logits(teacher, split, batch_size, device, **common)
    return torch.cat([split_logits(teacher, split, batch_size, device, view=v, **common)
                      for v in range(1, views + 1)])


class TeacherLogits:
    """What the loop asks for: `train_logits(x, idx)` per batch and `val_logits` (agreement).

    With a `train_cache` (a LogitCache with train views) the batch's rows are gathered by
    idx and moved to the batch's device; without one the teacher runs on x (the augmented
    batch) under inference_mode, in the trial's autocast precision.
    """

    trains = False  # frozen: nothing to do when the loss ignores teacher logits

    def __init__(self, teacher: nn.Module | None, *, train_cache: LogitCache | None = None,
                 val_logits: torch.Tensor | None = None,
                 autocast_dtype: torch.dtype | None = None) -> None:
        if teacher is None and val_logits is None and train_cache is None:
            raise ValueError("TeacherLogits needs a teacher model or cached logits")
        self.teacher = None if teacher is None else freeze(teacher)
        self.train_cache = train_cache
        self.val_logits = val_logits
        self.autocast_dtype = autocast_dtype

    def train_logits(self, x: torch.Tensor, idx: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        if self.train_cache is not None:
            return self.train_cache.rows(idx, x.device)  # KDLoss upcasts bf16 rows itself
        if self.teacher is None:
            raise ValueError("this TeacherLogits was built without training logits or a teacher")
        with torch.inference_mode(), autocast(x.device, self.autocast_dtype):
            logits = self.teacher(x)
        # An inference tensor cannot be saved for backward: the KD loss needs a normal one.
        return logits.to(LOGITS_DTYPE).clone()

    def end_epoch(self, val_loader) -> dict[str, float]:
        return {}  # a frozen teacher's val logits were computed once

    def state_dict(self) -> None:
        return None  # rebuilt from its own checkpoint: nothing to resume

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            raise checkpoint.CheckpointError(
                "the checkpoint holds an online teacher's state but this trial distils from "
                "a frozen teacher: resume with the config that wrote it")
