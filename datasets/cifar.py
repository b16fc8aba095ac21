"""`cifar10` and `cifar100` through torchvision's own CIFAR classes and pickle format.

torchvision checks the md5 of every file before reading, which rejects user-converted copies
and the small files the tests write. The subclasses below only blank the md5s (torchvision's
`check_integrity(path, None)` then checks existence); torchvision still does the decoding
(python pickles -> one HWC numpy array) and the download (whose archive md5 is kept). When
decoding fails, each file is re-read alone to name the bad one in the `DatasetError`.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision.datasets.utils import download_and_extract_archive

from .bundle import DatasetError, missing_files_error
from .registry import Decoded, register_dataset

_DECODE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                  IndexError, AttributeError, OSError)
_ROW_BYTES = 3 * 32 * 32  # one image: R, G, B planes of 32x32, row-major


def _existence_only(cls: type) -> type:
    """A subclass of torchvision's `cls` whose integrity check is file existence."""
    return type(cls.__name__, (cls,), {
        "__doc__": f"torchvision {cls.__name__} without per-file md5 checks.",
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches hold dicts, lists, bytes and numpy arrays; anything else is refused.

    A plain pickle.load runs whatever a file names (os.system, ...): a data file from the
    internet must not be able to execute code, just as checkpoints load weights_only.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not CIFAR data")
        return super().find_class(module, name)


def _safe_load(file, **kwargs):
    return _ArraysOnlyUnpickler(file, **kwargs).load()


# torchvision's CIFAR classes call `pickle.load` from their own module: route it through the
# restricted unpickler, so torchvision's decoding path stays the one in use.
tvd.cifar.pickle = type("restricted_pickle", (), {"load": staticmethod(_safe_load),
                                                  "UnpicklingError": pickle.UnpicklingError})

CIFAR10 = _existence_only(tvd.CIFAR10)
CIFAR100 = _existence_only(tvd.CIFAR100)


def _find_bad_file(folder: str, names: list[str], meta_name: str) -> tuple[str, str]:
    """Re-read each file alone (error path only) and return (path, reason) of the first bad one."""
    for name in names + [meta_name]:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                entry = _safe_load(f, encoding="latin1")
            if name == meta_name:
                continue
            data = np.asarray(entry["data"])
            labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
            if data.ndim != 2 or data.shape[1] != _ROW_BYTES or len(labels) != len(data):
                return path, f"data {data.shape} / {len(labels)} labels, expected (N, {_ROW_BYTES})"
        except _DECODE_ERRORS as err:
            return path, f"{type(err).__name__}: {err}"
    return folder, "unknown decode error"


def _decode(name: str, cls: type, root: str, download: bool,
            mean: tuple[float, ...], std: tuple[float, ...]) -> Decoded:
    """Decode train and test through torchvision; mean/std are the published train stats."""
    folder = os.path.join(root, cls.base_folder)
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing and not download:
        raise missing_files_error(name, folder, missing)
    if missing:  # torchvision's downloader: the archive's md5 is checked before it is unpacked
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    try:
        train = cls(root, train=True, download=False)
        test = cls(root, train=False, download=False)
    except _DECODE_ERRORS as err:
        path, reason = _find_bad_file(folder, names[:-1], cls.meta["filename"])
        raise DatasetError(f"cannot decode {path}: truncated or corrupt CIFAR pickle ({reason}); "
                           "delete it to fetch it again (without --no-download), or point --data-dir at good files"
                           ) from err
    splits = []
    for ds in (train, test):
        if len(ds.targets) != len(ds.data):
            path, reason = _find_bad_file(folder, names[:-1], cls.meta["filename"])
            raise DatasetError(f"cannot decode {path}: {reason}")
        # torchvision holds (N, 32, 32, 3) HWC; one permute + copy gives NCHW, no PIL.
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits += [images, torch.as_tensor(ds.targets, dtype=torch.int64)]
    labels_max = int(max(splits[1].max(), splits[3].max()))
    if labels_max >= len(train.classes):
        raise DatasetError(f"{folder}: label {labels_max} but only {len(train.classes)} class "
                           f"names in {cls.meta['filename']}")
    return Decoded(*splits, class_names=tuple(train.classes), augment="crop_flip",
                   mean=mean, std=std)


@register_dataset
def cifar10(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """CIFAR-10 from root/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta)."""
    del image_size  # fixed 32x32
    return _decode("cifar10", CIFAR10, root, download,
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset
def cifar100(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """CIFAR-100 (fine labels) from root/cifar-100-python (train, test, meta)."""
    del image_size
    return _decode("cifar100", CIFAR100, root, download,
                   mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))

