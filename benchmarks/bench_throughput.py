"""Training images/s of kdtune's distillation trial vs a seed-style distillation loop.

Same teacher/student pair, same machine, same run, interleaved (kdtune, seed, kdtune, ...):
  - kdtune: the real trial path, `trainables.distill.distill_student` on an in-memory bundle
    (device-resident uint8 split + DeviceLoader with batched augmentation; cached teacher
    logits when inputs are not augmented (MNIST); for `resnet-views` the default mode of
    augmented data: the trial cycles K = its epochs fixed augmented views whose teacher
    logits were computed once beforehand (search/stages/teacher_cache.py's code, here in-process
    with `local_cache`), rows gathered per batch from numpy; for `resnet` the teacher
    online under inference_mode (`--augment-views online`); bf16 autocast + channels_last
    where the runtime picks them). The figure is the trial's own `images_per_s` of its
    last epoch (training time only, first epoch = warm-up).
  - seed: how student KD repos do it: a torchvision Dataset yielding PIL images
    (as torchvision.datasets.MNIST / CIFAR10 do, over the same decoded images), PIL transforms
    (CIFAR: RandomCrop(32, 4) + RandomHorizontalFlip; both: ToTensor + Normalize),
    DataLoader(num_workers=2, persistent), an fp32 teacher forward on every batch under
    no_grad, and a plain fp32 student step with the Hinton loss. One full training epoch per
    repeat (after one short warm-up that also starts the workers).
Pairs: mlp 2x1200 -> mlp 2x800 on MNIST (real files if present, else random 1x28x28) and
resnet56 -> resnet20 on random CIFAR-shaped data. Teachers have random weights (speed does
not depend on them).

    python -m benchmarks.bench_throughput                    # ~2.5 min on 2 CPU cores
    python -m benchmarks.bench_throughput --pairs mlp --mlp-n 54000 --repeats 5
    python -m benchmarks.bench_throughput --pairs resnet resnet-views --resnet-n 4096 --repeats 5
    python -m benchmarks.bench_throughput --profile          # + torch.profiler top ops of kdtune's side
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from benchmarks.common import (CIFAR_MEAN, CIFAR_STD, MNIST_DIR, MNIST_MEAN, MNIST_STD, HWCDataset,
                    interleave, machine_line, median, mnist_present, print_table, random_bundle,
                    save_teacher, split_to_numpy, verdict)

ALPHA, TEMPERATURE = 0.9, 4.0
TARGETS = {"mlp": 3.0, "resnet": 2.5, "resnet-views": 3.5}  # kdtune / seed img/s (the targets in benchmarks/README.md)
PAIRS = {
    # key: (teacher (name, kwargs), student (name, kwargs), label)
    "mlp": (("mlp", {"depth": 2, "width": 1200}), ("mlp", {"depth": 2, "width": 800}),
            "mlp 2x1200 -> 2x800, MNIST"),
    "resnet": (("resnet56", {}), ("resnet20", {}), "resnet56 -> resnet20, CIFAR-shaped"),
    "resnet-views": (("resnet56", {}), ("resnet20", {}), "resnet56 -> resnet20, CIFAR-shaped"),
}


# ---- kdtune side: the real trainable ------------------------------------------------------
def kdtune_side(bundle, teacher_dir: str, student: tuple[str, dict], batch: int, threads: int,
                precision: str, views: int | None):
    """(one timed epoch, its config, the shared cache, the cache's one-off seconds)."""
    from kdtune.search.stages.teacher_cache import local_cache
    from kdtune.trainables import reporting
    from kdtune.trainables.distill import distill_student

    config = {"dataset": bundle.name, "model": student[0], **student[1], "epochs": 2,
              "batch_size": batch, "precision": precision, "num_threads": threads,
              "teacher_checkpoint": teacher_dir, "alpha": ALPHA, "temperature": TEMPERATURE}
    if views:
        config["augment_views"] = views
    # The search's one-off cache (search/stages/teacher_cache.py): without views on augmented data
    # it holds only the validation logits and the trial runs its teacher online.
    start = time.perf_counter()
    cache = local_cache(bundle, teacher_dir, views=views, precision=precision)
    cache_s = time.perf_counter() - start

    def run(_r: int) -> float:
        with reporting.local_session() as rec:
            distill_student(config, data=bundle, teacher_logits=cache)
        return rec.results[-1]["images_per_s"]

    return run, config, cache, cache_s


# ---- seed side: Dataset + DataLoader + PIL transforms + fp32 -------------------------------
def hinton_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(s / TEMPERATURE, 1), F.softmax(t / TEMPERATURE, 1),
                    reduction="batchmean") * TEMPERATURE ** 2
    return (1 - ALPHA) * F.cross_entropy(s, y) + ALPHA * soft


