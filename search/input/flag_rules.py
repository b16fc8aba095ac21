"""Flags that contradict each other or the run they are given to: refused, never ignored.

Checked right after parsing, from which flags the user actually typed (argparse leaves the
others None), so a preset's own values never trip them.
"""
from __future__ import annotations

import argparse

from kdtune.search.input import options
from kdtune.search.input.errors import UsageError
from kdtune.search.input.spec import SearchSpec

# What only matters when kdtune trains the teacher itself.
TEACHER_TRAINING_FLAGS = ("teacher", "teacher_epochs", "teacher_weights", "teacher_workers")


def _flag(dest: str) -> str:
    return options.by_name()[dest].flag


def given_flags(args: argparse.Namespace) -> list[str]:
    """Destinations of the flags present on the command line."""
    return [dest for dest, value in vars(args).items() if value is not None]


def check_resume(args: argparse.Namespace) -> None:
    """--resume continues the run its manifest records: only the options declared resume-safe
    (search/input/options/run.py: where the run is, how this session executes it) go with it.
    Checked before the spec is built, so a refused flag's value is never read (nor imported)."""
    if not args.resume:
        return
    safe = options.resume_safe()
    changing = [_flag(d) for d in given_flags(args) if d not in safe]
    if changing:
        raise UsageError(f"--resume continues the run as it was started; {', '.join(changing)} would "
                         f"change it: drop them (only {options.resume_flags_text()} go with --resume), "
                         "or start a new run under another --name")


def check_flags(args: argparse.Namespace, spec: SearchSpec) -> None:
    """Raise UsageError for a flag the run would otherwise have to ignore."""
    given = given_flags(args)
    if args.resume:  # check_resume let only the resume-safe flags through
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
