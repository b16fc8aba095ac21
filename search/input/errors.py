"""The one error type a user's input raises, and the one-line warning format.

`UsageError` is what run_kd_search.py turns into one line and exit code 2; any other
exception is a bug and keeps its traceback. It subclasses ValueError so callers that
catch bad values generally (tests, library users) still do.
"""
from __future__ import annotations

import sys


class UsageError(ValueError):
    """Bad input: reported as one line, exit code 2, before any work starts."""


def warn(message: str) -> None:
    """One line on stderr, for input that is honoured but worth knowing about."""
    print(f"kdtune: warning: {message}", file=sys.stderr, flush=True)
