"""argparse `type=` converters shared by every command line (run_kd_search.py, analysis/).

A bad value raises ArgumentTypeError, which argparse reports as one usage error line.
"""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1 (trial counts, epochs, images, top-k)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0 (resources per trial)."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (0 turns a stage off, e.g. --final-seeds 0)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
