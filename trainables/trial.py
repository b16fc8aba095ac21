"""Running one stage's trial: data, model, optimiser, resume, the loop, checkpoints, reports.

Shared by `train_teacher` and `distill_student`, which only choose the config class, the
loss and the teacher-logit source. Each epoch writes a checkpoint directory
(`checkpoint.pt`, see checkpoint.py) and reports it with the epoch's metrics; a trial
restarted by Tune (or a local_session with resume_from) continues exactly after the last
checkpointed epoch: weights, optimiser, scheduler, epoch and RNG streams are restored, and
the loader's order depends only on (seed, epoch). A feature method's loss is bound to the
student and the teacher here (taps, connectors); its connectors are optimised with the
student and saved under the checkpoint's `connectors` key (never in the student's
state_dict, so exports and checkpoint.load_model see the student alone). A teacher source with state (an online
teacher: weights, optimiser, schedule) is saved in and restored from the same checkpoint.

In a worker of a multi-worker trial (trainables/distributed.py: `distributed.current()`) the
same function runs on every worker: the loaders take this worker's shard of each batch
(global batch = batch_size x workers), the loop trains through DDP, and only rank 0 writes the
checkpoint each epoch (every rank reports: a collective). Resume reads the checkpoint the
driver's Tune trial was restored with, on every worker, so all start from the same state.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable

import torch

from kdtune.trainables import checkpoint, distributed, reporting
from kdtune.trainables.best_epoch import BestEpochTest, test_loader_for
from kdtune.trainables.config import TrainConfig
from kdtune.trainables.constraints import max_norm_constraint
from kdtune.trainables.loop import TeacherSource, fit
from kdtune.trainables.optim import create_optimizer, create_schedule
from kdtune.trainables.runtime import Runtime

EVAL_BATCH = 512  # eval has no gradients: bigger batches, fewer kernel launches

# (runtime, bundle, optimiser steps per epoch) -> the teacher-logit source of a distillation
# trial (the step count sizes an online teacher's lr schedule)
TeacherFactory = Callable[[Runtime, object, int], TeacherSource]


def load_data(cfg: TrainConfig, data=None):
    """The bundle passed by the driver (checked against cfg.dataset), else decode it here;
    under the config's own training augmentation when it sets one."""
    from kdtune import datasets

    if data is None:
        data = datasets.create_dataset(cfg.dataset, cfg.data_dir, download=cfg.download,
                                       val_fraction=cfg.val_fraction, seed=cfg.seed,
                                       subset=cfg.subset, image_size=cfg.image_size)
    elif data.name != cfg.dataset:
        raise ValueError(f"the trial was given dataset {data.name!r} but its config says "
                         f"dataset={cfg.dataset!r}; put the dataset name in the param space")
    return data.with_augment(cfg.augment, cfg.augment_pixels)


def train_views(cfg: TrainConfig, data) -> int | None:
    """The fixed augmented views the training loader cycles through (None: fresh ones)."""
    return cfg.augment_views if data.augment != "none" else None


def loaders(cfg: TrainConfig, data, rt: Runtime, shard: tuple[int, int] | None = None):
    """Train and val loaders; `shard` (rank, workers): this worker's part of each batch."""
    from kdtune.datasets import DeviceLoader

    common = dict(device=rt.device, mean=data.mean, std=data.std, seed=cfg.seed,
                  channels_last=rt.channels_last)
    if shard is not None:
        common["shard"] = shard
    workers = shard[1] if shard is not None else 1
    # drop_last keeps BatchNorm away from a 1-image final batch, when there is data to spare
    train = DeviceLoader(data.train, batch_size=cfg.batch_size, augment=data.augment,
                         augment_pixels=data.augment_pixels,
                         shuffle=True, drop_last=len(data.train) > cfg.batch_size * workers,
                         views=train_views(cfg, data), **common)
    val = DeviceLoader(data.val, batch_size=max(cfg.batch_size, EVAL_BATCH), augment="none",
                       shuffle=False, drop_last=False, **common)
    return train, val


