"""Command line of run_kd_search.py: the flags users type, parsed into a SearchSpec.

Every flag defaults to None so that "not given" can fall back to the preset; the help text
names the preset as the source of the default.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from search import spaces
from search.preset_loader import list_presets, load_preset
from search.spec import OBJECTIVES, SearchSpec, build_spec

EPILOG = """examples:
  python search/run_kd_search.py                       # quick offline search on digits
  python search/run_kd_search.py --dataset mnist --data-dir ../shared/data
  python search/run_kd_search.py --dataset cifar10 --gpus-per-trial 0.25 --max-concurrent 4
  python search/run_kd_search.py --alpha 0.5 --temperature 2:8 --depth 1:2
  python search/run_kd_search.py --resume --name digits-20261122-101500
dimensions (--alpha --temperature --lr --depth --width): one value pins it, LO:HI bounds it."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _dim(text: str):
    try:
        return spaces.parse_dim(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _OneLineErrors(argparse.ArgumentParser):
    """argparse prints usage + error; kdtune's contract is one error line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="run_kd_search.py", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search distilled students under Ray Tune: teacher -> undistilled baseline -> "
                    "distillation (Optuna TPE + ASHA). Defaults come from the preset.")
    d = p.add_argument_group("data and preset")
    d.add_argument("--preset", help=f"bundled preset ({', '.join(list_presets())}) or a .yaml path "
                                    "(default: the dataset's preset, else digits)")
    d.add_argument("--dataset", help="digits (offline default), mnist, fashion_mnist, cifar10, cifar100, image_folder")
    d.add_argument("--data-dir", help="folder holding the dataset files (torchvision layout)")
    d.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    d.add_argument("--subset", type=_positive_int, help="train on this many training images (quick runs)")
    d.add_argument("--val-fraction", type=float, help="share of the training set held out for validation")
    d.add_argument("--seed", type=int, help="seed for the data split, the samplers and the trials")
    d.add_argument("--augment-views", type=_positive_int,
                   help="augmented datasets (cifar): students cycle through K fixed augmented views per "
                        "image and the teacher's logits for them are computed once per search, not in "
                        "every trial (FKD; default: a fresh view every epoch, teacher run online)")
    t = p.add_argument_group("teacher and students")
    t.add_argument("--teacher", help="teacher model name (see models.list_models())")
    t.add_argument("--teacher-epochs", type=_positive_int, help="epochs of the teacher stage")
    t.add_argument("--teacher-weights", help="local state-dict file for a torchvision teacher (resnet18/resnet50)")
    t.add_argument("--teacher-checkpoint", help="a kdtune checkpoint.pt to use as the teacher (skips its training)")
    t.add_argument("--students", type=_csv, help=f"student families to search, comma-separated ({', '.join(spaces.FAMILIES)})")
    t.add_argument("--chain", type=_csv, help="teacher-assistant distillation (Mirzadeh et al. 2020): "
                                              "TEACHER,ASSISTANT,STUDENT, each a model name or FAMILY:DEPTH:WIDTH "
                                              "(e.g. resnet56,resnet32,resnet20 or mlp:2:512,mlp:2:128,mlp:1:32)")
    s = p.add_argument_group("search space (one value pins, LO:HI bounds)")
    for name, what in (("alpha", "KD weight in [0,1]"), ("temperature", "softmax temperature T > 0"),
                       ("lr", "learning rate"), ("depth", "student depth"), ("width", "student width")):
        s.add_argument(f"--{name}", type=_dim, help=what)
    r = p.add_argument_group("search budget and resources")
    r.add_argument("--num-samples", type=_positive_int, help="distillation trials")
    r.add_argument("--baseline-samples", type=_positive_int, help="undistilled baseline trials")
    r.add_argument("--max-epochs", type=_positive_int, help="epochs of a trial that ASHA never stops")
    r.add_argument("--grace-period", type=_positive_int, help="epochs before ASHA may stop a trial")
    r.add_argument("--reduction-factor", type=int, help="ASHA keeps 1/RF of the trials at each rung")
    r.add_argument("--cpus-per-trial", type=_non_negative_float, help="CPUs per trial (also its torch threads)")
    r.add_argument("--gpus-per-trial", type=_non_negative_float, help="GPUs per trial; fractions share a card")
    r.add_argument("--max-concurrent", type=_positive_int, help="trials running at once")
    r.add_argument("--objective", choices=OBJECTIVES, help="accuracy, or pareto (val_acc max, params min)")
    r.add_argument("--final-top-k", type=_positive_int,
                   help="final stage: distinct distilled configs retrained (the Pareto set's cap under "
                        "--objective pareto), beside the best baseline")
    r.add_argument("--final-seeds", type=_non_negative_int,
                   help="final stage: seeds per retrained config, each tested once (0 turns it off)")
    o = p.add_argument_group("run")
    o.add_argument("--storage-path", help="where experiments live (default ./kdtune_results; a shared "
                                          "filesystem path for multi-node runs)")
    o.add_argument("--name", help="experiment name (default <preset>-<date>-<time>)")
    o.add_argument("--resume", action="store_true", default=None,
                   help="continue an interrupted run (--name, or the latest in --storage-path)")
    o.add_argument("--address", help="connect to a running Ray cluster (auto, host:port or ray://host:port; "
                                     "default: $RAY_ADDRESS, else a private local Ray)")
    o.add_argument("--max-failures", type=int, help="retries of a crashed trial from its last checkpoint")
    o.add_argument("--smoke-test", action="store_true", default=None, help="seconds-long run of all stages")
    return p


def default_preset(dataset: str | None) -> str:
    return dataset if dataset in list_presets() else "digits"


def parse_args(argv: Sequence[str] | None = None) -> tuple[SearchSpec, argparse.Namespace]:
    """Parse flags into a spec (a --resume spec is re-read from the manifest by the caller)."""
    args = build_parser().parse_args(argv)
    preset_name = args.preset or default_preset(args.dataset)
    preset = load_preset(preset_name)
    flags = {k: v for k, v in vars(args).items() if k != "preset"}
    return build_spec(preset, Path(preset_name).stem, flags), args
