"""Student stage trainable: distillation (cfg.kd_method) from a checkpointed teacher, or the baseline.

A DistillConfig with alpha == 0 or no teacher_checkpoint trains the undistilled baseline
(plain cross-entropy). With a teacher, its logits come from a cache or from the teacher run
online per batch (augmented inputs): teacher_logits="auto" reads the cache when the dataset
is not augmented, or when the trial cycles through `augment_views` fixed augmented views
(the cache then has an array per view). The cache is the search's (`teacher_logits`, built
once on the workers and shared read-only, search/stages/teacher_cache.py), else computed here
once. The search's cache also carries the validation logits (for `agreement`), so a trial
that reads its training rows from it never loads the teacher at all; an online-teacher
trial loads it (trainables/teacher_logits.prepare_teacher) for the training batches only.

A feature method (fitnet, at, sp, pkt, rkd, crd, reviewkd) runs its frozen teacher online on
every batch with feature taps (feature_teacher.py); run_trial binds the loss to both models.

With `online_teacher` (online distillation) there is no checkpoint: the teacher is built
here and trained in the same loop as the student, CE on the labels only, and the student
distils from its current, detached logits (see online_teacher.py). Metrics then also carry
teacher_val_acc, teacher_val_loss and teacher_train_loss; `params` stays the student's.

    tune.with_parameters(distill_student, data=bundle, teacher_logits=shared_cache)
    python -c "from trainables.distill import distill_student as d; print(d({'epochs': 2}))"
"""
from __future__ import annotations

from kdtune.trainables import distributed, reporting
from kdtune.trainables.config import DistillConfig
from kdtune.trainables.feature_teacher import feature_teacher
from kdtune.trainables.logit_cache import LogitCache, as_cache
from kdtune.trainables.losses import loss_from_config
from kdtune.trainables.online_teacher import OnlineTeacher
from kdtune.trainables.runtime import Runtime
from kdtune.trainables.trial import EVAL_BATCH, run_trial, train_views
from kdtune.trainables.teacher_logits import TeacherLogits, compute_logits, prepare_teacher


def distill_student(config: dict, data=None, teacher_logits=None,
                    worker_resources: dict | None = None) -> dict:
    """Train one student for `config` (DistillConfig keys); report and checkpoint each epoch.

    `data`: a DatasetBundle, or None to load it from the config. `teacher_logits`: the
    teacher's logits computed once for this split: a search's SharedLogitCache, a
    LogitCache, or a (views * N, classes) tensor of train rows (trainables/logit_cache.py).
    Returns the last metrics (None inside Tune: see reporting.final). With `workers` > 1 (the
    final stage's --final-workers) it trains on that many DDP workers, each asking
    `worker_resources` (trainables/distributed.py); an online teacher or a feature method,
    whose teacher trains or is tapped inside the step, is refused there."""
    cfg = DistillConfig.from_dict(config)
    if cfg.workers > 1 and distributed.current() is None:
        if cfg.online_teacher is not None or "features" in loss_from_config(cfg).needs:
            raise ValueError("workers > 1 trains the student alone through DDP: an online teacher or "
                             "a feature method (teacher taps, connectors) runs single-process (workers 1)")
        distributed.launch(_distill_worker, config, cfg.workers, data=data,
                           extra={"teacher_logits": teacher_logits}, resources=worker_resources)
        return reporting.final({})
    if cfg.online_teacher is not None and teacher_logits is not None:
        raise ValueError("teacher_logits were given but the config trains an online_teacher, "
                         "whose logits change every batch: do not pass teacher_logits")
    if cfg.teacher_checkpoint is None and teacher_logits is not None and cfg.alpha > 0:
        raise ValueError("teacher_logits were given but the config has no teacher_checkpoint: "
                         "set teacher_checkpoint (it is recorded with the student)")
    loss = loss_from_config(cfg)  # cfg.kd_method with its fields (feature methods: bound in run_trial)
    if cfg.online_teacher is not None:
        def make_online(rt: Runtime, bundle, steps_per_epoch: int) -> OnlineTeacher:
            return OnlineTeacher.build(cfg, rt, bundle, steps_per_epoch)

        return reporting.final(run_trial(cfg, data, loss, make_online, cfg.test_best_epoch))
    if cfg.teacher_checkpoint is None:
        return reporting.final(run_trial(cfg, data, loss, test_best_epoch=cfg.test_best_epoch))

    def make_teacher(rt: Runtime, bundle, steps_per_epoch: int) -> TeacherLogits:
        if "features" in loss.needs:  # online with taps; only the val logits may come from a cache
            cache = as_cache(teacher_logits, None)
            if cache is not None:
                _check_cache(cache, bundle, None, False)
            val = cache.val_logits(rt.device) if cache is not None and cache.val is not None else None
            return feature_teacher(cfg.teacher_checkpoint, bundle, rt, val, EVAL_BATCH)
        views = train_views(cfg, bundle)
        cached = cfg.teacher_logits == "cached" or (
            cfg.teacher_logits == "auto" and (bundle.augment == "none" or views is not None))
        rows_wanted = cached and loss.uses_teacher
        cache = as_cache(teacher_logits, views)
        if cache is not None:
            _check_cache(cache, bundle, views, rows_wanted)
        has_rows = cache is not None and cache.views > 0
        has_val = cache is not None and cache.val is not None
        teacher = None
        if not has_val or (rows_wanted and not has_rows) or (not cached and loss.uses_teacher):
            teacher, _ = prepare_teacher(cfg.teacher_checkpoint, bundle.meta(), rt)
        common = dict(mean=bundle.mean, std=bundle.std, autocast_dtype=rt.autocast_dtype,
                      channels_last=rt.channels_last)
        # Val logits always: agreement is reported for every student.
        val = cache.val_logits(rt.device) if has_val else compute_logits(
            teacher, bundle.val, EVAL_BATCH, rt.device, **common)
        rows = None
        if rows_wanted:
            if has_rows:
                rows = cache
            else:  # views: their logits in the teacher's own dtype, as a search keeps them
                per_view = dict(augment=bundle.augment, augment_pixels=bundle.augment_pixels, views=views,
                                seed=cfg.seed, dtype=None)
                rows = LogitCache.from_tensors(compute_logits(
                    teacher, bundle.train, EVAL_BATCH, rt.device, **common, **(per_view if views else {})),
                    None, views or 1)
        return TeacherLogits(teacher, train_cache=rows, val_logits=val,
                             autocast_dtype=rt.autocast_dtype)

    return reporting.final(run_trial(cfg, data, loss, make_teacher, cfg.test_best_epoch))


def _check_cache(cache: LogitCache, bundle, views: int | None, rows_wanted: bool) -> None:
    if rows_wanted and cache.views:
        cache.check(views, len(bundle.train), len(bundle.val), bundle.num_classes)
    elif cache.val is not None and cache.val.shape[0] != len(bundle.val):
        raise ValueError(f"teacher_logits hold {cache.val.shape[0]} validation rows; the split "
                         f"has {len(bundle.val)}")


def _distill_worker(config: dict, data, extra: dict) -> None:
    """One DDP worker of a multi-worker student trial (the final stage's retraining)."""
    distill_student(config, data, teacher_logits=extra.get("teacher_logits"))