def run_trial(cfg: TrainConfig, data, loss_fn: torch.nn.Module,
              make_teacher: TeacherFactory | None = None, test_best_epoch: bool = False) -> dict:
    """Train `cfg.epochs` epochs (resuming if Tune hands us a checkpoint); the last metrics.

    `test_best_epoch`: keep the best-val epoch's weights and evaluate them once on the test
    split after the last epoch (best_epoch.py; the final stage's retraining runs)."""
    from kdtune import models
    from kdtune.models.mlp import resolve_input_fill
    from kdtune.models.zoo import resolve_zoo_input

    data = load_data(cfg, data)
    torch.manual_seed(cfg.seed)
    model = models.create_model(cfg.model, data.num_classes, data.in_shape,
                                **resolve_zoo_input(cfg.model, resolve_input_fill(
                                    cfg.model, cfg.model_build_kwargs(), data.mean, data.std), data.mean, data.std))
    rt = Runtime.from_config(cfg, model)
    rt.apply()
    static = {"params": models.count_params(model),
              "flops": models.flops_per_image(model, data.in_shape)}
    model = rt.prepare(model)
    dist = distributed.current()  # None: a one-process trial (every trial with workers 1)
    train_loader, val_loader = loaders(cfg, data, rt, None if dist is None else dist.shard)
    teacher = make_teacher(rt, data, len(train_loader)) if make_teacher is not None else None
    if "features" in getattr(loss_fn, "needs", ()) and teacher is not None and loss_fn.uses_teacher:
        # a feature method: taps on both models, connectors built from their shapes
        loss_fn.bind(model, teacher.teacher, data.in_shape, source=teacher,
                     train_labels=data.train.labels)
    connectors = loss_fn if any(True for _ in loss_fn.parameters()) else None
    # the connectors train with the student (same optimiser, lr, weight decay and schedule)
    optimizer = create_optimizer(cfg, model if connectors is None else torch.nn.ModuleList([model, connectors]))
    schedule = create_schedule(cfg, optimizer, len(train_loader))
    probes = models.gradient_probes(model) if cfg.track_grad_norms else ()
    best = (BestEpochTest(model, test_loader_for(data, rt, val_loader.batch_size, cfg.seed), rt, cfg.epochs)
            if test_best_epoch else None)

    start_epoch, last = 0, {}
    resume = reporting.resume_checkpoint()
    if resume is not None:
        start_epoch, last = _restore(resume, model, optimizer, schedule, teacher, connectors)
        if best is not None:
            best.restore(resume)
    meta, config = data.meta(), cfg.to_dict()

    constraint = max_norm_constraint(model, cfg.max_norm)

    def on_epoch(metrics: dict) -> None:
        if constraint is not None:  # does the radius bind? 0.0: the constraint is doing nothing
            metrics["max_norm/at_bound"] = constraint.bound_fraction()
        if best is not None:
            metrics.update(best.after_epoch(metrics))
        if metrics.get("diverged"):
            reporting.report(metrics, None)  # nothing worth resuming from
            return
        if dist is not None and dist.rank != 0:
            reporting.report(metrics, None)  # rank 0 writes the checkpoint; every rank reports
            return
        teacher_state = None if teacher is None else teacher.state_dict()
        with tempfile.TemporaryDirectory(prefix="kdtune-ckpt-") as tmp:
            checkpoint.save_checkpoint(tmp, model=model, config=config, dataset_meta=meta,
                                       epoch=metrics["epoch"], metrics=metrics,
                                       optimizer=optimizer, scheduler_state=schedule.state_dict(),
                                       teacher_state=teacher_state,
                                       connectors=None if connectors is None else connectors.state_dict())
            if best is not None:
                best.save(tmp, config, meta)
            reporting.report(metrics, tmp)  # copied by report; tmp goes away after

    metrics = fit(model, train_loader, val_loader, loss_fn, optimizer, schedule, rt,
                  epochs=cfg.epochs, start_epoch=start_epoch, teacher=teacher,
                  grad_clip=cfg.grad_clip, probes=probes,
                  constraint=constraint, static_metrics=static,
                  on_epoch=on_epoch, dist=dist)
    return metrics or last


def _restore(path: str, model, optimizer, schedule, teacher: TeacherSource | None,
             connectors: torch.nn.Module | None = None) -> tuple[int, dict]:
    # CPU: the RNG states must be CPU tensors; load_state_dict copies weights to the device
    payload = checkpoint.load_payload(path, map_location="cpu")
    if payload["model_spec"] != model.kdtune_spec:
        raise checkpoint.CheckpointError(
            f"cannot resume from {path}: it holds {payload['model_spec']}, "
            f"this trial builds {model.kdtune_spec}")
    model.load_state_dict(payload["state_dict"])
    if payload.get("optimizer") is not None:
        optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload.get("scheduler"))
    teacher_state = payload.get("teacher_state")  # absent in checkpoints of frozen teachers
    if teacher is not None:
        teacher.load_state_dict(teacher_state)
    elif teacher_state is not None:
        raise checkpoint.CheckpointError(
            f"cannot resume from {path}: it holds an online teacher, this trial has none")
    if connectors is not None:
        if payload.get("connectors") is None:
            raise checkpoint.CheckpointError(
                f"cannot resume from {path}: it holds no connectors of a feature method")
        connectors.load_state_dict(payload["connectors"])
    checkpoint.set_rng_state(payload["rng"])
    return int(payload["epoch"]), dict(payload.get("metrics") or {})
