"""Teacher stage trainable: supervised training (cross-entropy, optional label smoothing).

Passed to Ray Tune as `tune.with_parameters(train_teacher, data=bundle)`; also callable
directly (inside `reporting.local_session()` to keep the checkpoints):

    python -c "from trainables.teacher import train_teacher; print(train_teacher({'epochs': 2}))"
"""
from __future__ import annotations

from kdtune.trainables import distributed, reporting
from kdtune.trainables.config import TeacherConfig
from kdtune.trainables.losses import supervised_loss
from kdtune.trainables.trial import run_trial


def train_teacher(config: dict, data=None, worker_resources: dict | None = None) -> dict:
    """Train a teacher for `config` (TeacherConfig keys); report and checkpoint each epoch.

    `data`: a DatasetBundle, or None to load it from the config. Returns the last epoch's
    metrics (None inside Tune: see reporting.final). With `workers` > 1 in the config (inside
    a Tune trial, Ray initialised) it trains on that many DDP workers, each asking
    `worker_resources` ({"CPU": c, "GPU": g}; trainables/distributed.py)."""
    cfg = TeacherConfig.from_dict(config)
    if cfg.workers > 1 and distributed.current() is None:
        distributed.launch(_teacher_worker, config, cfg.workers, data=data, resources=worker_resources)
        return reporting.final({})
    # Plain cross-entropy: the Hinton loss with alpha = 0, the module the baseline uses.
    loss = supervised_loss(cfg.label_smoothing)
    return reporting.final(run_trial(cfg, data, loss))


def _teacher_worker(config: dict, data, extra: dict) -> None:
    """One DDP worker of a multi-worker teacher trial."""
    train_teacher(config, data)
