"""Running a search from Python, with the command line's options, and opening its experiment.

    exp = kdtune.run_search(dataset="digits", num_samples=6, methods=["kd", "dkd"])
    exp = kdtune.run_search(preset="mnist", data_dir="./data", final_seeds=3)

Each keyword is a flag of `python search/run_kd_search.py` with dashes as underscores
(`num_samples=6` is `--num-samples 6`); `kdtune.search_options()` lists them. The keywords
become that command line and go through the same parser, preset merge and pre-flight checks,
so a bad value raises `kdtune.UsageError` with the CLI's one-line message before Ray starts,
and an unknown keyword raises TypeError naming the known ones. Nothing is accepted and ignored.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdtune.analysis.experiment import Experiment as _Reader
from kdtune.analysis.experiment import ExperimentError
from kdtune.search.record.stage_names import DISTILL, FINAL


class Experiment(_Reader):
    """A search's experiment folder, read (kdtune.analysis.experiment.Experiment: stages, best,
    final_table, trials, curves) and exported."""

    def export(self, stage: str | None = None, rank: int = 1, out: str | Path | None = None,
               repeats: int | None = None) -> Path:
        """Write the rank-th best student of `stage` (default: final once done, else distill) as
        analysis/export.py does; the folder of verified files. ExperimentError if it fails."""
        import contextlib
        import io

        from kdtune.analysis import export

        argv = [str(self.path), "--rank", str(rank)] + (["--stage", stage] if stage else [])
        argv += ["--repeats", str(repeats)] if repeats is not None else []  # timed runs per latency figure
        folder = Path(out) if out is not None else None
        if folder is not None:
            argv += ["--out", str(folder)]
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                code = export.main(argv)
        except SystemExit as exc:  # the script's one-line usage errors
            code = exc.code
        if code != 0:
            message = errors.getvalue().strip().splitlines()
            raise ExperimentError(message[-1] if message else f"export failed with exit code {code}")
        chosen = stage or (FINAL if self.status(FINAL) == "done" else DISTILL)
        return folder if folder is not None else self.path / "export" / f"{chosen}-rank{rank}"


def _option_actions() -> dict[str, argparse.Action]:
    from kdtune.search.input.cli import build_parser

    return {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest != "help"}


def search_options() -> dict[str, str]:
    """keyword -> help text of every option run_search takes (the CLI's flags)."""
    return {dest: action.help or "" for dest, action in _option_actions().items()}


def to_argv(options: dict[str, Any]) -> list[str]:
    """The command line that `options` (keyword -> value) stands for."""
    actions = _option_actions()
    argv: list[str] = []
    for key, value in options.items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(actions))
            raise TypeError(f"run_search() got an unknown option {key!r}; known options: {known}")
        if value is None:
            continue  # None means "not given", as for an omitted flag: the preset decides
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:  # store_true flags
            if value is not True:
                raise TypeError(f"run_search(): {key} takes True (or None), not {value!r}")
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):  # repeatable (--import): once per value
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                argv += [flag, str(item)]
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def run_search(dataset: str | None = None, **options: Any) -> Experiment:
    """Run (or, with resume=True, continue) a search; return its experiment when it has finished.

    Raises kdtune.UsageError for bad input (before any work starts) and KeyboardInterrupt
    when interrupted (the experiment then resumes with `resume=True` and the same name)."""
    from kdtune.search.input.cli import parse_args
    from kdtune.search.input.validate import preflight
    from kdtune.search.stages.pipeline import Interrupted, run
    from kdtune.search.tune.progress import run_header

    argv = to_argv({"dataset": dataset, **options})
    spec, args = _parse(parse_args, argv)
    spec, bundle = preflight(spec, name_given=args.name is not None)
    print(run_header(spec, bundle), flush=True)
    try:
        run(spec, bundle)
    except Interrupted as exc:
        raise KeyboardInterrupt(f"kdtune: interrupted during the {exc} stage; resume with "
                                f"run_search(resume=True, name={spec.name!r}, "
                                f"storage_path={str(spec.storage_path)!r})") from None
    return open_experiment(spec.experiment_dir)


def _parse(parse_args, argv: list[str]):
    """The CLI's parse, with argparse's one error line (which exits 2) raised as UsageError."""
    import contextlib
    import io

    from kdtune.search.input.errors import UsageError

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parse_args(argv)
    except SystemExit as exc:
        lines = errors.getvalue().strip().splitlines()
        raise UsageError(lines[-1].split("error: ", 1)[-1] if lines else f"bad options (exit {exc.code})") from None


def open_experiment(path: str | Path) -> Experiment:
    """The reader of a finished (or running) experiment folder; ExperimentError if it is none."""
    return Experiment.open(path)  # the classmethod builds this subclass


__all__: Sequence[str] = ("Experiment", "run_search", "search_options", "open_experiment", "to_argv")
