"""DeviceLoader's per-batch augmentation and normalisation, now against the path it replaced.

One batch of B uint8 images (already gathered) -> crop from 4-pixel zero padding + random
horizontal flip -> normalised float32, the work DeviceLoader does for every training batch:
  - before: `torch.gather` over the F.pad-ded batch with a B x H x W int64 element index, then
    one `addcmul` against (1, C, 1, 1) scale / shift (kdtune up to 2026-12-07);
  - now:    `crop_flip_at` with a kept `CropSource` (one `index_select` of strided crop
    windows) into a kept output, then DeviceLoader's per-channel normalisation.
Both are checked to give the same pixels (and floats within 1e-5) before timing. The variants
run interleaved, `--repeats` times `--batches` batches each; medians in ms per batch and the
ratio before / now, for each image size, on the CPU (torch threads as set), in a process
whose allocator keeps freed memory as a trial's does (trainables/allocator.py).

    python -m benchmarks.bench_augment                     # 32 and 96 px, B = 128
    python -m benchmarks.bench_augment --sizes 224 --batch 64
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import interleave, machine_line, median, print_table
from kdtune.datasets import DeviceLoader, Split
from kdtune.datasets.augment import CROP_PADDING, CropSource, crop_flip_at, crop_flip_params
from kdtune.trainables.allocator import retain_freed_memory

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def before(images, offsets, flips, scale, shift, padding=CROP_PADDING):
    """The replaced path: a gather with an element index over the padded batch, one addcmul."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    pw = w + 2 * padding
    rows = offsets[:, :1] + torch.arange(h)
    col_ids = torch.arange(w)
    cols = torch.where(flips[:, None], w - 1 - col_ids, col_ids) + offsets[:, 1:]
    flat = (rows[:, :, None] * pw + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    u8 = torch.gather(padded.reshape(b, c, -1), 2, flat).view(b, c, h, w)
    return torch.addcmul(shift, u8.to(torch.float32), scale)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 96], help="image side, pixels")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=50, help="timed batches per repeat")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    retain_freed_memory()  # as Runtime.apply does in every trial
    print(machine_line(), flush=True)
    rows = []
    for size in args.sizes:
        g = torch.Generator().manual_seed(size)
        images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, generator=g)
        offsets, flips = crop_flip_params(args.batch, g)
        # DeviceLoader's normalisation, as the loader runs it (its per-channel scalars).
        loader = DeviceLoader(Split(images, torch.zeros(args.batch, dtype=torch.long)),
                              batch_size=args.batch, mean=MEAN, std=STD)
        scale = (1.0 / (255.0 * torch.tensor(STD))).view(1, 3, 1, 1)
        shift = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)
        source, out = CropSource(), torch.empty_like(images)

        def now():
            return loader._normalise(crop_flip_at(images, offsets, flips, CROP_PADDING, source, out))

        old = before(images, offsets, flips, scale, shift)
        torch.testing.assert_close(now(), old, rtol=0, atol=1e-5)

        def timer(fn):
            def run(_repeat: int) -> float:
                fn()  # warm
                start = time.perf_counter()
                for _ in range(args.batches):
                    fn()
                return 1000 * (time.perf_counter() - start) / args.batches
            return run

        ms = interleave({f"{size}px before (gather + addcmul)": timer(lambda: before(images, offsets, flips, scale, shift)),
                         f"{size}px now (strided windows + per channel)": timer(now)}, args.repeats)
        b, n = (median(v) for v in ms.values())
        rows.append((f"{args.batch} x 3 x {size} x {size}", f"{b:.2f}", f"{n:.2f}", f"{b / n:.2f}x"))
    print()
    print_table(["batch", "before ms", "now ms", "ratio before / now"], rows)


if __name__ == "__main__":
    main()
