"""A decode-once image store on disk: fixed-size uint8 images in one raw file, read by row.

A folder of images is decoded once (resized to S x S, RGB) into `<store>/images.u8`, a raw
C-order uint8 array of shape (N, 3, S, S) that `np.memmap` can open, plus `labels.npy` and a
small `header.json` written last (its presence marks a complete store). The store's folder
name is a digest of the source (every file's relative path, size and mtime), the image size
and FORMAT_VERSION, so a later run on the same folder reuses it and a changed folder gets a
new one. Decoding is sharded: `decode_images` runs `decode_shard` over contiguous slices of
the file list, as Ray tasks when Ray is up in this process (each writes its own rows of the
shared file, so the work spreads over the cluster's CPUs; the store folder must then be on a
file system every node sees), else in a pool of forked processes on this machine (a search
decodes in its pre-flight, before Ray starts, so an undecodable image is exit 2, not a
failed stage).

`MappedImages` is what a `Split` holds instead of a resident tensor: the store's path, its
shape and the split's row numbers. It pickles as exactly that (a few bytes per image, never
the pixels), so a bundle passed to trials through Ray's object store costs the same whatever
the dataset's size, and every trial reads the rows of its batches with `os.pread` through
the node's shared page cache. pread and not an mmap: the pages of a mapped file that a
process touches count in its resident set, so a trial mapping the store would grow by the
whole dataset over one epoch; pread copies only the batch (benchmarks/bench_image_store.py).
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1
IMAGES, LABELS, HEADER = "images.u8", "labels.npy", "header.json"
# Images a shard decodes: enough to amortise a task's start, small enough to spread the work.
SHARD_IMAGES = 2048
# Folder-scan extensions: torchvision ImageFolder's list, so both paths see the same files.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_store_root() -> Path:
    """Where stores live unless told otherwise: $KDTUNE_STORE_DIR, else ~/.cache/kdtune/stores."""
    env = os.environ.get("KDTUNE_STORE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdtune" / "stores"


def scan_folder(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(path, label)]) of folder/<class>/*, in ImageFolder's order (sorted)."""
    root = Path(folder)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else []
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), label))
    return classes, samples


