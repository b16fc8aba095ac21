"""argparse `type=` converters: positive_int, shared by every command line (run_kd_search.py,
analysis/), and run_kd_search.py's structured values below.

A bad value raises ArgumentTypeError, which argparse reports as one usage error line.
"""
from __future__ import annotations

import argparse
from typing import Any


def positive_int(text: str) -> int:
    """A whole number >= 1 (trial counts, epochs, images, top-k)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ---- run_kd_search.py's structured values (the run options in search/input/options/) -------
# Imported lazily inside: analysis/ scripts import this module for positive_int.

def csv_list(text: str) -> list[str]:
    """a,b,c -> ["a", "b", "c"] (--students, --methods, --chain)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def search_dim(text: str):
    """One value pins a search dimension, LO:HI bounds it (--alpha, --temperature, --lr)."""
    from kdtune.search.tune import search_spaces as spaces

    try:
        return spaces.parse_dim(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def size_dim(text: str):
    """--depth / --width: a value or LO:HI for every family, or FAMILY=LO:HI,... per family."""
    from kdtune.search.tune import search_spaces as spaces

    try:
        return spaces.parse_size_dim(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def views(text: str) -> int:
    """--augment-views: K >= 1 fixed views, or 0 / online."""
    try:
        return parse_views(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--augment-views takes", "takes"))


def augment(text: str) -> tuple[str, int | None]:
    """NAME or NAME:PIXELS, e.g. jitter:2 (shift up to 2 px) or crop_flip:4 (pad 4 px)."""
    from kdtune.datasets.augment import resolve_pixels

    name, _, pixels = text.partition(":")
    try:
        value = int(pixels) if pixels else None
        resolve_pixels(name, value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return name, value


def parse_views(value: Any) -> int | None:
    """--augment-views / search.augment_views: K >= 1 views, 0 or "online" (0), None (default)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "online":
        return 0
    try:
        views = int(value)
        if views != float(value) or views < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"--augment-views takes a number of views K >= 1, or 0 / online for the "
                         f"online teacher; got {value!r}") from None
    return views
