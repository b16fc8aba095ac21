"""The search's teacher-logit cache on a local 2-node Ray cluster: build time and trial memory.

1. Build time: `kdtune.search.stages.teacher_cache.build_cache` (tasks with a trial's resources, one CPU
   each here, sharded by view, spread over the nodes) for K views of CIFAR-shaped images
   with a random-weight resnet56 teacher, first on a one-node cluster (1 worker), then
   after a second node joined (2 workers), in the same process. Each build recomputes
   (no saved cache).
2. Trial memory: a distillation trial (mlp student, 1 CPU) in a fresh Ray worker process
   (`max_calls=1`: its peak RSS is its own) reading the search's shared cache, for K small
   and K large on the same data (CIFAR-100-shaped, cheap mlp teacher so K = 60 builds in
   seconds); for reference the same trial holding a private copy of the whole cache
   (the earlier design: a K x N tensor per trial). Peak RSS is the worker's VmHWM.

    python -m benchmarks.bench_teacher_cache                          # ~5 min on 2 CPU cores
    python -m benchmarks.bench_teacher_cache --memory-only --mem-n 10000     # part 2 on a local Ray
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.common import machine_line, print_table, random_bundle, save_teacher


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def trial_memory(bundle, shared, views: int, epochs: int, private: bool) -> dict:
    """Run one distillation trial here; this process's memory figures (MiB)."""
    import torch

    from kdtune.trainables import reporting
    from kdtune.trainables.distill import distill_student

    logits = shared
    if private:  # the earlier design: every trial holds the whole K x N cache itself
        cache = shared.resolve()
        flat = np.concatenate(cache.train)
        logits = torch.from_numpy(flat).view(torch.bfloat16).clone() if cache.dtype == "bfloat16" \
            else torch.from_numpy(flat).clone()
        del cache, flat
    config = {"dataset": bundle.name, "model": "mlp", "depth": 1, "width": 64, "epochs": epochs,
              "batch_size": 256, "augment_views": views, "num_threads": 1, "alpha": 0.9,
              "temperature": 4.0, "teacher_checkpoint": TEACHER["path"]}
    with tempfile.TemporaryDirectory() as tmp, reporting.local_session(root=tmp):
        distill_student(config, data=bundle, teacher_logits=logits)
    mib = lambda k: _status_kb(k) / 1024  # noqa: E731
    return {"peak_rss": mib("VmHWM"), "rss_anon": mib("RssAnon"), "rss_shmem": mib("RssShmem")}


TEACHER: dict = {}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[-3:]))
    p.add_argument("--build-n", type=int, default=2048, help="CIFAR-shaped images (build time)")
    p.add_argument("--build-views", type=int, default=4, help="views K (build time)")
    p.add_argument("--mem-n", type=int, default=10_000, help="CIFAR-100-shaped images (memory)")
    p.add_argument("--mem-views", type=int, nargs=2, default=[6, 60], help="K small, K large")
    p.add_argument("--mem-epochs", type=int, default=2, help="epochs of the measured trial")
    p.add_argument("--memory-only", action="store_true",
                   help="only part 2, on a plain local Ray (one node: memory needs no second node)")
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import ray
    from ray.cluster_utils import Cluster

    from kdtune.search.stages.teacher_cache import build_cache

    print(machine_line())
    cluster = None
    if args.memory_only:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        if not args.memory_only:
            bundle = random_bundle((3, 32, 32), args.build_n, "crop_flip", n_val=max(args.build_n // 10, 128))
            teacher = save_teacher("resnet56", {}, bundle)
            rows = []
            for workers in (1, 2):
                if workers == 2:
                    cluster.add_node(num_cpus=1)
                    cluster.wait_for_nodes()
                start = time.perf_counter()
                shared = build_cache(bundle, teacher, views=args.build_views, cpus=1)
                seconds = time.perf_counter() - start
                rows.append((workers, len(shared.nodes), seconds))
                del shared
            print(f"\nbuild: resnet56, {args.build_views} views x {args.build_n} + "
                  f"{len(bundle.val)} val images, bf16 where the CPU has it, tasks of 1 CPU")
            print_table(["workers", "nodes used", "build s"], rows)
            print(f"2 workers / 1 worker: {rows[1][2] / rows[0][2]:.2f}x the time")

        bundle = random_bundle((3, 32, 32), args.mem_n, "crop_flip", classes=100,
                               n_val=max(args.mem_n // 10, 128))
        TEACHER["path"] = save_teacher("mlp", {"depth": 1, "width": 256}, bundle)
        measure = ray.remote(num_cpus=1, max_calls=1)(_measure)
        rows = []
        saved = tempfile.mkdtemp(prefix="kdtune-bench-cache-")  # K = 60 reuses K = 6's views
        for private in (False, True):
            for views in args.mem_views:
                shared = build_cache(bundle, TEACHER["path"], views=views, cpus=1, cache_dir=saved)
                full = sum(ray.get(ref).nbytes for ref in shared.train[:1]) * views / 2**20
                got = ray.get(measure.remote(bundle, shared, views, args.mem_epochs, private,
                                             TEACHER["path"]))
                rows.append(("private copy" if private else "shared (default)", views, full,
                             got["peak_rss"], got["rss_anon"], got["rss_shmem"]))
                print("measured", rows[-1], flush=True)
                del shared
        print(f"\nmemory: a distillation trial (mlp 1x64, {args.mem_epochs} epochs) over "
              f"{args.mem_n} CIFAR-100-shaped images, in a fresh worker")
        print_table(["cache", "K", "cache MiB", "peak RSS MiB", "RssAnon MiB", "RssShmem MiB"], rows)
        for label in ("shared (default)", "private copy"):
            small, large = [r[3] for r in rows if r[0] == label]
            print(f"{label}: peak RSS K={args.mem_views[1]} / K={args.mem_views[0]} = {large / small:.3f}")
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def _measure(bundle, shared, views, epochs, private, teacher_path):
    TEACHER["path"] = teacher_path
    return trial_memory(bundle, shared, views, epochs, private)


if __name__ == "__main__":
    main()
