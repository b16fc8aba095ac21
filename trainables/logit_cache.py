"""A frozen teacher's logits as a trial reads them: numpy arrays, shared read-only.

`LogitCache` holds one (N, classes) array per training view (K fixed augmented views; one
array of the un-augmented images when the data is not augmented; none when the trial runs
its teacher online) and one (N_val, classes) array for the validation split. A trial never
copies the arrays: each batch gathers its rows (`rows(keys, device)`, keys as DeviceLoader
yields them: (view - 1) * N + row) and moves only those to the trial's device, with the
batch. Inside a search the arrays live in Ray's object store (`SharedLogitCache` holds
their references): `ray.get` of a numpy array maps the node's shared-memory copy without
copying it, so every trial on a node reads the same pages and a trial's memory does not
grow with K.

A cache larger than the search's resident threshold (search/stages/teacher_cache.py) stays
on disk instead: `MappedLogitCache` holds the paths of its saved .npy parts (pickled as those
paths: a few bytes whatever K and N), and each trial opens them with
`np.load(mmap_mode="r")`: read-only maps of the same files, so every trial on a node reads
the node's one page-cache copy, nothing is copied into the object store, and a trial's
private memory does not grow with the cache (the pages it touches are shared, clean, file
pages the kernel can drop and re-read). `LogitCache` gathers from mapped arrays exactly as
from resident ones.

bf16 logits (the teacher's own dtype under bf16 autocast: exact, half the bytes of
float32) are kept as their int16 bit patterns, since numpy has no bfloat16.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def to_numpy(logits: torch.Tensor) -> np.ndarray:
    """A CPU copy of `logits` as numpy (bf16 as int16 bit patterns)."""
    logits = logits.detach().cpu().contiguous()
    if logits.dtype == torch.bfloat16:
        return logits.view(torch.int16).numpy()
    return logits.float().numpy()


def dtype_name(logits: torch.Tensor) -> str:
    return "bfloat16" if logits.dtype == torch.bfloat16 else "float32"


def _as_torch(array: np.ndarray, dtype: str) -> torch.Tensor:
    out = torch.from_numpy(array)
    return out.view(torch.bfloat16) if dtype == "bfloat16" else out


@dataclass(frozen=True)
class LogitCache:
    train: tuple[np.ndarray, ...]  # one (N, classes) array per view
    val: np.ndarray | None         # (N_val, classes)
    dtype: str                     # "float32" or "bfloat16" (stored as int16)
    # device -> the train views as one (views * N, classes) tensor there (accelerators only)
    _tables: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        shapes = {a.shape for a in self.train}
        if len(shapes) > 1:
            raise ValueError(f"every view needs the same shape, got {sorted(shapes)}")

    @classmethod
    def from_tensors(cls, train: torch.Tensor | None, val: torch.Tensor | None,
                     views: int = 1) -> "LogitCache":
        """From a (views * N, classes) train tensor (view-major rows) and a val tensor."""
        ref = train if train is not None else val
        if ref is None:
            raise ValueError("a LogitCache needs train or val logits")
        dtype = dtype_name(ref)
        arrays: tuple[np.ndarray, ...] = ()
        if train is not None:
            if train.shape[0] % views:
                raise ValueError(f"teacher_logits have {train.shape[0]} rows: not {views} augmented "
                                 "views x the training images")
            flat = to_numpy(train.to(DTYPES[dtype]))
            n = flat.shape[0] // views
            arrays = tuple(flat[v * n:(v + 1) * n] for v in range(views))
        return cls(arrays, None if val is None else to_numpy(val.to(DTYPES[dtype])), dtype)

    @property
    def views(self) -> int:
        return len(self.train)

    @property
    def rows_per_view(self) -> int:
        return self.train[0].shape[0] if self.train else 0

    @property
    def num_classes(self) -> int:
        ref = self.train[0] if self.train else self.val
        return int(ref.shape[1])

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.train) + (0 if self.val is None else self.val.nbytes)

    def rows(self, keys: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """The cache rows of `keys` ((view - 1) * N + row), on `device`, in the cache dtype.

        On the CPU the rows are gathered from the shared arrays (no copy of the cache). On an
        accelerator the cache is copied there once and gathered there: gathering on the host
        would move the batch's keys to the host every batch, a sync that stalls the device's
        queue each step (benchmarks/gpu_check.py measures it)."""
        device = torch.device(device)
        if device.type == "cpu" and keys.device.type == "cpu":
            return self.host_rows(keys, device)
        return self.device_rows(keys, device)

    def device_rows(self, keys: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """`rows` by a gather on `device` from a copy of the train views there (made once:
        views x N x classes x 2 bytes under bf16, e.g. 270 MB for CIFAR-100 with K = 30)."""
        device = torch.device(device)
        table = self._tables.get(device)
        if table is None:
            table = torch.cat([_as_torch(a, self.dtype) for a in self.train]).to(device)
            self._tables[device] = table
        return table.index_select(0, keys.to(device, non_blocking=True))

    def host_rows(self, keys: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """`rows` by a gather on the host from the shared arrays (keys copied to the host)."""
        n = self.rows_per_view
        k = keys.detach().cpu().numpy()
        view, row = np.divmod(k, n)
        first = int(view[0]) if len(view) else 0
        if (view == first).all():  # the usual case: an epoch shows one view
            out = self.train[first][row]
        else:
            out = np.empty((len(k), self.num_classes), dtype=self.train[0].dtype)
            for v in np.unique(view):
                mask = view == v
                out[mask] = self.train[int(v)][row[mask]]
        return _as_torch(out, self.dtype).to(device, non_blocking=True)

    def val_logits(self, device: torch.device | str) -> torch.Tensor:
        """The validation split's logits on `device` as float32 (small: N_val rows)."""
        if self.val is None:
            raise ValueError("this teacher-logit cache holds no validation logits")
        return _as_torch(np.array(self.val), self.dtype).to(device).float()

    def check(self, views: int | None, train_rows: int, val_rows: int, num_classes: int) -> None:
        """Refuse a cache that was not built for this split (views None: un-augmented rows)."""
        if self.num_classes != num_classes:
            raise ValueError(f"teacher_logits have {self.num_classes} classes; the dataset has {num_classes}")
        if self.val is not None and self.val.shape[0] != val_rows:
            raise ValueError(f"teacher_logits hold {self.val.shape[0]} validation rows; "
                             f"the split has {val_rows}")
        if (self.views, self.rows_per_view) != ((views or 1), train_rows):
            what = f"{views} augmented views x " if views else ""
            raise ValueError(f"teacher_logits hold {self.views} view(s) x {self.rows_per_view} rows; "
                             f"expected {what}{train_rows} rows (one per {what}training image of "
                             "this dataset split)")


