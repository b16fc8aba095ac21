"""Run options: where and how this run executes (--help group "run").

The ones declared `resume=True` say where the run is (--name, --storage-path) or how this
session executes it (--address, --max-failures, --verbose), never what it computes, so they
may go with --resume; every other option would change a half-finished search and is refused
there (flag_rules.check_flags). None of these is a preset key: they belong to the session,
not to the experiment a preset describes."""
from __future__ import annotations

import os
from functools import partial

from kdtune.search.input.options import values
from kdtune.search.input.schema import Option
from kdtune.search.tune.trackers import TRACKERS

_option = partial(Option, group="run")


def _resume_help() -> str:
    from kdtune.search.input.options import resume_flags_text

    return ("continue an interrupted run (--name, or the latest in --storage-path) exactly as it was started: "
            f"only {resume_flags_text()} may go with it; a flag that would change the search is refused")


def _ray_address(value: str | None) -> str | None:
    """RAY_ADDRESS is how `ray job submit` points an entrypoint at its cluster."""
    return value or os.environ.get("RAY_ADDRESS") or None


OPTIONS = (
    _option("storage_path", str, "kdtune_results", None, "where experiments live (default ./kdtune_results; a "
            "shared filesystem path for multi-node runs)", resume=True),
    _option("name", str, "", None, "experiment name (default <preset>-<date>-<time>)", resume=True),
    _option("resume", bool, False, None, _resume_help, resume=True),
    _option("address", str, None, None, "connect to a running Ray cluster (auto, host:port or ray://host:port; "
            "default: $RAY_ADDRESS, else a private local Ray)", resume=True, to_spec=_ray_address),
    _option("max_failures", int, 2, None, "retries of a crashed trial from its last checkpoint", minimum=0,
            resume=True),
    _option("smoke_test", bool, False, None, "seconds-long run of all stages: caps the preset's budget (256 "
            "images, 2 trials, 2 epochs, ...); a flag you give wins"),
    _option("verbose", bool, False, None, "print Ray Tune's own status tables and logs instead of one progress "
            "line per stage", resume=True),
    _option("tracker", str, None, None, "also log every trial to MLflow or Weights & Biases (needs the extra: "
            "pip install -e '.[mlflow]')", choices=TRACKERS),
    _option("warm_start", str, None, None, "seed each search stage's sampler with the finished trials of that "
            "stage of EXPERIMENT (a finished kdtune run over the same search space)", metavar="EXPERIMENT",
            to_spec=values.resolved_path),
)
