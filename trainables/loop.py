"""THE train/eval loop shared by every stage (teacher, baseline, distilled student).

Stages differ only in the loss they pass (trainables.losses; without a teacher it is plain
cross-entropy) and
an optional teacher-logit source: a frozen teacher (teacher_logits.TeacherLogits) or one
trained in the same pass (online_teacher.OnlineTeacher, online distillation). Hot-path
statistics stay on the device and are read once per epoch (one host sync), plus a cheap
finiteness check every `CHECK_EVERY` batches so a diverged trial stops early instead of
grinding NaNs for a whole epoch.

    fit(model, train_loader, val_loader, loss_fn, optimizer, schedule, runtime,
        epochs=10, on_epoch=lambda metrics: ...)

Per-epoch metrics: epoch (1-based), train_loss, train_acc, val_loss (plain CE, comparable
across baseline and distilled students), val_acc, lr (at the start of the epoch),
epoch_time_s (train + eval), images_per_s (training images / training seconds), diverged (0),
`agreement` (student-teacher top-1 agreement on val) when a teacher is given, what the
teacher source adds at the end of the epoch (an online teacher: teacher_val_acc, ...), and
`grad_norm/<probe>` (mean over the epoch's batches) when probes are given. A non-finite
loss ends the run with diverged=1, a stop_reason and val_acc=0.0.

With `dist` (a multi-worker trial's worker, trainables/distributed.py) the model trains
through DistributedDataParallel on this worker's shard of each batch, the epoch's sums are
all-reduced (one collective more per epoch, one per divergence check) and evaluation runs the
unwrapped model on this worker's share of the validation rows after rank 0's buffers are
broadcast; without it (every one-process trial) nothing of that runs.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.trainables.optim import Schedule

if TYPE_CHECKING:
    from kdtune.trainables.distributed import Distributed
from kdtune.trainables.runtime import Runtime

CHECK_EVERY = 50  # batches between divergence checks (each is one host sync)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (x, y, row idx)


class TeacherSource(Protocol):
    """Teacher logits for a training batch, and for the whole val split (for agreement).

    `trains`: the source trains its teacher inside `train_logits` (online distillation), so
    the loop calls it for every batch even when the loss ignores teacher logits (alpha == 0).
    Logits returned by `train_logits` carry no autograd graph: the student never
    back-propagates into a teacher. `end_epoch(val_loader)` runs after the epoch's training
    and before the student's evaluation (it may refresh `val_logits`); it returns metrics to
    report. `state_dict()` is what a checkpoint must hold to resume the source (None: nothing).
    """

    val_logits: torch.Tensor | None
    trains: bool

    def train_logits(self, x: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def end_epoch(self, val_loader: "Batches") -> dict[str, float]: ...

    def state_dict(self) -> dict | None: ...

    def load_state_dict(self, state: dict | None) -> None: ...


class Diverged(Exception):
    """Raised inside an epoch when the loss stops being finite."""


def train_epoch(model: nn.Module, loader: Batches, loss_fn: nn.Module,
                optimizer: torch.optim.Optimizer, schedule: Schedule, rt: Runtime, *,
                teacher: TeacherSource | None = None, grad_clip: float | None = None,
                probes: Sequence[tuple[str, nn.Module]] = (),
                constraint: Callable[[], None] | None = None,
                dist: "Distributed | None" = None) -> dict[str, float]:
    """One pass over `loader`; returns train_loss, train_acc, images, seconds, grad norms.
    `constraint` (e.g. constraints.max_norm_constraint) runs after every optimiser step.
    `dist`: `model` is this worker's DDP wrapper and the returned figures are the workers' totals."""
    model.train()
    dev = rt.device
    loss_sum = torch.zeros((), device=dev)  # sum of per-batch mean loss x batch size
    correct = torch.zeros((), device=dev, dtype=torch.long)
    grad_sum = torch.zeros(len(probes), device=dev)
    n_images = n_batches = 0
    # An online teacher trains in train_logits: it is called even when alpha == 0.
    want_teacher = teacher is not None and (
        teacher.trains or getattr(loss_fn, "uses_teacher", True))
    params = [p for p in model.parameters() if p.requires_grad]
    # Losses with progress-dependent weights (DKD's warm-up) learn how far into the epoch
    # each batch is; a loader without a length leaves them at per-epoch weights.
    progress = getattr(loss_fn, "set_epoch_fraction", None) if hasattr(loader, "__len__") else None
    total = max(len(loader), 1) if progress is not None else 1
    start = time.perf_counter()
    for x, y, idx in loader:
        if progress is not None:
            progress(min((n_batches + 1) / total, 1.0))
        t_logits = teacher.train_logits(x, idx, y) if want_teacher else None
        with rt.autocast():
            out = model(x)
        loss = loss_fn(out, y, t_logits)  # float32 inside every trainables.losses loss
        optimizer_step(loss, optimizer, schedule, params, grad_clip=grad_clip, probes=probes,
                       grad_sum=grad_sum, constraint=constraint)
        loss_sum += loss.detach() * y.shape[0]
        correct += (out.detach().argmax(1) == y).sum()
        n_images += y.shape[0]
        n_batches += 1
        if n_batches % CHECK_EVERY == 0 and _any(not torch.isfinite(loss_sum), dist, dev):
            raise Diverged(f"non-finite training loss in batch {n_batches}")
    if dist is None:
        stats = torch.cat([torch.stack([loss_sum, correct.float()]), grad_sum]).tolist()  # 1 sync
    else:  # the workers' totals: images and batches too (every worker steps the same count)
        counts = torch.tensor([n_images, n_batches], dtype=torch.float32, device=dev)
        stats = dist.all_reduce(torch.cat([torch.stack([loss_sum, correct.float()]), grad_sum, counts])).tolist()
        n_images, n_batches = int(stats[-2]), int(stats[-1])
        stats = stats[:-2]
    seconds = time.perf_counter() - start
    if not math.isfinite(stats[0]):
        raise Diverged("non-finite training loss")
    out_metrics = {
        "train_loss": stats[0] / max(n_images, 1),
        "train_acc": stats[1] / max(n_images, 1),
        "images": n_images,
        "seconds": seconds,
    }
    for (name, _), total in zip(probes, stats[2:]):
        out_metrics[f"grad_norm/{name}"] = total / max(n_batches, 1)
    return out_metrics


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, schedule: Schedule,
                   params: Sequence[nn.Parameter], *, grad_clip: float | None = None,
                   probes: Sequence[tuple[str, nn.Module]] = (),
                   grad_sum: torch.Tensor | None = None,
                   constraint: Callable[[], None] | None = None) -> None:
    """One training step on `loss`: back-propagate, clip the global L2 norm of `params`'
    gradients to `grad_clip`, step the optimiser, apply a weight `constraint` (max-norm,
    trainables/constraints.py) and a per-batch schedule. With `probes`, their gradient norms
    (before clipping) are added into `grad_sum` in place. The student's loop and the online
    teacher (online_teacher.py) both step through here."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if probes:
        grad_sum += torch.stack([_grad_norm(m) for _, m in probes])
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    if constraint is not None:
        constraint()
    schedule.after_batch()