def seed_side(dataset, teacher_dir: str, student: tuple[str, dict], in_shape, batch: int,
              workers: int):
    from kdtune import models
    from kdtune.trainables.teacher_logits import load_teacher

    teacher = load_teacher(teacher_dir)  # fp32, NCHW, eval
    net = models.create_model(student[0], 10, in_shape, **student[1])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)

    def epoch(max_batches: int | None = None) -> float:
        net.train()
        seen = 0
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            with torch.no_grad():
                t = teacher(x)
            loss = hinton_loss(net(x), t, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            if max_batches is not None and i + 1 >= max_batches:
                break
        return seen / (time.perf_counter() - start)

    epoch(max_batches=3)  # warm-up: starts the persistent workers, first-call allocations
    return lambda _r: epoch()


def seed_dataset(key: str, bundle):
    if key == "mlp":
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MNIST_MEAN, MNIST_STD)])
        # torchvision.datasets.MNIST wants the .gz files extracted (it cannot here: the shared
        # folder is read-only to us); HWCDataset does what its __getitem__ does, on the same
        # decoded images: Image.fromarray(img, mode="L") then the transform.
        return HWCDataset(*split_to_numpy(bundle.train), tf)
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    return HWCDataset(*split_to_numpy(bundle.train), tf)


def make_bundle(key: str, n: int, real_mnist: bool, data_dir: str):
    if key.startswith("resnet"):
        return random_bundle((3, 32, 32), n, "crop_flip", n_val=max(n // 10, 128))
    if real_mnist:
        from kdtune import datasets

        return datasets.create_dataset("mnist", data_dir, subset=n)
    return random_bundle((1, 28, 28), n, "none")


def profile_kdtune(config: dict, bundle, cache, rows: int = 15) -> None:
    """Top operators (self CPU time) of one kdtune trial: where its time goes."""
    from torch.profiler import ProfilerActivity, profile

    from kdtune.trainables import reporting
    from kdtune.trainables.distill import distill_student

    cfg = {**config, "epochs": 1}
    with profile(activities=[ProfilerActivity.CPU]) as prof, reporting.local_session():
        distill_student(cfg, data=bundle, teacher_logits=cache)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[-4:]))
    p.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per side (median)")
    p.add_argument("--mlp-n", type=int, default=12_000, help="MNIST training images")
    p.add_argument("--resnet-n", type=int, default=1_024, help="CIFAR-shaped training images")
    p.add_argument("--views", type=int, default=2,
                   help="augment_views of the resnet-views pair (default: the trial's 2 epochs, "
                        "as a search's default K = max epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="torch threads of both sides")
    p.add_argument("--workers", type=int, default=2, help="seed side DataLoader workers")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="kdtune side (auto = bf16 autocast on CPUs with AMX/avx512_bf16)")
    p.add_argument("--data-dir", default=MNIST_DIR, help="real MNIST (torchvision layout)")
    p.add_argument("--random-mnist", action="store_true", help="random 1x28x28 even if MNIST exists")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of kdtune's trial")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    real = not args.random_mnist and mnist_present(args.data_dir)
    print(machine_line())
    rows = []
    for key in args.pairs:
        teacher, student, label = PAIRS[key]
        n = args.mlp_n if key == "mlp" else args.resnet_n
        bundle = make_bundle(key, n, real, args.data_dir)
        n = len(bundle.train)
        data_label = "real" if key == "mlp" and real else "random"
        tdir = save_teacher(teacher[0], teacher[1], bundle)
        views = args.views if key == "resnet-views" else None
        ours, config, cache, cache_s = kdtune_side(bundle, tdir, student, args.batch_size,
                                                   args.threads, args.precision, views)
        theirs = seed_side(seed_dataset(key, bundle), tdir, student, bundle.in_shape,
                           args.batch_size, args.workers)
        print(f"{label}: {n} {data_label} training images, {args.repeats} repeats", flush=True)
        runs = interleave({"kdtune (distill_student)": ours, "seed (DataLoader+PIL, fp32)": theirs},
                          args.repeats)
        k, s = median(runs["kdtune (distill_student)"]), median(runs["seed (DataLoader+PIL, fp32)"])
        mode = "online (val cached)" if not cache.views else (
            f"cached, {views} views ({cache_s:.0f} s once)" if views else "cached")
        rows.append((label, f"{n} {data_label}", mode, k, s, f"{k / s:.2f}x", TARGETS[key],
                     "MET" if k / s >= TARGETS[key] else "NOT MET"))
        if args.profile:
            profile_kdtune(config, bundle, cache)
    print()
    print_table(["pair", "images", "teacher logits", "kdtune img/s", "seed img/s", "ratio",
                 "target", "status"], rows)
    for r in rows:
        print(f"ratio kdtune/seed {r[0]}: {r[5]} ({verdict(float(r[5][:-1]), r[6])})")


if __name__ == "__main__":
    main()
