"""Teacher logits for distillation: computed once and cached, or online per batch.

The teacher is loaded from a kdtune checkpoint (rebuilt from the spec stored inside), put
in eval mode with requires_grad off, and only ever run under `torch.inference_mode()`: a
student trial never trains it.

- cached: `compute_logits` runs the teacher once over a split; a batch's logits are then
  rows `cache[idx]`. Right when the inputs are not augmented (the teacher would see the
  same pixels every epoch), and with augmentation when the trial cycles through K fixed
  augmented views (`augment_views`): the cache then holds K rows per image. The search
  driver computes the train-split cache once per teacher and shares it through Ray's
  object store (`tune.with_parameters`).
- online: the teacher runs on each (augmented) training batch.

(A teacher *trained* during the student's trial is online_teacher.OnlineTeacher.)

    teacher = for_inference(load_teacher("results/teacher/checkpoint_000009", "cpu", bundle.meta()))
    cache = compute_logits(teacher, bundle.train, 512, "cpu", mean=bundle.mean, std=bundle.std)
"""
from __future__ import annotations

import copy
import os

import torch
from torch import nn

from trainables import checkpoint
from trainables.runtime import autocast

# Teacher logits are stored in float32 whatever the compute precision: N x classes is small
# (a cache of K augmented views per image keeps the teacher's bf16: see compute_logits).
LOGITS_DTYPE = torch.float32


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
    try:
        folded = fuse(teacher, inplace=False)
    except Exception:  # data-dependent Python control flow is not traceable: keep eager
        folded = copy.deepcopy(teacher)
    folded.kdtune_spec = getattr(teacher, "kdtune_spec", None)  # what the checkpoint holds
    if dtype is not None:
        folded = folded.to(dtype)
    return freeze(folded)


def compute_logits(teacher: nn.Module, split, batch_size: int, device: str | torch.device, *,
                   mean, std, autocast_dtype: torch.dtype | None = None,
                   channels_last: bool = False, augment: str = "none", views: int | None = None,
                   seed: int = 0, dtype: torch.dtype | None = LOGITS_DTYPE,
                   augment_pixels: int | None = None) -> torch.Tensor:
    """Teacher logits on `device`, one row per key of the training loader.

    Without `views` (or without augmentation): (len(split), classes), row i = split row i,
    the un-augmented images. With `augment` and `views=K`: (K * len(split), classes), the
    teacher's logits for each of the K augmented views a `DeviceLoader(views=K, seed=seed)`
    shows, at the keys that loader yields. `mean`/`std` are the dataset's normalisation.
    `dtype` None keeps the dtype the teacher produced (bf16 under bf16 autocast: exact, and
    half the memory of float32, which matters at K x N rows).
    """
    from datasets import DeviceLoader  # lazy: datasets imports its readers

    device = torch.device(device)
    freeze(teacher)
    loader = DeviceLoader(split, batch_size=batch_size, device=device, mean=mean, std=std,
                          augment=augment, shuffle=False, seed=seed, drop_last=False,
                          channels_last=channels_last, views=views, augment_pixels=augment_pixels)
    views = loader.views  # None without augmentation: every view is the same image
    out: torch.Tensor | None = None
    with torch.inference_mode():
        for view in range(1, (views or 1) + 1):
            loader.set_epoch(view)
            for x, _, idx in loader:
                with autocast(device, autocast_dtype):
                    logits = teacher(x)
                if out is None:
                    out = torch.empty((views or 1) * len(split), logits.shape[1],
                                      dtype=dtype or logits.dtype, device=device)
                out[idx] = logits.to(out.dtype)
    if out is None:
        raise ValueError("compute_logits got an empty split")
    return out


class TeacherLogits:
    """What the loop asks for: `train_logits(x, idx)` per batch and `val_logits` (agreement).

    With `train_cache` the batch's rows are looked up by idx; without it the teacher runs
    on x (the augmented batch) under inference_mode, in the trial's autocast precision.
    """

    trains = False  # frozen: nothing to do when the loss ignores teacher logits

    def __init__(self, teacher: nn.Module | None, *, train_cache: torch.Tensor | None = None,
                 val_logits: torch.Tensor | None = None,
                 autocast_dtype: torch.dtype | None = None) -> None:
        if teacher is None and train_cache is None:
            raise ValueError("TeacherLogits needs a teacher model or a train-logit cache")
        self.teacher = None if teacher is None else freeze(teacher)
        self.train_cache = train_cache
        self.val_logits = val_logits
        self.autocast_dtype = autocast_dtype

    def train_logits(self, x: torch.Tensor, idx: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        if self.train_cache is not None:
            return self.train_cache[idx]
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
