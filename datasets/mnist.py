"""`mnist` and `fashion_mnist` through torchvision's own classes and IDX readers.

Found on torchvision 0.29.1: `torchvision.datasets.MNIST(root, download=False)` does NOT read
the `.gz` files by themselves. `_check_exists` looks for the extracted IDX files, and
`read_sn3_pascalvincent_tensor` opens its path with a plain `open` (no gzip, despite its
docstring), so a read-only folder holding only `*.gz` gives "Dataset not found". Only
`download()` extracts, next to the archives, which needs a writable folder.

The subclasses below keep torchvision's constructor, download and readers and change two
things: a file counts as present as `name` or `name.gz`, and a `.gz`-only file is gunzipped
into a private temporary directory (deleted right after) before torchvision's
`read_image_file` / `read_label_file` parse it. Nothing is ever written into `root`.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable

import torch
from torchvision import datasets as tvd
from torchvision.datasets.mnist import read_image_file, read_label_file

from .bundle import DatasetError, missing_files_error
from .registry import Decoded, register_dataset

# Decode failures of a truncated/corrupt IDX or gzip file, as torchvision and gzip raise them.
_DECODE_ERRORS = (EOFError, OSError, zlib.error, AssertionError, RuntimeError, TypeError,
                  ValueError, KeyError)


def _read_idx(reader: Callable[[str], torch.Tensor], folder: str, name: str) -> torch.Tensor:
    """Run torchvision's IDX `reader` on folder/name, or on a private gunzip of name.gz."""
    path = os.path.join(folder, name)
    try:
        if os.path.isfile(path):
            return reader(path)
        path += ".gz"
        with tempfile.TemporaryDirectory(prefix="kdtune-idx-") as tmp:
            plain = os.path.join(tmp, name)
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            return reader(plain)
    except _DECODE_ERRORS as err:
        raise DatasetError(f"cannot decode {path}: truncated or corrupt IDX file ({err}); "
                           "delete it to fetch it again (without --no-download), or point --data-dir at good files"
                           ) from err


def _missing_files(folder: str, resources: list[tuple[str, str]]) -> list[str]:
    """IDX files of `resources` present in `folder` neither extracted nor as .gz."""
    names = [os.path.splitext(os.path.basename(url))[0] for url, _ in resources]
    return [f"{n}[.gz]" for n in names
            if not (os.path.isfile(os.path.join(folder, n))
                    or os.path.isfile(os.path.join(folder, n + ".gz")))]


class _GzIdxMixin:
    """Existence = `name` or `name.gz`; decode through torchvision's readers (see module doc)."""

    raw_folder: str
    resources: list[tuple[str, str]]
    train: bool

    def _check_exists(self) -> bool:
        return not _missing_files(self.raw_folder, self.resources)

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if self.train else "t10k"
        data = _read_idx(read_image_file, self.raw_folder, f"{prefix}-images-idx3-ubyte")
        targets = _read_idx(read_label_file, self.raw_folder, f"{prefix}-labels-idx1-ubyte")
        if len(data) != len(targets):
            raise DatasetError(f"{self.raw_folder}: {prefix} images ({len(data)}) and labels "
                               f"({len(targets)}) disagree; a file is truncated")
        return data, targets


# Named exactly as torchvision's classes: `raw_folder` is root/<class name>/raw.
class MNIST(_GzIdxMixin, tvd.MNIST):
    pass


class FashionMNIST(_GzIdxMixin, tvd.FashionMNIST):
    pass


def _decode(name: str, cls: type, root: str, download: bool) -> tuple[tvd.MNIST, tvd.MNIST]:
    folder = os.path.join(root, cls.__name__, "raw")  # torchvision's raw_folder
    missing = _missing_files(folder, cls.resources)
    if missing and not download:
        raise missing_files_error(name, folder, missing)
    return cls(root, train=True, download=download), cls(root, train=False, download=download)


def _bundle(train: tvd.MNIST, test: tvd.MNIST, mean: float, std: float) -> Decoded:
    # (N, 28, 28) uint8 -> (N, 1, 28, 28); labels are already int64 (read_label_file).
    return Decoded(train_images=train.data.unsqueeze(1).contiguous(), train_labels=train.targets,
                   test_images=test.data.unsqueeze(1).contiguous(), test_labels=test.targets,
                   class_names=tuple(train.classes), augment="none", mean=(mean,), std=(std,))


@register_dataset
def mnist(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """MNIST from root/MNIST/raw (IDX files, plain or .gz); 60,000 train / 10,000 test."""
    del image_size  # fixed 28x28; create_dataset rejects other sizes
    return _bundle(*_decode("mnist", MNIST, root, download), mean=0.1307, std=0.3081)


@register_dataset
def fashion_mnist(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """Fashion-MNIST from root/FashionMNIST/raw (IDX files, plain or .gz)."""
    del image_size
    # Train-set statistics of Fashion-MNIST, the usual published constants.
    return _bundle(*_decode("fashion_mnist", FashionMNIST, root, download), mean=0.2860, std=0.3530)
