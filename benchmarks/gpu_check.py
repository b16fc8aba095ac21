"""The GPU check: one prepared run of every GPU figure kdtune lacks (<= 8 minutes on one H100).

Steps, each printing its own table (a step that fails prints why and the others still run;
the exit code is 1 if any failed):
  1. throughput: the ResNet pair (resnet56 -> resnet20, CIFAR-shaped) of kdtune's trial
     against the seed-style loop (torchvision Dataset + DataLoader + PIL transforms, teacher
     forward every batch), with the teacher online (`--augment-views online`) and with the
     default cached fixed views: benchmarks/bench_throughput.py.
  2. bf16: a resnet20 training step (forward, backward, SGD) in fp32 against bf16 autocast
     (channels_last both), img/s and the ratio.
  3. cache sync: a distillation step whose teacher logits are gathered from the logit cache
     the old way (keys moved to the host every batch: `LogitCache.host_rows`) against the
     current one (a device copy of the cache gathered on the device: `device_rows`).
  4. scaling: trials per hour with 1, 2, 4 and 8 trials sharing one card (1/K GPU each):
     benchmarks/bench_scaling.py --gpu.

    bash benchmarks/gpu_check.sh                 # on a CUDA machine (>= 8 CPUs for step 4)
    python -m benchmarks.gpu_check --dry-run     # every step on the CPU, tiny sizes, seconds
    python -m benchmarks.gpu_check --steps bf16 cache_sync
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

STEPS = ("throughput", "bf16", "cache_sync", "scaling")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(step, steps: int, repeats: int, device: torch.device) -> float:
    """Median seconds per step over `repeats` runs of `steps` steps (one warm-up run first)."""
    step()  # warm-up: allocations, cudnn autotuning
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def _student(device: torch.device, classes: int = 10):
    from kdtune.models import create_model

    model = create_model("resnet20", classes, (3, 32, 32)).to(device).to(memory_format=torch.channels_last)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def bf16_step(device: torch.device, batch: int, steps: int, repeats: int) -> None:
    """fp32 vs bf16 autocast, resnet20 training step."""
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        torch.manual_seed(0)
        model, opt = _student(device)

        def step():
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        rows.append((name, batch / _timed_steps(step, steps, repeats, device)))
    _print("bf16", rows, f"bf16 / fp32: {rows[1][1] / rows[0][1]:.2f}x")


def cache_sync_step(device: torch.device, batch: int, steps: int, repeats: int, n: int, views: int,
                    classes: int = 100) -> None:
    """KD step with teacher rows gathered on the host (keys synced every batch) vs on the device."""
    from kdtune.trainables.logit_cache import LogitCache

    cache = LogitCache.from_tensors(torch.randn(views * n, classes).to(torch.bfloat16), None, views)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    # Cross-check before timing: both paths give the same rows.
    keys = torch.randint(0, views * n, (batch,), device=device, generator=gen)
    assert torch.equal(cache.host_rows(keys, device), cache.device_rows(keys, device))
    rows = []
    for name, gather in (("host gather (before)", cache.host_rows), ("device gather (after)", cache.device_rows)):
        torch.manual_seed(0)
        model, opt = _student(device, classes)

        def step():
            # the DeviceLoader hands keys on the device, as this does
            k = torch.randint(0, views * n, (batch,), device=device, generator=gen)
            teacher = gather(k, device).float()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                s = model(x)
            t = 4.0
            kd = F.kl_div(F.log_softmax(s.float() / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")
            loss = 0.9 * kd * t * t + 0.1 * F.cross_entropy(s.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        rows.append((name, batch / _timed_steps(step, steps, repeats, device)))
    _print("cache_sync", rows, f"after / before: {rows[1][1] / rows[0][1]:.2f}x "
                               f"({views} views x {n} rows x {classes} classes, bf16)")


def _print(step: str, rows: list[tuple[str, float]], summary: str) -> None:
    from benchmarks.common import print_table

    print_table([step, "img/s (median)"], [(name, round(v, 1)) for name, v in rows])
    print(f"{step}: {summary}", flush=True)


def throughput_step(dry: bool) -> None:
    from benchmarks import bench_throughput

    if dry:
        argv = ["--pairs", "resnet", "resnet-views", "--resnet-n", "16", "--repeats", "1",
                "--batch-size", "8", "--views", "1", "--workers", "0"]
    else:
        argv = ["--pairs", "resnet", "resnet-views", "--resnet-n", "8192", "--repeats", "3",
                "--batch-size", "256", "--views", "2", "--workers", "2", "--threads", "4"]
    bench_throughput.main(argv)


def scaling_step(dry: bool) -> None:
    from benchmarks import bench_scaling

    if dry:
        argv = ["--dataset", "digits", "--levels", "1", "2", "--num-samples", "3", "--max-epochs", "2",
                "--repeats", "1"]
    else:
        argv = ["--gpu", "--levels", "1", "2", "4", "8", "--num-samples", "8", "--max-epochs", "3",
                "--repeats", "1"]
    bench_scaling.main(argv)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes (seconds)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    args = p.parse_args(argv)
    from benchmarks.common import machine_line

    if args.dry_run:
        device = torch.device("cpu")
        sizes = dict(batch=4, steps=1, repeats=1)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; run with --dry-run for the CPU rehearsal", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        sizes = dict(batch=256, steps=30, repeats=3)
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(machine_line(), flush=True)
    failed = []
    for step in args.steps:
        print(f"\n== {step} ==", flush=True)
        start = time.perf_counter()
        try:
            if step == "throughput":
                throughput_step(args.dry_run)
            elif step == "bf16":
                bf16_step(device, **sizes)
            elif step == "cache_sync":
                cache_sync_step(device, **sizes, n=64 if args.dry_run else 50_000,
                                views=2 if args.dry_run else 30)
            else:
                scaling_step(args.dry_run)
        except Exception:  # one broken step must not cost the others' figures on a lent card
            traceback.print_exc()
            failed.append(step)
        print(f"== {step}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"gpu_check: failed steps: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