def source_digest(folder: str, samples: list[tuple[str, int]], size: int) -> str:
    """A digest of what the store holds: files (relative path, bytes, mtime), labels, size."""
    h = hashlib.sha256(f"kdtune-store v{FORMAT_VERSION} size={size}\n".encode())
    for path, label in samples:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, folder)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode_one(path: str, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size): RGB, bilinear resize (torchvision Resize on PIL)."""
    from PIL import Image

    with open(path, "rb") as fh:
        img = Image.open(fh)
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def decode_shard(paths: list[str], size: int, out_file: str | None, start: int):
    """Decode `paths` into rows start.. of the raw store file `out_file` (None: return them).

    Returns (None, rows or None) on success, ("cannot decode image PATH: why", None) on the
    first image that fails: an error value, not an exception, so a Ray task's wrapping never
    buries the path the user must fix."""
    rows = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            rows[i] = decode_one(path, size)
        except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
            return f"cannot decode image {path}: {type(err).__name__}: {err}".splitlines()[0], None
    if out_file is None:
        return None, rows
    with open(out_file, "r+b") as fh:
        fh.seek(start * rows[0].nbytes if len(rows) else 0)
        fh.write(rows.tobytes())
    return None, None


def _shards(n: int, workers: int) -> list[tuple[int, int]]:
    per = max(1, min(SHARD_IMAGES, -(-n // max(1, workers))))
    return [(s, min(s + per, n)) for s in range(0, n, per)]


def decode_images(paths: list[str], size: int, workers: int = 1, out_file: str | None = None):
    """Decode every path (sharded over `workers`); into `out_file` (returns None) or into memory.

    Raises DecodeError naming the first image that cannot be decoded."""
    shards = _shards(len(paths), workers)
    args = [(paths[a:b], size, out_file, a) for a, b in shards]
    results = _run_shards(args, workers)
    errors = [err for err, _ in results if err]
    if errors:
        raise DecodeError(errors[0])
    if out_file is not None:
        return None
    if not results:
        return np.empty((0, 3, size, size), np.uint8)
    return np.concatenate([rows for _, rows in results])


class DecodeError(ValueError):
    """An image of the folder cannot be decoded; the message names it."""


def _run_shards(args: list[tuple], workers: int) -> list:
    try:
        import ray
        ray_up = ray.is_initialized()
    except ImportError:  # pragma: no cover - Ray is a dependency
        ray_up = False
    if ray_up:
        task = ray.remote(num_cpus=1)(decode_shard)
        return ray.get([task.remote(*a) for a in args])
    if workers <= 1 or len(args) <= 1:
        return [decode_shard(*a) for a in args]
    # fork: the children need only PIL and numpy, already imported; no interpreter start-up
    ctx = multiprocessing.get_context("fork")
    with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(decode_shard, *zip(*args)))


@dataclass(frozen=True)
class StoreInfo:
    path: Path
    num_images: int
    size: int
    classes: tuple[str, ...]
    built: bool  # False: an existing store was reused


def open_or_build(folder: str, size: int, *, root: str | os.PathLike | None = None,
                  workers: int = 1) -> tuple[StoreInfo, "MappedImages", np.ndarray]:
    """The store of `folder` at `size` px (decoded now unless a complete one exists)."""
    classes, samples = scan_folder(folder)
    if not samples:
        raise FileNotFoundError(f"no class folders with images in {folder}")
    key = source_digest(folder, samples, size)
    base = Path(root).expanduser() if root is not None else default_store_root()
    path = base / f"{Path(folder).name or 'root'}-{size}px-{key}"
    header = path / HEADER
    built = False
    if not header.is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".{path.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            n = len(samples)
            with open(tmp / IMAGES, "wb") as fh:  # sized up front: shards write their own rows
                fh.truncate(n * 3 * size * size)
            decode_images([p for p, _ in samples], size, workers, str(tmp / IMAGES))
            np.save(tmp / LABELS, np.array([y for _, y in samples], dtype=np.int64))
            (tmp / HEADER).write_text(json.dumps({
                "format": FORMAT_VERSION, "num_images": n, "shape": [n, 3, size, size],
                "dtype": "uint8", "classes": classes, "source": os.path.abspath(folder)}))
            try:
                os.replace(tmp, path)  # atomic: a concurrent builder's complete store wins
            except OSError:
                if not header.is_file():
                    raise
            built = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads(header.read_text())
    labels = np.load(path / LABELS)
    info = StoreInfo(path, int(meta["num_images"]), size, tuple(meta["classes"]), built)
    return info, MappedImages(str(path / IMAGES), tuple(meta["shape"])), labels


class MappedImages:
    """Rows of a store file, uint8 (N, C, H, W), read on demand; pickles as (path, shape, rows).

    `rows` maps this split's row i to the file's row rows[i] (None: all rows in order)."""

    def __init__(self, path: str, file_shape: tuple[int, ...], rows: np.ndarray | None = None):
        self.path = str(path)
        self.file_shape = tuple(int(s) for s in file_shape)
        self.rows = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
        self._fd: int | None = None

    # ---- the tensor-like surface Split, DatasetBundle and channel_stats rely on
    @property
    def shape(self) -> torch.Size:
        n = self.file_shape[0] if self.rows is None else len(self.rows)
        return torch.Size((n, *self.file_shape[1:]))

    dtype = torch.uint8

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.file_shape[1:]))

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def take(self, idx) -> "MappedImages":
        """The rows `idx` (of this view) as a new view of the same file (no pixels read)."""
        idx = np.asarray(idx.numpy() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        return MappedImages(self.path, self.file_shape, idx if self.rows is None else self.rows[idx])

    def __getitem__(self, key: slice) -> torch.Tensor:
        if not isinstance(key, slice):
            raise TypeError("MappedImages[...] takes a slice; use take() or gather() for indices")
        return self.gather(np.arange(len(self))[key])

    def gather(self, idx, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (len(idx), C, H, W) CPU tensor of the rows idx, read with pread (sorted).
        `out`: a contiguous uint8 CPU tensor of at least len(idx) rows of this shape to read
        into (a loader keeps one: a fresh 3.5 MB array a batch costs page faults); the rows
        read are its first len(idx)."""
        idx = np.asarray(idx.numpy() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        file_rows = idx if self.rows is None else self.rows[idx]
        shape = (len(file_rows), *self.file_shape[1:])
        if out is None:
            out = torch.from_numpy(np.empty(shape, dtype=np.uint8))
        else:
            if (out.dtype != torch.uint8 or out.device.type != "cpu" or not out.is_contiguous()
                    or out.shape[1:] != shape[1:] or len(out) < len(file_rows)):
                raise ValueError(f"gather out= needs a contiguous uint8 CPU tensor of >= {shape}, "
                                 f"got {out.dtype} {tuple(out.shape)} on {out.device}")
            out = out[:len(file_rows)]
        flat = out.numpy().reshape(len(file_rows), -1)
        fd, nb = self._open(), self.row_bytes
        for i in np.argsort(file_rows, kind="stable"):  # ascending offsets: read-ahead helps
            got = os.preadv(fd, [memoryview(flat[i])], int(file_rows[i]) * nb)
            if got != nb:
                raise OSError(f"{self.path}: short read at row {file_rows[i]} ({got} of {nb} bytes)")
        return out

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getstate__(self) -> dict:
        return {"path": self.path, "file_shape": self.file_shape, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["file_shape"], state["rows"])

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"MappedImages({self.path!r}, {tuple(self.shape)})"
