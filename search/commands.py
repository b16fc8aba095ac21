"""The `kdtune` console command: one entry point over the scripts, which keep working alone.

    kdtune search --dataset mnist --data-dir ./data   # = python search/run_kd_search.py ...
    kdtune best kdtune_results/<name>                 # = python analysis/best_trials.py ...
    kdtune export kdtune_results/<name> --rank 2      # = python analysis/export.py ...
    kdtune --help                                     # the commands; `kdtune CMD --help` for one

Each command calls its script's main(argv) with the remaining arguments, so flags, help,
errors and exit codes are the script's own. Scripts are imported only when chosen: the
listing starts in well under a second, without torch or Ray.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# command -> (module with main(argv) -> int, one-line summary)
COMMANDS = {
    "search": ("kdtune.search.run_kd_search", "run or resume a search (teacher -> baseline -> distill)"),
    "best": ("kdtune.analysis.best_trials", "top-k trials of every stage (Markdown + CSV)"),
    "report": ("kdtune.analysis.final_report", "TEST split: teacher vs baseline vs distilled, latency, confusion matrix"),
    "export": ("kdtune.analysis.export", "write a student as ONNX / torch.export / TorchScript + model_card.json"),
    "tradeoffs": ("kdtune.analysis.tradeoffs", "Pareto front: val_acc vs params and FLOPs (PNG)"),
    "importance": ("kdtune.analysis.importance", "which hyperparameters mattered (Optuna fANOVA)"),
    "curves": ("kdtune.analysis.learning_curves", "val_acc per epoch and per-layer gradient norms (PNG)"),
}


def make_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_module, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="kdtune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="kdtune: Ray Tune + Optuna search for knowledge-distilled students, and the tools "
                    "that read its experiments.",
        epilog=f"commands:\n{listing}\n\n`kdtune COMMAND --help` shows a command's own flags.")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the command unchanged")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(args.args)


if __name__ == "__main__":
    sys.exit(main())
