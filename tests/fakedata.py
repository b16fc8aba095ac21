"""Writers of small, real-format dataset files for the test suite (no network needed).

Every writer produces the exact on-disk format the real dataset uses, so tests exercise the
real decoding path: MNIST IDX files (big-endian magic + dims, optionally gzipped), CIFAR
python pickles as Python 2's cPickle wrote them (byte-string keys: b"data" with
encoding="bytes", "data" with torchvision's encoding="latin1"), and PNG class folders.
Images are class-dependent (a class-specific pattern plus noise) so a model can learn them.
"""
from __future__ import annotations

import gzip
import math
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def class_images(labels: np.ndarray, shape: tuple[int, ...], num_classes: int,
                 seed: int) -> np.ndarray:
    """uint8 images of `shape` per row: dark noise plus one bright cell that encodes the class.

    shape is (H, W) or (C, H, W); the image is cut into a g x g grid (g = ceil(sqrt(n))) and
    class k lights cell (k // g, k % g) in every channel, so every class looks different.
    """
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.uint8)
    h, w = shape[-2:]
    g = math.ceil(math.sqrt(num_classes))
    for k in range(num_classes):
        r, c = divmod(k, g)
        out[labels == k, ..., r * h // g:(r + 1) * h // g, c * w // g:(c + 1) * w // g] = 200
    return out


def _labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    # Round-robin then shuffled: every class present, balanced.
    return np.random.default_rng(seed).permutation(np.arange(n) % num_classes).astype(np.uint8)


# ---------------------------------------------------------------- MNIST IDX
def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX: magic 0x00 0x00 <type 0x08 = ubyte> <ndim>, then big-endian uint32 dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_idx_set(raw: Path, n_train: int, n_test: int, gz: bool, seed: int) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        labels = _labels(n, 10, s)
        images = class_images(labels, (28, 28), 10, s)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                with gzip.open(f"{path}.gz", "wb") as f:
                    f.write(data)
            else:
                path.write_bytes(data)
    return raw


def write_mnist(root: str | os.PathLike, n_train: int = 200, n_test: int = 50,
                gz: bool = True, seed: int = 0) -> Path:
    """Write MNIST IDX files into root/MNIST/raw; returns that folder."""
    return _write_idx_set(Path(root) / "MNIST" / "raw", n_train, n_test, gz, seed)


def write_fashion_mnist(root: str | os.PathLike, n_train: int = 200, n_test: int = 50,
                        gz: bool = True, seed: int = 0) -> Path:
    """Write Fashion-MNIST IDX files into root/FashionMNIST/raw; returns that folder."""
    return _write_idx_set(Path(root) / "FashionMNIST" / "raw", n_train, n_test, gz, seed)


# ---------------------------------------------------------------- CIFAR pickles
class _Py2Pickler(pickle._Pickler):
    """Pickles `bytes` as Python 2 `str` (BINSTRING), as the real CIFAR files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _dump_py2(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _cifar_rows(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    # (N, 3, 32, 32) planes flattened row-major to (N, 3072): R plane, G plane, B plane.
    return class_images(labels, (3, 32, 32), num_classes, seed).reshape(len(labels), 3072)


def write_cifar10(root: str | os.PathLike, n_per_batch: int = 40, n_test: int = 50,
                  seed: int = 0) -> Path:
    """Write root/cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i}", n_per_batch, b"training batch %d of 5" % i) for i in range(1, 6)]
    for i, (name, n, batch_label) in enumerate(batches + [("test_batch", n_test, b"testing batch 1 of 1")]):
        labels = _labels(n, 10, seed + i)
        _dump_py2({b"batch_label": batch_label, b"labels": [int(v) for v in labels],
                   b"data": _cifar_rows(labels, 10, seed + i),
                   b"filenames": [b"img_%05d.png" % j for j in range(n)]}, folder / name)
    _dump_py2({b"num_cases_per_batch": n_per_batch, b"num_vis": 3072,
               b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, folder / "batches.meta")
    return folder


def write_cifar100(root: str | os.PathLike, n_train: int = 300, n_test: int = 100,
                   seed: int = 0) -> Path:
    """Write root/cifar-100-python: train, test, meta (fine and coarse labels)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        fine = _labels(n, 100, seed + i)
        _dump_py2({b"filenames": [b"img_%05d.png" % j for j in range(n)],
                   b"batch_label": name.encode(), b"fine_labels": [int(v) for v in fine],
                   b"coarse_labels": [int(v) // 5 for v in fine],
                   b"data": _cifar_rows(fine, 100, seed + i)}, folder / name)
    _dump_py2({b"fine_label_names": [b"fine_%02d" % k for k in range(100)],
               b"coarse_label_names": [b"coarse_%02d" % k for k in range(20)]}, folder / "meta")
    return folder


# ---------------------------------------------------------------- image folders
def write_image_folder(root: str | os.PathLike, classes: list[str], n_per_class: int = 6,
                       size: int = 20, seed: int = 0) -> Path:
    """Write root/<class>/img_<i>.png RGB images (size x size); returns root."""
    root = Path(root)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        labels = np.full(n_per_class, k)
        images = class_images(labels, (3, size, size), len(classes), seed + k).transpose(0, 2, 3, 1)
        for i, img in enumerate(images):
            Image.fromarray(np.ascontiguousarray(img)).save(root / cls / f"img_{i}.png")
    return root
