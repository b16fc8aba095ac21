"""Command line of run_kd_search.py: the flags users type, parsed into a SearchSpec.

The flags are the run options' table (search/input/options/), one per option, grouped and
ordered as declared. Every flag defaults to None so that "not given" can fall back to the
preset; the help text names the preset as the source of the default.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kdtune.search.input import options
from kdtune.search.input.flag_rules import check_flags, check_resume
from kdtune.search.input.hardware import fit_to_machine
from kdtune.search.input.preset_loader import list_presets, load_preset
from kdtune.search.input.spec import SearchSpec, build_spec

EPILOG = """examples:
  python search/run_kd_search.py                       # quick offline search on digits
  python search/run_kd_search.py --dataset mnist --data-dir ./data
  python search/run_kd_search.py --dataset cifar10 --gpus-per-trial 0.25 --max-concurrent 4
  python search/run_kd_search.py --alpha 0.5 --temperature 2:8 --depth 1:2
  python search/run_kd_search.py --methods kd,dkd,dist      # the KD method as a searched dimension
  python search/run_kd_search.py --students timm:resnet,cifar_resnet --max-params 200000
  python search/run_kd_search.py --teacher timm:resnet18 --teacher-weights r18.pth --preset pretrained_teacher
  python search/run_kd_search.py --teacher-checkpoint export/model.onnx     # an exported teacher (.onnx, .pt2)
  python search/run_kd_search.py --import examples/my_plugin.py --students tiny_cnn --methods kd,cosine
  python search/run_kd_search.py --resume --name digits-20261122-101500
dimensions (--alpha --temperature --lr --depth --width): one value pins it, LO:HI bounds it;
  --depth/--width also take one setting per student family: --depth mlp=1:3,cifar_resnet=8:20"""


class _OneLineErrors(argparse.ArgumentParser):
    """argparse prints usage + error; kdtune's contract is one error line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="run_kd_search.py", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search distilled students under Ray Tune: teacher -> undistilled baseline -> "
                    "distillation (Optuna TPE + ASHA). Defaults come from the preset.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for o in options.OPTIONS:  # every flag is a declared option (search/input/options/), in its order
        if o.group not in groups:
            groups[o.group] = p.add_argument_group(o.group)
        groups[o.group].add_argument(o.flag, **o.argparse_kwargs())
    return p


def default_preset(dataset: str | None) -> str:
    return dataset if dataset in list_presets() else "digits"


def parse_args(argv: Sequence[str] | None = None) -> tuple[SearchSpec, argparse.Namespace]:
    """Parse flags into a spec (a --resume spec is re-read from the manifest by the caller)."""
    args = build_parser().parse_args(argv)
    check_resume(args)  # before the preset and the flags are read
    preset_name = args.preset or default_preset(args.dataset)
    preset = load_preset(preset_name)
    flags = {k: v for k, v in vars(args).items() if k != "preset"}
    given = {k for k, v in flags.items() if v is not None}
    spec = fit_to_machine(build_spec(preset, Path(preset_name).stem, flags), given)
    check_flags(args, spec)  # contradictory flags are refused, not ignored
    return spec, args
