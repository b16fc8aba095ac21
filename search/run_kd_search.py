"""kdtune's main job: search the best distilled student under Ray Tune.

    python search/run_kd_search.py                      # offline digits, a few minutes on CPU
    python search/run_kd_search.py --dataset cifar10 --data-dir ./data
    python search/run_kd_search.py --help

Stages: teacher -> undistilled baseline -> distillation (Optuna TPE + ASHA), each a Ray Tune
experiment under <storage-path>/<name>/, with manifest.json and summary.md beside them.
Bad input exits with code 2 and one line before Ray starts; Ctrl-C exits with 130 and the
command that resumes the run.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from kdtune.search.input.cli import parse_args
    from kdtune.search.input.errors import UsageError
    from kdtune.search.input.validate import preflight

    try:
        spec, args = parse_args(argv)
        spec, bundle = preflight(spec, name_given=args.name is not None)
    except UsageError as exc:  # bad input only: any other error is a bug and keeps its traceback
        print(f"run_kd_search.py: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2

    from kdtune.search.stages.pipeline import Interrupted, graceful_sigterm, run
    from kdtune.search.tune.progress import run_header

    # SIGTERM (cluster schedulers, `kill`) takes the same graceful path as Ctrl-C: Ray Tune
    # saves the experiment state and returns from fit(), so --resume loses nothing.
    # pipeline.start_ray installs it again: ray.init replaces the driver's SIGTERM handler.
    # Ctrl-C must raise KeyboardInterrupt even in a background job (`cmd &` ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    graceful_sigterm()

    print(run_header(spec, bundle), flush=True)
    try:
        run(spec, bundle)
    except (Interrupted, KeyboardInterrupt) as exc:
        stage = f" during the {exc} stage" if isinstance(exc, Interrupted) else ""
        print(f"\nkdtune: interrupted{stage}; nothing finished is lost. Resume with:\n"
              f"  python search/run_kd_search.py --resume --storage-path {Path(spec.storage_path).resolve()} "
              f"--name {spec.name}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
