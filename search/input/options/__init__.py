"""The run options of run_kd_search.py, each declared once (search/input/schema.py says what a
declaration holds and who reads it). One module per --help group; OPTIONS is their table, in
the command line's order. Readers look the table up when they run (`options.OPTIONS`), never
at import, so a test can extend it.

Adding a run option is one row in one of these modules:

    Option("rung_patience", int, 1, "search.rung_patience", "rungs a trial may stay paused",
           minimum=1, smoke=1)
"""
from __future__ import annotations

from typing import Any

from kdtune.search.input.options import budget, data, models, run, space
from kdtune.search.input.schema import Option

OPTIONS: tuple[Option, ...] = (*data.OPTIONS, *models.OPTIONS, *space.OPTIONS, *budget.OPTIONS, *run.OPTIONS)


def by_name() -> dict[str, Option]:
    return {o.name: o for o in OPTIONS}


def smoke_limits() -> dict[str, Any]:
    """--smoke-test's cap of each option that has one."""
    return {o.name: o.smoke for o in OPTIONS if o.smoke is not None}


def resume_safe() -> set[str]:
    """Options that may go with --resume (--resume among them)."""
    return {o.name for o in OPTIONS if o.resume}


def resume_flags_text() -> str:
    """'--name, --storage-path, ... and --verbose': the flags that go with --resume."""
    flags = [o.flag for o in OPTIONS if o.resume and o.name != "resume"]
    return ", ".join(flags[:-1]) + f" and {flags[-1]}" if len(flags) > 1 else "".join(flags)
