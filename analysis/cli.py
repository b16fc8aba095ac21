"""The one argument block every analysis script shares: `experiment_dir` and `--out`.

    parser = make_parser(__doc__, __file__)
    parser.add_argument("--top", type=int, default=10)      # script-specific flags
    args, exp = parse(parser, argv)                         # exits 2 with one line if unusable

A missing or foreign experiment folder is reported the same way run_kd_search.py reports bad
input: one `<script>: error: ...` line on stderr and exit code 2, no traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

# Ray prints a token-auth line on every init and warns about metric files of trials that have
# not reported yet; analysis never starts Ray, so keep its import quiet.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from kdtune.analysis.experiment import Experiment, ExperimentError  # noqa: E402


def make_parser(doc: str | None, script: str, out_default: str = "<experiment_dir>/analysis"
                ) -> argparse.ArgumentParser:
    """Parser with the shared arguments; the script's docstring is its help text.

    `script` is the caller's __file__: its name is the program name in usage and error lines,
    also when main() is called in-process (tests), where sys.argv[0] is someone else's.
    `out_default` only words the --out help; the script resolves a missing --out itself.
    """
    lines = (doc or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        prog=Path(script).name,
        description=lines[0] if lines else None,
        epilog="\n".join(lines[1:]).strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment_dir", type=Path,
                        help="a kdtune experiment folder (<storage-path>/<name>, holding manifest.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write tables and figures (default: {out_default})")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
          ) -> tuple[argparse.Namespace, Experiment]:
    """Parse argv and open the experiment; an unusable folder exits 2 with one line."""
    args = parser.parse_args(argv)
    try:
        exp = Experiment.open(args.experiment_dir, out=args.out)
    except ExperimentError as exc:
        fail(parser, str(exc))
    return args, exp


def fail(parser: argparse.ArgumentParser, message: str) -> None:
    """One line on stderr and exit code 2 (bad input, as run_kd_search.py does)."""
    print(f"{parser.prog}: error: {message.splitlines()[0]}", file=sys.stderr)
    raise SystemExit(2)
