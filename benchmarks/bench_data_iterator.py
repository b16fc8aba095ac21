"""Images/s of one training epoch's batches: DeviceLoader vs Dataset + DataLoader + PIL.

Both sides produce the same thing, normalised float32 CIFAR-shaped batches of 128 with the
standard augmentation (random crop 32 from 4-pixel padding, random horizontal flip):
  - kdtune:      datasets.DeviceLoader(augment="crop_flip") on a resident uint8 split (CPU);
  - torchvision: a Dataset of HWC uint8 arrays -> PIL -> RandomCrop(32, padding=4),
                 RandomHorizontalFlip, ToTensor, Normalize, via DataLoader(num_workers=2).
Each side iterates a full epoch, repeated; the median images/s is printed with the ratio.

    python -m benchmarks.bench_data_iterator            # 10,000 random images, 3 repeats
    python -m benchmarks.bench_data_iterator --n 2000 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from benchmarks.common import CIFAR_MEAN as MEAN, CIFAR_STD as STD, HWCDataset
from kdtune.datasets import DeviceLoader, Split


def epoch_rate(make_iter, n: int, repeats: int) -> tuple[float, list[float]]:
    """Median images/s over `repeats` full passes of the iterable `make_iter(repeat)` yields."""
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        seen = sum(len(batch[0]) for batch in make_iter(r))
        rates.append(seen / (time.perf_counter() - start))
        assert seen == n
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images (3x32x32 uint8)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per side (median)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.n)
    split = Split(torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous(),
                  torch.from_numpy(labels).to(torch.int64))

    loader = DeviceLoader(split, batch_size=args.batch_size, mean=MEAN, std=STD,
                          augment="crop_flip", shuffle=True, seed=0)

    def device_epoch(r: int):
        loader.set_epoch(r)
        return loader

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(MEAN, STD)])
    dl = DataLoader(HWCDataset(hwc, labels, tf), batch_size=args.batch_size, shuffle=True,
                    num_workers=args.workers, persistent_workers=args.workers > 0)

    print(f"{args.n} CIFAR-shaped images, batch {args.batch_size}, {args.repeats} epochs each, "
          f"torch threads {torch.get_num_threads()}")
    ours, ours_all = epoch_rate(device_epoch, args.n, args.repeats)
    print(f"DeviceLoader(crop_flip, cpu):            {ours:10,.0f} img/s  "
          f"(runs: {', '.join(f'{r:,.0f}' for r in ours_all)})")
    # Worker start-up is excluded from all but the first epoch (persistent workers), as in training.
    theirs, theirs_all = epoch_rate(lambda r: dl, args.n, args.repeats)
    print(f"DataLoader(workers={args.workers}) + PIL transforms:  {theirs:10,.0f} img/s  "
          f"(runs: {', '.join(f'{r:,.0f}' for r in theirs_all)})")
    print(f"ratio DeviceLoader / DataLoader:          {ours / theirs:10.1f}x")


if __name__ == "__main__":
    main()
