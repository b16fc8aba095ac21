"""Fetching a torchvision dataset's missing files, or one line saying why it cannot be done.

torchvision's own downloaders do the work (MNIST's mirrors, CIFAR's archive), and they
check the md5 of what they fetch. Around them: the size of the download is said before
it starts (stdout), their mirror-by-mirror chatter is kept off the terminal, and a failed
fetch (no network) leaves behind no folder it created.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Callable

from .bundle import DatasetError, MissingFilesError

# What torchvision fetches for each dataset, in MB (10^6 bytes): the four MNIST-format
# .gz files, or CIFAR's python-version .tar.gz (170,498,071 / 169,001,437 bytes).
DOWNLOAD_MB = {"mnist": 11.6, "fashion_mnist": 30.9, "cifar10": 170.5, "cifar100": 169.0}


class DownloadError(DatasetError):
    """Missing files could not be fetched; the message names the folder, the files, the fix."""


def fetch(missing: MissingFilesError, build: Callable[[], object]):
    """Run `build` (a create_dataset call with download on) for the files `missing` names.

    Returns what `build` returns; raises DownloadError when the fetch fails.
    """
    size = DOWNLOAD_MB.get(missing.name)
    if size is None:
        raise missing  # not a dataset kdtune knows how to fetch
    print(f"kdtune: {missing.name} files missing: downloading {size:g} MB into {missing.folder} "
          "(torchvision's downloader, md5-checked)", flush=True)
    created = _first_missing(missing.folder)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):  # "Failed to download (trying next)" per mirror
            return build()
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError
        if created is not None:
            _remove_empty_tree(created)
        reason = str(exc).strip().splitlines()
        detail = reason[-1] if reason else type(exc).__name__
        raise DownloadError(
            f"cannot download {missing.name} into {missing.folder} ({detail}); put "
            f"{', '.join(missing.missing)} there or point --data-dir at a folder that has them, "
            "and pass --no-download to use them without fetching") from exc


def _first_missing(folder: str) -> str | None:
    """The outermost folder of `folder`'s path that does not exist yet (None: all exist)."""
    folder = os.path.abspath(folder)
    first = None
    while not os.path.exists(folder):
        first = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return first


def _remove_empty_tree(top: str) -> None:
    """Remove `top` and its sub-folders if no file lies anywhere under them."""
    if not os.path.isdir(top):
        return
    for _dirpath, _dirs, files in os.walk(top):
        if files:
            return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        os.rmdir(dirpath)
