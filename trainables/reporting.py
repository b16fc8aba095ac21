"""The one wrapper of Ray Tune's session API, and a local stand-in for plain calls.

Every trainable reports through `report()` and resumes through `resume_checkpoint()`, so
the next Ray API change touches this file only. `METRIC` / `MODE` are the names the
search, the scheduler and analysis import.

Inside a Tune trial these call `ray.tune.report` / `ray.tune.get_checkpoint` (Ray 2.60:
`ray.train.report` raises inside a Tune function trainable). Outside Tune they record into a
`local_session`, which lets tests run a trainable as a plain call and resume it:

    with local_session() as rec:
        train_teacher({"epochs": 2})
    with local_session(resume_from=rec.checkpoints[0]) as rec2:
        train_teacher({"epochs": 2})        # continues at epoch 2
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

METRIC = "val_acc"  # the metric every scheduler and searcher optimises
MODE = "max"


@dataclass
class LocalSession:
    """What a trainable reported outside Tune: metric dicts and one checkpoint per report.

    `root` is None for the implicit session of a bare call: checkpoints are then dropped
    (nothing would clean them up), metrics are still kept.
    """

    root: str | None = None
    resume_from: str | None = None
    keep_last: int | None = None  # checkpoints kept on disk (None: all); a long run's disk cap
    log: str | None = None  # a JSON-lines file every report is appended to (survives a kill)
    results: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    def record(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.results.append(dict(metrics))
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(json.dumps(metrics, default=float) + "\n")
        if checkpoint_dir is None or self.root is None:
            return
        # Copy, as Ray does: the caller may delete its directory after report() returns.
        dest = os.path.join(self.root, f"checkpoint_{len(self.results):06d}")
        shutil.copytree(checkpoint_dir, dest)
        self.checkpoints.append(dest)
        if self.keep_last is not None:
            for old in self.checkpoints[:-self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
            self.checkpoints = self.checkpoints[-self.keep_last:]


_ACTIVE: LocalSession | None = None  # set by local_session()
_IMPLICIT = LocalSession()  # bare calls outside Tune and outside local_session()


@contextlib.contextmanager
def local_session(resume_from: str | None = None, root: str | None = None,
                  keep_last: int | None = None, log: str | None = None) -> Iterator[LocalSession]:
    """Record reports of plain (non-Tune) calls; checkpoints go under `root` (only the
    `keep_last` newest stay on disk when it is given), metrics also to the JSON-lines `log`.

    Without `root` a temporary directory is created and removed on exit, so copy what
    must outlive the block. `resume_from` is what `resume_checkpoint()` then returns.
    """
    global _ACTIVE
    owned = root is None
    if owned:
        root = tempfile.mkdtemp(prefix="kdtune-session-")
    else:
        os.makedirs(root, exist_ok=True)
    previous, _ACTIVE = _ACTIVE, LocalSession(root=root, resume_from=resume_from, keep_last=keep_last,
                                              log=log)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = previous
        if owned:
            shutil.rmtree(root, ignore_errors=True)


# In a worker of a multi-worker trial: its trainables.distributed.Distributed (set there by the
# worker loop), which reports to Ray Train and knows the checkpoint to resume from.
_WORKER = None


def _ddp_worker() -> bool:
    """True in a worker of a multi-worker trial (trainables/distributed.py)."""
    return _WORKER is not None


def in_tune() -> bool:
    """True inside a function trainable run by a Tuner (and no local session is active)."""
    if _ACTIVE is not None or _ddp_worker():
        return False
    try:
        from ray import tune
    except ImportError:  # Ray is a dependency, but plain calls need not pay for it
        return False
    with warnings.catch_warnings():  # outside a session Ray warns and returns None
        warnings.simplefilter("ignore")
        return tune.get_context().get_trial_id() is not None


def report(metrics: dict, checkpoint_dir: str | None = None) -> None:
    """Report one result (one epoch) with an optional checkpoint directory.

    The directory is copied (by Ray to its storage, or into the local session), so the
    caller may delete it afterwards. In a multi-worker trial's worker it goes to Ray Train
    (trainables/distributed.py), which hands rank 0's report to the trial's driver.
    """
    if _ddp_worker():
        _WORKER.report(metrics, checkpoint_dir)
    elif in_tune():
        import ray
        from ray import tune

        # Ray logs "Checkpoint successfully created" at INFO for every epoch of every trial.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # node_id: which Ray node ran the epoch (placement on a cluster; a string, not a metric).
        tune.report({**metrics, "node_id": ray.get_runtime_context().get_node_id()}, checkpoint=ckpt)
    else:
        (_ACTIVE or _IMPLICIT).record(metrics, checkpoint_dir)


def final(metrics: dict) -> dict | None:
    """What a trainable returns: the last metrics for plain calls, None inside Tune
    (Tune reports a returned dict as one more result: an extra training_iteration that
    ASHA would count as an epoch)."""
    return None if in_tune() else metrics


def resume_checkpoint() -> str | None:
    """Directory of the checkpoint to resume from, or None for a fresh start."""
    if _ddp_worker():  # the checkpoint the driver's Tune trial was restored with
        return _WORKER.resume_from
    if in_tune():
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        import pyarrow.fs

        if isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem):
            return ckpt.path
        return ckpt.to_directory()  # remote storage (s3://, gs://): download once
    return _ACTIVE.resume_from if _ACTIVE is not None else None


def trial_cpus() -> int:
    """Torch threads for this trial: the whole CPUs Tune reserved for it, at least one;
    torch's thread count outside Tune.

    A fraction rounds down (and up to 1 below a whole CPU): torch threads are whole, and
    trials given 0.5 CPU each share cores, so each taking the machine's every thread would
    oversubscribe the CPU by the number of trials running side by side.
    """
    if in_tune():
        from ray import tune

        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 0)
        return max(1, math.floor(cpus))
    return torch.get_num_threads()