@dataclass(frozen=True)
class SharedLogitCache:
    """References to a LogitCache's arrays in Ray's object store (cheap to pass to trials)."""

    train: tuple  # tuple[ray.ObjectRef, ...], one per view
    val: object | None  # ray.ObjectRef
    dtype: str
    nodes: tuple[str, ...] = ()  # Ray node ids whose tasks computed (or read back) the parts

    def resolve(self, val_only: bool = False) -> LogitCache:
        """The arrays, mapped from this node's object store (zero-copy for numpy on CPU).

        val_only: the validation part alone (the driver's use: train views can be large and
        live on other nodes)."""
        import ray

        views = () if val_only else tuple(self.train)
        refs: Sequence = list(views) + ([self.val] if self.val is not None else [])
        arrays = ray.get(refs)
        train = tuple(arrays[:len(views)])
        return LogitCache(train, arrays[-1] if self.val is not None else None, self.dtype)


@dataclass(frozen=True)
class MappedLogitCache:
    """A LogitCache saved as .npy files (one per view, one for val), mapped read-only by each
    trial; cheap to pass to trials (paths only). The files must be readable on every node
    that runs trials (the experiment folder: shared storage on a multi-node cluster)."""

    train: tuple[str, ...]  # one .npy file per view, (N, classes)
    val: str | None         # (N_val, classes)
    dtype: str

    def resolve(self, val_only: bool = False) -> LogitCache:
        """The arrays as read-only maps of the files (nothing read until rows are gathered)."""
        views = () if val_only else self.train
        train = tuple(np.load(path, mmap_mode="r") for path in views)
        return LogitCache(train, None if self.val is None else np.load(self.val, mmap_mode="r"), self.dtype)

    def nbytes(self) -> int:
        import os

        return sum(os.path.getsize(p) for p in (*self.train, *((self.val,) if self.val else ())))


def as_cache(logits, views: int | None) -> LogitCache | None:
    """What distill_student accepts as `teacher_logits`, as a LogitCache.

    A SharedLogitCache or MappedLogitCache (a search's), a LogitCache, or a plain
    (views * N, classes) tensor of train logits (view-major rows; no validation logits)."""
    if logits is None or isinstance(logits, LogitCache):
        return logits
    if isinstance(logits, (SharedLogitCache, MappedLogitCache)):
        return logits.resolve()
    if isinstance(logits, torch.Tensor):
        return LogitCache.from_tensors(logits, None, views or 1)
    raise TypeError(f"teacher_logits must be a LogitCache, SharedLogitCache, MappedLogitCache or tensor, "
                    f"got {type(logits).__name__}")