def _any(flag: bool, dist: "Distributed | None", device: torch.device) -> bool:
    """`flag`, or on a multi-worker trial whether it holds on any worker (all stop together)."""
    return flag if dist is None else dist.any(flag, device)


def _grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of a probe's weight gradient (0 when it got none)."""
    grad = module.weight.grad
    if grad is None:
        return torch.zeros((), device=module.weight.device)
    return torch.linalg.vector_norm(grad.float())


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Batches, rt: Runtime,
             reference_logits: torch.Tensor | None = None,
             out_logits: torch.Tensor | None = None,
             dist: "Distributed | None" = None) -> dict[str, float]:
    """val_loss (plain CE), val_acc, and agreement with `reference_logits` (rows by idx);
    the model's float32 logits are also written into `out_logits` (rows by idx) if given.
    `dist`: `loader` holds this worker's share of the rows; the sums are all-reduced."""
    model.eval()
    dev = rt.device
    sums = torch.zeros(3, device=dev)  # CE sum, correct, agreeing with the reference
    n = 0
    for x, y, idx in loader:
        with rt.autocast():
            out = model(x)
        out = out.float()
        if out_logits is not None:
            out_logits[idx] = out
        pred = out.argmax(1)
        sums[0] += F.cross_entropy(out, y, reduction="sum")
        sums[1] += (pred == y).sum()
        if reference_logits is not None:
            sums[2] += (pred == reference_logits[idx].argmax(1)).sum()
        n += y.shape[0]
    if dist is not None:
        total = dist.all_reduce(torch.cat([sums, torch.tensor([float(n)], device=dev)]))
        sums, n = total[:3], int(total[3].item())
    loss, acc, agree = (sums / max(n, 1)).tolist()
    metrics = {"val_loss": loss, "val_acc": acc}
    if reference_logits is not None:
        metrics["agreement"] = agree
    return metrics


def fit(model: nn.Module, train_loader, val_loader, loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer, schedule: Schedule, rt: Runtime, *, epochs: int,
        start_epoch: int = 0, teacher: TeacherSource | None = None,
        grad_clip: float | None = None, probes: Sequence[tuple[str, nn.Module]] = (),
        constraint: Callable[[], None] | None = None, static_metrics: dict | None = None,
        on_epoch: Callable[[dict], None] = lambda m: None,
        dist: "Distributed | None" = None) -> dict:
    """Train epochs start_epoch+1 .. epochs; `on_epoch(metrics)` after each (and once on
    divergence, with diverged=1). Returns the last metrics ({} when nothing was left).
    `dist`: a multi-worker trial's worker (trains through DDP; see the module docstring)."""
    metrics: dict = {}
    train_model = model if dist is None else dist.wrap(model, rt.device)
    for epoch in range(start_epoch + 1, epochs + 1):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # reshuffle / re-augment reproducibly per epoch
        if hasattr(loss_fn, "set_epoch"):
            loss_fn.set_epoch(epoch)  # epoch-dependent weights (DKD's warm-up), resumes included
        lr = optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        try:
            train = train_epoch(train_model, train_loader, loss_fn, optimizer, schedule, rt,
                                teacher=teacher, grad_clip=grad_clip, probes=probes,
                                constraint=constraint, dist=dist)
            if dist is not None:
                dist.sync_buffers(model)  # rank 0's BatchNorm statistics: evaluated and saved
            teacher_metrics = teacher.end_epoch(val_loader) if teacher is not None else {}
            val = evaluate(model, val_loader, rt,
                           teacher.val_logits if teacher is not None else None, dist=dist)
            if not math.isfinite(val["val_loss"]):
                raise Diverged("non-finite validation loss")
        except Diverged as e:
            metrics = {**(static_metrics or {}), "epoch": epoch, "lr": lr, "val_acc": 0.0,
                       "diverged": 1, "stop_reason": f"diverged at epoch {epoch}: {e}"}
            on_epoch(metrics)
            return metrics
        schedule.after_epoch()
        images, seconds = train.pop("images"), train.pop("seconds")
        metrics = {
            **(static_metrics or {}),
            "epoch": epoch,
            **train,
            **val,
            **teacher_metrics,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - start,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "diverged": 0,
        }
        on_epoch(metrics)
    return metrics
