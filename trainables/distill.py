"""Student stage trainable: Hinton distillation from a checkpointed teacher, or the baseline.

A DistillConfig with alpha == 0 or no teacher_checkpoint trains the undistilled baseline
(plain cross-entropy). With a teacher, the teacher is rebuilt from its checkpoint's spec,
checked against the dataset, frozen, and its logits come from a cache (the driver's
`teacher_logits`, else computed here once) or online per batch (augmented inputs):
teacher_logits="auto" caches when the dataset is not augmented, or when the trial cycles
through `augment_views` fixed augmented views (the cache then has a row per view and image).

With `online_teacher` (online distillation) there is no checkpoint: the teacher is built
here and trained in the same loop as the student, CE on the labels only, and the student
distils from its current, detached logits (see online_teacher.py). Metrics then also carry
teacher_val_acc, teacher_val_loss and teacher_train_loss; `params` stays the student's.

    tune.with_parameters(distill_student, data=bundle, teacher_logits=train_logits)
    python -c "from trainables.distill import distill_student as d; print(d({'epochs': 2}))"
"""
from __future__ import annotations

import torch

from trainables import reporting
from trainables.config import DistillConfig
from trainables.losses import KDLoss
from trainables.online_teacher import OnlineTeacher
from trainables.runtime import Runtime
from trainables.stage import EVAL_BATCH, run_stage, train_views
from trainables.teacher_logits import TeacherLogits, compute_logits, for_inference, load_teacher


def distill_student(config: dict, data=None, teacher_logits: torch.Tensor | None = None) -> dict:
    """Train one student for `config` (DistillConfig keys); report and checkpoint each epoch.

    `data`: a DatasetBundle, or None to load it from the config. `teacher_logits`: the
    teacher's float32 logits for every row of data.train (computed once by the driver),
    used when logits are cached. Returns the last metrics (None inside Tune: see
    reporting.final)."""
    cfg = DistillConfig.from_dict(config)
    if cfg.online_teacher is not None and teacher_logits is not None:
        raise ValueError("teacher_logits were given but the config trains an online_teacher, "
                         "whose logits change every batch: do not pass teacher_logits")
    if cfg.teacher_checkpoint is None and teacher_logits is not None and cfg.alpha > 0:
        raise ValueError("teacher_logits were given but the config has no teacher_checkpoint: "
                         "set teacher_checkpoint (it is recorded with the student)")
    loss = KDLoss(cfg.alpha, cfg.temperature, label_smoothing=cfg.label_smoothing)
    if cfg.online_teacher is not None:
        def make_online(rt: Runtime, bundle, steps_per_epoch: int) -> OnlineTeacher:
            return OnlineTeacher.build(cfg, rt, bundle, steps_per_epoch)

        return reporting.final(run_stage(cfg, data, loss, make_online, cfg.test_best_epoch))
    if cfg.teacher_checkpoint is None:
        return reporting.final(run_stage(cfg, data, loss, test_best_epoch=cfg.test_best_epoch))

    def make_teacher(rt: Runtime, bundle, steps_per_epoch: int) -> TeacherLogits:
        teacher = rt.prepare(for_inference(load_teacher(cfg.teacher_checkpoint, rt.device, bundle.meta()),
                                           rt.autocast_dtype))
        common = dict(mean=bundle.mean, std=bundle.std, autocast_dtype=rt.autocast_dtype,
                      channels_last=rt.channels_last)
        # Val logits are always computed once: agreement is reported for every student.
        val = compute_logits(teacher, bundle.val, EVAL_BATCH, rt.device, **common)
        views = train_views(cfg, bundle)
        cached = cfg.teacher_logits == "cached" or (
            cfg.teacher_logits == "auto" and (bundle.augment == "none" or views is not None))
        cache = None
        if cached and loss.uses_teacher:
            if teacher_logits is not None:
                cache = _check_cache(teacher_logits, bundle, views)
            else:  # views: their logits in the teacher's own dtype, as the driver keeps them
                per_view = dict(augment=bundle.augment, views=views, seed=cfg.seed, dtype=None)
                cache = compute_logits(teacher, bundle.train, EVAL_BATCH, rt.device, **common,
                                       **(per_view if views else {}))
            cache = cache.to(rt.device)  # KDLoss upcasts bf16 view logits itself
        return TeacherLogits(teacher, train_cache=cache, val_logits=val,
                             autocast_dtype=rt.autocast_dtype)

    return reporting.final(run_stage(cfg, data, loss, make_teacher, cfg.test_best_epoch))


def _check_cache(logits: torch.Tensor, bundle, views: int | None) -> torch.Tensor:
    expected = ((views or 1) * len(bundle.train), bundle.num_classes)
    if tuple(logits.shape) != expected:
        what = f"{views} augmented views x " if views else ""
        raise ValueError(f"teacher_logits have shape {tuple(logits.shape)}; expected {expected} "
                         f"(one row per {what}training image of this dataset split)")
    return logits
