"""Command line of run_kd_search.py: the flags users type, parsed into a SearchSpec.

Every flag defaults to None so that "not given" can fall back to the preset; the help text
names the preset as the source of the default.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kdtune.search.tune import search_spaces as spaces
from kdtune.search.input.flag_rules import check_flags
from kdtune.search.input.arg_types import non_negative_float, non_negative_int, positive_int
from kdtune.search.input.preset_loader import list_presets, load_preset
from kdtune.search.input.spec import OBJECTIVES, SearchSpec, build_spec, parse_views
from kdtune.search.tune.trackers import TRACKERS
from kdtune.trainables.losses import list_losses

EPILOG = """examples:
  python search/run_kd_search.py                       # quick offline search on digits
  python search/run_kd_search.py --dataset mnist --data-dir ./data
  python search/run_kd_search.py --dataset cifar10 --gpus-per-trial 0.25 --max-concurrent 4
  python search/run_kd_search.py --alpha 0.5 --temperature 2:8 --depth 1:2
  python search/run_kd_search.py --methods kd,dkd,dist      # the KD method as a searched dimension
  python search/run_kd_search.py --resume --name digits-20261122-101500
dimensions (--alpha --temperature --lr --depth --width): one value pins it, LO:HI bounds it;
  --depth/--width also take one setting per student family: --depth mlp=1:3,cifar_resnet=8:20"""


def _views(text: str) -> int:
    try:
        return parse_views(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--augment-views takes", "takes"))


def _dim(text: str):
    try:
        return spaces.parse_dim(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _size_dim(text: str):
    try:
        return spaces.parse_size_dim(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _augment(text: str) -> tuple[str, int | None]:
    """NAME or NAME:PIXELS, e.g. jitter:2 (shift up to 2 px) or crop_flip:4 (pad 4 px)."""
    from kdtune.datasets.augment import resolve_pixels

    name, _, pixels = text.partition(":")
    try:
        value = int(pixels) if pixels else None
        resolve_pixels(name, value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return name, value


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
    d.add_argument("--data-dir", help="folder holding the dataset files (torchvision layout; for "
                                      "image_folder, one sub-folder of images per class: required)")
    d.add_argument("--image-size", type=positive_int,
                   help="image_folder: side length in pixels images are resized to (preset: 32)")
    d.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="fetch missing mnist / fashion_mnist / cifar10 / cifar100 files into --data-dir "
                        "with torchvision's md5-checked downloader (default: on; --no-download for "
                        "offline use: missing files are then an error)")
    d.add_argument("--subset", type=positive_int, help="train on this many training images (quick runs)")
    d.add_argument("--val-fraction", type=float, help="share of the training set held out for validation")
    d.add_argument("--seed", type=int, help="seed for the data split, the samplers and the trials")
    d.add_argument("--augment-views", type=_views, metavar="K|online",
                   help="augmented datasets (cifar): students cycle through K fixed augmented views per "
                        "image whose teacher logits are computed once per search on the workers, not in "
                        "every trial (FKD). Default K = --max-epochs: the same pixels and teacher logits "
                        "as a fresh view every epoch. 0 or online: the teacher runs in every trial")
    d.add_argument("--augment", type=_augment, metavar="NAME[:PIXELS]",
                   help="training augmentation of the students (and of the teacher unless "
                        "--teacher-augment or the preset's teacher sets one): none, crop_flip[:PAD] or "
                        "jitter[:SHIFT] (random shift of up to SHIFT px, default 2; default: the dataset's)")
    d.add_argument("--teacher-augment", type=_augment, metavar="NAME[:PIXELS]",
                   help="the teacher's training augmentation only, e.g. jitter:2 (Hinton et al. 2015)")
    t = p.add_argument_group("teacher and students")
    t.add_argument("--teacher", help="teacher model name (see models.list_models())")
    t.add_argument("--teacher-epochs", type=positive_int, help="epochs of the teacher stage")
    t.add_argument("--teacher-weights", help="local state-dict file for a torchvision teacher (resnet18/resnet50)")
    t.add_argument("--teacher-checkpoint", help="a kdtune checkpoint.pt to use as the teacher (skips its training)")
    t.add_argument("--students", type=_csv, help=f"student families to search, comma-separated ({', '.join(spaces.FAMILIES)})")
    t.add_argument("--methods", type=_csv, help=f"KD methods searched, comma-separated ({', '.join(list_losses())}; "
                                                "several: the method is a searched dimension with its own "
                                                "hyperparameters; default: the preset's, else kd)")
    t.add_argument("--chain", type=_csv, help="teacher-assistant distillation (Mirzadeh et al. 2020): "
                                              "TEACHER,ASSISTANT,STUDENT, each a model name or FAMILY:DEPTH:WIDTH "
                                              "(e.g. resnet56,resnet32,resnet20 or mlp:2:512,mlp:2:128,mlp:1:32)")
    s = p.add_argument_group("search space (one value pins, LO:HI bounds)")
    for name, what in (("alpha", "KD weight in [0,1]"), ("temperature", "softmax temperature T > 0"),
                       ("lr", "learning rate")):
        s.add_argument(f"--{name}", type=_dim, help=what)
    for name in ("depth", "width"):
        s.add_argument(f"--{name}", type=_size_dim, help=f"student {name}, for every family or per family: "
                                                         f"FAMILY=LO:HI,... (e.g. mlp=1:3,cifar_resnet=8:20)")
    r = p.add_argument_group("search budget and resources")
    r.add_argument("--num-samples", type=positive_int, help="distillation trials")
    r.add_argument("--baseline-samples", type=positive_int, help="undistilled baseline trials")
    r.add_argument("--max-epochs", type=positive_int, help="epochs of a trial that ASHA never stops")
    r.add_argument("--grace-period", type=positive_int, help="epochs before ASHA may stop a trial")
    r.add_argument("--reduction-factor", type=int, help="ASHA keeps 1/RF of the trials at each rung")
    r.add_argument("--cpus-per-trial", type=non_negative_float, help="CPUs per trial (also its torch threads)")
    r.add_argument("--gpus-per-trial", type=non_negative_float, help="GPUs per trial; fractions share a card")
    r.add_argument("--max-concurrent", type=positive_int, help="trials running at once")
    r.add_argument("--objective", choices=OBJECTIVES, help="accuracy, or pareto (val_acc max, params min)")
    r.add_argument("--final-top-k", type=positive_int,
                   help="final stage: distinct distilled configs retrained (the Pareto set's cap under "
                        "--objective pareto), beside the best baseline")
    r.add_argument("--final-seeds", type=non_negative_int,
                   help="final stage: seeds per retrained config, each tested once (0 turns it off)")
    o = p.add_argument_group("run")
    o.add_argument("--storage-path", help="where experiments live (default ./kdtune_results; a shared "
                                          "filesystem path for multi-node runs)")
    o.add_argument("--name", help="experiment name (default <preset>-<date>-<time>)")
    o.add_argument("--resume", action="store_true", default=None,
                   help="continue an interrupted run (--name, or the latest in --storage-path) exactly "
                        "as it was started: only --name, --storage-path, --address, --max-failures and "
                        "--verbose may go with it; a flag that would change the search is refused")
    o.add_argument("--address", help="connect to a running Ray cluster (auto, host:port or ray://host:port; "
                                     "default: $RAY_ADDRESS, else a private local Ray)")
    o.add_argument("--max-failures", type=int, help="retries of a crashed trial from its last checkpoint")
    o.add_argument("--smoke-test", action="store_true", default=None, help="seconds-long run of all stages: caps the preset's budget (256 images, 2 trials, 2 epochs, ...); a flag you give wins")
    o.add_argument("--verbose", action="store_true", default=None,
                   help="print Ray Tune's own status tables and logs instead of one progress line per stage")
    o.add_argument("--tracker", choices=TRACKERS, help="also log every trial to MLflow or Weights & Biases "
                                                       "(needs the extra: pip install -e '.[mlflow]')")
    o.add_argument("--warm-start", metavar="EXPERIMENT",
                   help="seed each search stage's sampler with the finished trials of that stage of "
                        "EXPERIMENT (a finished kdtune run over the same search space)")
    return p


def default_preset(dataset: str | None) -> str:
    return dataset if dataset in list_presets() else "digits"


def parse_args(argv: Sequence[str] | None = None) -> tuple[SearchSpec, argparse.Namespace]:
    """Parse flags into a spec (a --resume spec is re-read from the manifest by the caller)."""
    args = build_parser().parse_args(argv)
    preset_name = args.preset or default_preset(args.dataset)
    preset = load_preset(preset_name)
    flags = {k: v for k, v in vars(args).items() if k != "preset"}
    spec = build_spec(preset, Path(preset_name).stem, flags)
    check_flags(args, spec)  # contradictory flags are refused, not ignored
    return spec, args
