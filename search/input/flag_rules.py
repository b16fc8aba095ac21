"""Flags that contradict each other or the run they are given to: refused, never ignored.

Checked right after parsing, from which flags the user actually typed (argparse leaves the
others None), so a preset's own values never trip them.
"""
from __future__ import annotations

import argparse

from kdtune.search.input.errors import UsageError
from kdtune.search.input.spec import SearchSpec

# --resume continues the run its manifest records. These flags say where that run is and how
# to execute it, never what it computes, so they are honoured; any other flag would change
# the spec a half-finished search was started with, and is refused. --verbose only chooses
# this session's console (search/tune/progress.py), so it goes too.
RESUME_FLAGS = ("resume", "name", "storage_path", "address", "max_failures", "verbose")

# What only matters when kdtune trains the teacher itself.
TEACHER_TRAINING_FLAGS = ("teacher", "teacher_epochs", "teacher_weights", "teacher_workers")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given_flags(args: argparse.Namespace) -> list[str]:
    """Destinations of the flags present on the command line."""
    return [dest for dest, value in vars(args).items() if value is not None]


def check_flags(args: argparse.Namespace, spec: SearchSpec) -> None:
    """Raise UsageError for a flag the run would otherwise have to ignore."""
    given = given_flags(args)
    if args.resume:
        changing = [_flag(d) for d in given if d not in RESUME_FLAGS]
        if changing:
            raise UsageError(f"--resume continues the run as it was started; {', '.join(changing)} would "
                             "change it: drop them (only --name, --storage-path, --address, "
                             "--max-failures and --verbose go with --resume), or start a new run under another --name")
        return
    for dim in ("depth", "width"):
        value = getattr(args, dim, None)
        if isinstance(value, dict):
            unsearched = sorted(set(value) - set(spec.students))
            if unsearched:
                raise UsageError(f"{_flag(dim)} sets {', '.join(unsearched)}, which the search does not "
                                 f"train (students: {', '.join(spec.students)}); add it to --students or drop it")
    if spec.teacher_checkpoint:
        ignored = [_flag(d) for d in given if d in TEACHER_TRAINING_FLAGS]
        if ignored:
            source = "--teacher-checkpoint" if args.teacher_checkpoint else "the preset's teacher_checkpoint"
            raise UsageError(f"{', '.join(ignored)}: only for a teacher that kdtune trains, but {source} "
                             f"supplies a trained one ({spec.teacher_checkpoint}); drop one of them")
    if spec.chain:
        replaced = [_flag(d) for d in given if d in ("teacher", "teacher_weights")]
        if replaced:
            raise UsageError(f"{', '.join(replaced)}: the chain's first link is the teacher "
                             f"({spec.chain[0]}); drop {', '.join(replaced)} or change the chain")
