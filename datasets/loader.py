"""`DeviceLoader`: batches straight from a device-resident uint8 split.

The split is copied to `device` once (a stored split, `Split.stored`, is not: each batch's
rows are read from its on-disk store and copied, uint8, to the device); each batch is a row gather, a batched augmentation,
one uint8 -> float32 normalisation and (optionally) a channels_last copy. There are no
worker processes and no per-sample Python work, which is what makes it several times faster
than Dataset + DataLoader + PIL transforms (see benchmarks/bench_data_iterator.py).

Order and augmentation depend only on (seed, epoch) via `set_epoch`, like
`DistributedSampler`: call `loader.set_epoch(epoch)` before each epoch, and a resumed trial
replays exactly the batches it would have seen. The augmentation of image i in an epoch is
drawn per image, independent of the order, so it is a function of (seed, view, i) only; by
default each epoch is its own view. With `views=K` the epochs cycle through K fixed views
(epoch e shows view (e - 1) % K + 1), so a teacher's logits for every (view, image) can be
computed once and looked up (FKD, Shen & Xing 2022): batches then carry the key
(view - 1) * len(split) + i of that cache instead of the row i.

`shard=(rank, workers)` (a multi-worker trial's worker, trainables/distributed.py) yields this
worker's slice of each global batch of `batch_size x workers` rows of the same epoch order
(rows rank*batch_size .. of it), like DistributedSampler: with `shuffle` (training) a short
last global batch is padded with rows from the epoch's start so every worker yields the same
number of equal batches (DDP's collectives need it); without (evaluation) it is split as evenly
as it goes, nothing repeated, and a worker may have a batch fewer.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .augment import apply_params, draw_params, resolve_pixels
from .augment import AUGMENTS, CropSource
from .bundle import Split


AUGMENT_STREAM = 1  # keeps the augmentation draws apart from the order's


def epoch_generator(seed: int, epoch: int, *stream: int) -> torch.Generator:
    """A CPU generator whose state is a well-mixed function of (seed, epoch, stream) only."""
    state = np.random.SeedSequence([seed, epoch, *stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


class DeviceLoader:
    """Iterate a `Split` as (x, y, idx) batches on `device`.

    x: float32 (B, C, H, W), normalised with `mean` / `std` (per channel, [0, 1] units);
    y: int64 (B,); idx: int64 (B,) keys of the batch's rows in a teacher-logit cache, on
    `device`: the row indices into the split, or with `views` (and an augmentation)
    (view - 1) * len(split) + row. `augment` is applied to every batch: "none" for eval;
    `augment_pixels` is its crop padding / largest shift (None: the augmentation's default).
    Its iterators share the loader's scratch buffers within each `next()`, so interleaved
    iterators are fine but two threads must not iterate one loader at once.
    """

    def __init__(self, split: Split, *, batch_size: int, device: str | torch.device = "cpu",
                 mean: Sequence[float], std: Sequence[float], augment: str = "none",
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 channels_last: bool = False, views: int | None = None,
                 augment_pixels: int | None = None, shard: tuple[int, int] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.augment_pixels = resolve_pixels(augment, augment_pixels)
        channels = split.images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {list(mean)} / {list(std)}")
        if views is not None and views < 1:
            raise ValueError(f"views must be >= 1 or None, got {views}")
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (rank, workers) with 0 <= rank < workers, got {shard}")
        self.shard = None if shard is None or shard[1] == 1 else (int(shard[0]), int(shard[1]))
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.channels_last = channels_last
        # Without augmentation every view is the same image: nothing to cycle or key.
        self.views = views if augment != "none" else None
        self.epoch = 0
        # One host -> device copy of the uint8 data (4x smaller than float32); a stored split
        # (an image folder larger than the resident threshold) stays on disk and each batch's
        # rows are read from the store (the node's page cache) and copied to the device.
        self.stored = split.stored
        self.images = split.images if self.stored else split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        # x = u8 * scale + shift  ==  (u8 / 255 - mean) / std, per channel (Python floats).
        self._scale = [1.0 / (255.0 * float(s)) for s in std]
        # 0-dim tensors: torch.add(shift, x, alpha=scale) takes the shift as a tensor.
        self._shift = [torch.tensor(-float(m) / float(s), device=self.device) for m, s in zip(mean, std)]
        # Kept between batches (the rows read, the padded copy crops are cut from, the crops):
        # none of them leaves the loader, since normalisation writes each batch's x anew, and
        # fresh megabyte-sized buffers each batch cost page faults on CPU (benchmarks/README.md,
        # bench_image_store). On a GPU the stored rows' host buffer is safe to refill at once:
        # a copy from pageable memory returns once the bytes are staged.
        self._kept_buffers: dict[str, torch.Tensor] = {}  # "rows", "crops": see _kept
        self._crop_source = CropSource()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration replays."""
        self.epoch = int(epoch)

    def view(self, epoch: int) -> int:
        """The augmented view (1-based) that `epoch` shows."""
        return (epoch - 1) % self.views + 1 if self.views else epoch

    @property
    def global_batch(self) -> int:
        """Rows per step over all workers: batch_size x workers (batch_size alone unsharded)."""
        return self.batch_size * (self.shard[1] if self.shard else 1)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.global_batch if self.drop_last else math.ceil(n / self.global_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        gen = epoch_generator(self.seed, self.epoch)
        # The permutation is drawn on CPU (device-independent) and moved once per epoch.
        order_host = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order_host.to(self.device)
        view = self.view(self.epoch)
        params = tuple(p.to(self.device) for p in draw_params(
            self.augment, n, epoch_generator(self.seed, view, AUGMENT_STREAM), self.augment_pixels))
        key_offset = (view - 1) * n if self.views else 0
        for b in range(len(self)):
            if self.shard is None:
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                idx_host = order_host[b * self.batch_size:(b + 1) * self.batch_size] if self.stored else None
            else:
                idx_host = self._shard_rows(order_host, b)
                if len(idx_host) == 0:
                    continue
                idx = idx_host.to(self.device)
            if self.stored:
                rows = self.images.gather(idx_host, out=self._kept("rows", len(idx_host), "cpu"))
                rows = rows.to(self.device, non_blocking=True)
            else:
                rows = torch.index_select(self.images, 0, idx, out=self._kept("rows", len(idx), self.device))
            u8 = apply_params(self.augment, rows, tuple(p.index_select(0, idx) for p in params),
                              self.augment_pixels, self._crop_source,
                              out=None if self.augment == "none" else self._kept("crops", len(idx), self.device))
            x = self._normalise(u8)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx), idx + key_offset if key_offset else idx

    def _kept(self, name: str, n: int, device) -> torch.Tensor:
        """The first n rows of the loader's kept uint8 batch buffer `name` (made on first use)."""
        if name not in self._kept_buffers:
            self._kept_buffers[name] = torch.empty((self.batch_size, *self.images.shape[1:]),
                                                   dtype=torch.uint8, device=device)
        return self._kept_buffers[name][:n]

    def _normalise(self, u8: torch.Tensor) -> torch.Tensor:
        """float32 (u8 / 255 - mean) / std, one channel at a time: a conversion copy, then one
        multiply-add, shift + scale * x, with scalars. Per channel each op runs over a (B, H*W)
        slice with long contiguous rows; one broadcast op against a (1, C, 1, 1) scale (the
        addcmul this replaced) loops over rows of only W elements, and measured 2.6-11 ms
        against 1.9-2.4 ms for 128 x 3 x 96 x 96 on a 2-core EPYC (benchmarks/bench_augment.py
        times the whole batch path before and now)."""
        x = torch.empty(u8.shape, dtype=torch.float32, device=u8.device)
        for c, (scale, shift) in enumerate(zip(self._scale, self._shift)):
            xc = x[:, c]
            xc.copy_(u8[:, c])
            torch.add(shift, xc, alpha=scale, out=xc)
        return x

    def _shard_rows(self, order: torch.Tensor, b: int) -> torch.Tensor:
        """This worker's rows (CPU) of global batch b of the epoch's `order`."""
        rank, workers = self.shard
        gb = self.global_batch
        rows = order[b * gb:(b + 1) * gb]
        if len(rows) < gb:  # the short last global batch (drop_last off)
            if self.shuffle:  # training: pad to equal per-worker batches, as DistributedSampler
                per = math.ceil(len(rows) / workers)
                rows = torch.cat([rows, order[:per * workers - len(rows)]])
            else:
                per = math.ceil(len(rows) / workers)
            return rows[rank * per:(rank + 1) * per]
        return rows[rank * self.batch_size:(rank + 1) * self.batch_size]
