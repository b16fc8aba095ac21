"""Teacher stage trainable: supervised training (cross-entropy, optional label smoothing).

Passed to Ray Tune as `tune.with_parameters(train_teacher, data=bundle)`; also callable
directly (inside `reporting.local_session()` to keep the checkpoints):

    python -c "from trainables.teacher import train_teacher; print(train_teacher({'epochs': 2}))"
"""
from __future__ import annotations

from trainables import reporting
from trainables.config import TeacherConfig
from trainables.losses import KDLoss
from trainables.stage import run_stage


def train_teacher(config: dict, data=None) -> dict:
    """Train a teacher for `config` (TeacherConfig keys); report and checkpoint each epoch.

    `data`: a DatasetBundle, or None to load it from the config. Returns the last epoch's
    metrics (None inside Tune: see reporting.final)."""
    cfg = TeacherConfig.from_dict(config)
    # alpha = 0: KDLoss is plain cross-entropy, the same module the students use.
    loss = KDLoss(alpha=0.0, temperature=1.0, label_smoothing=cfg.label_smoothing)
    return reporting.final(run_stage(cfg, data, loss))
