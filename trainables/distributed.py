"""Multi-worker trials: DDP through Ray Train's TorchTrainer, launched inside a Tune trial.

A config with `workers` N > 1 (the teacher: --teacher-workers; the final stage's retraining:
--final-workers) trains as N data-parallel processes. The Tune trial stays the unit the search
sees (one trial, one config, its per-epoch results and checkpoints, resumed by Tune); inside it
the trainable is only a *driver*: it starts a `ray.train.torch.TorchTrainer` with N workers
(gloo on CPU, NCCL when the workers have GPUs), and forwards each epoch's report of rank 0 to
`ray.tune.report` with its checkpoint. This is the pattern Ray 2.60 supports (Train V2, on by
default: passing a Trainer to a Tuner is deprecated; docs.ray.io "Hyperparameter Tuning with
Ray Tune", Train V2 user guide), with one change: Ray's `TuneReportCallback` forwards only
the checkpoint's *path* as a metric, so Tune would hold no checkpoint of its own and neither
`--resume`, Tune's retries nor the stages' best-checkpoint lookup would see one. `_forward_callback`
hands the metrics and the Train checkpoint to the driver, which reports them to Tune as a
Tune checkpoint (a copy, like any trial's) before the workers' next report is accepted.

Inside the workers the trial runs `run_trial` (trainables/trial.py) with a `Distributed`:
- the model is wrapped in `torch.nn.parallel.DistributedDataParallel` for training (gradients
  averaged over the workers, in buckets overlapping the backward pass); evaluation runs the
  unwrapped model after rank 0's buffers (BatchNorm statistics) are broadcast;
- the loaders shard each batch like `DistributedSampler`: the epoch's order is the same on
  every worker (a function of seed and epoch), each global batch of `batch_size x workers`
  rows is split into equal per-worker slices (a short last batch is padded with rows from the
  epoch's start, as DistributedSampler pads, so every worker steps the same number of times);
  validation rows are split without padding;
- the epoch's sums (loss, correct, images, gradient norms, val CE) are all-reduced, so every
  worker computes the same metrics a one-process trial would compute from the same batches;
- only rank 0 writes checkpoints; every rank calls `ray.train.report` (a collective in Train V2).

N = 1 never comes here: the trainable runs in the Tune trial's own process, as before.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdtune.trainables import reporting

# How often (s) the Train controller polls its workers, i.e. picks up a report. Ray's default
# is 2 s; kdtune's epochs are seconds long on small data, so poll faster unless the user set it.
POLL_S = "0.5"


@dataclass
class Distributed:
    """This worker's place in the group and the collectives the loop needs."""

    rank: int
    world: int
    resume_from: str | None = None  # the checkpoint directory the driver's Tune trial resumes from

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the workers, in place (gloo reduces CPU tensors, NCCL device tensors)."""
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every worker when `flag` is true on any (one collective)."""
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_reduce(t).item() > 0)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The DDP wrapper the training steps run through (parameters synced from rank 0)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every worker."""
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, src=0)

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """This worker's report (reporting.report calls it): every rank takes part (Train V2's
        report is a collective); rank 0 alone passes its checkpoint."""
        import ray.train

        ckpt = None
        if checkpoint_dir is not None and self.rank == 0:
            ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(dict(metrics), checkpoint=ckpt)


def current() -> Distributed | None:
    """The worker's Distributed inside a multi-worker trial's worker, else None."""
    return reporting._WORKER


# ---- driver side (the Tune trial) --------------------------------------------------------

def _forward_callback(queue, ack):
    """Train controller callback: each report (rank 0's metrics, the persisted checkpoint) goes
    to the driver through `queue`; the controller waits for the driver's `ack`, so Train never
    deletes a checkpoint (num_to_keep=1) before Tune has copied it. Built when a multi-worker
    trial starts: importing ray.train costs ~1-3 s of every trial process that never uses it."""
    from ray.train.v2.api.callback import UserCallback

    class _Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            queue.put((dict(metrics[0]), checkpoint))
            ack.get()

    return _Forward()


def launch(worker_fn: Callable[[dict, Any, dict], Any], config: dict, workers: int, *,
           data: Any = None, extra: dict | None = None, resources: dict | None = None) -> None:
    """Run `worker_fn(config, data, extra)` on `workers` DDP workers from inside a Tune trial
    and forward their per-epoch reports (with checkpoints) to Tune; outside Tune (Ray
    initialised) to the active `reporting.local_session`, resuming from its `resume_from`.

    `resources`: what each worker asks, {"CPU": c, "GPU": g} (a search passes its per-trial
    resources; default one CPU); its CPUs are the worker's torch threads unless the config
    sets num_threads. Raises the workers' error when training fails."""
    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    in_tune = reporting.in_tune()
    resources = dict(resources or {"CPU": 1})
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", POLL_S)
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    ack = Queue(actor_options={"num_cpus": 0})
    if in_tune:
        resume = tune.get_checkpoint()  # a Checkpoint on the trial's storage: any node reads it
    else:  # a plain call (a local_session): its resume_from, a local directory
        local = reporting.resume_checkpoint()
        resume = ray.train.Checkpoint.from_directory(local) if local else None
    loop_config = {"fn": worker_fn, "config": dict(config), "data": ray.put(data) if data is not None else None,
                   "extra": extra or {}, "resume": resume, "threads": max(1, int(cpus))}
    # Train persists rank 0's checkpoint here and the driver copies it into Tune's: inside the
    # trial's folder (on a cluster the shared storage path, which every node sees), removed after.
    if in_tune:
        storage = os.path.join(tune.get_context().get_trial_dir(), "ddp-workers")
        os.makedirs(storage, exist_ok=True)
    else:
        storage = tempfile.mkdtemp(prefix="kdtune-ddp-")
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _worker_loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=bool(gpus),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"ddp-{tune.get_context().get_trial_id() if in_tune else os.getpid()}-{int(time.time())}",
            storage_path=storage,
            callbacks=[_forward_callback(queue, ack)],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=0)))  # Tune retries the trial
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the trial's thread below
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="kdtune-ddp-fit", daemon=True)
    thread.start()
    try:
        while True:
            try:
                metrics, checkpoint = queue.get(timeout=0.5)
            except Empty:
                if not thread.is_alive():
                    break
                continue
            try:
                with checkpoint.as_directory() if checkpoint is not None else _none() as path:
                    metrics.pop("node_id", None)
                    reporting.report(metrics, path)  # copied to the trial's storage by Tune
            finally:
                ack.put(True)
        thread.join()
    finally:
        import shutil

        shutil.rmtree(storage, ignore_errors=True)
    if "error" in outcome:
        raise outcome["error"]


class _none:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _worker_loop(loop_config: dict) -> None:
    """One DDP worker: the trial's own trainable under this worker's Distributed."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    resume = loop_config["resume"]
    resume_dir = None
    if resume is not None:
        import pyarrow.fs

        resume_dir = resume.path if isinstance(resume.filesystem, pyarrow.fs.LocalFileSystem) \
            else resume.to_directory()
    data = loop_config["data"]
    data = ray.get(data) if data is not None else None
    config = dict(loop_config["config"])
    config.setdefault("num_threads", loop_config["threads"])
    if torch.cuda.is_available() and config.get("device", "auto") in ("auto", "cuda"):
        import ray.train.torch

        config["device"] = str(ray.train.torch.get_device())  # this worker's own GPU
    reporting._WORKER = Distributed(ctx.get_world_rank(), ctx.get_world_size(), resume_dir)
    try:
        loop_config["fn"](config, data, loop_config["extra"])
    finally:
        reporting._WORKER = None
