"""Run options: the data and the preset (--help group "data and preset")."""
from __future__ import annotations

from functools import partial

from kdtune.search.input import arg_types
from kdtune.search.input.options import values
from kdtune.search.input.schema import Option

_option = partial(Option, group="data and preset")


def _preset_help() -> str:
    from kdtune.search.input.preset_loader import list_presets

    return (f"bundled preset ({', '.join(list_presets())}) or a .yaml path "
            "(default: the dataset's preset, else digits)")


def _resolve_imports(entries) -> tuple[str, ...]:
    """Files as absolute paths, modules as given (user_imports.resolve); loaded by build_spec."""
    from kdtune.search.input import user_imports

    return tuple(user_imports.resolve(entries or ()))


OPTIONS = (
    # The preset is where the others' defaults come from; SearchSpec.preset records its name.
    _option("preset", str, None, None, _preset_help),
    _option("dataset", str, "digits", "dataset",
            "digits (offline default), mnist, fashion_mnist, cifar10, cifar100, image_folder"),
    _option("data_dir", str, None, "data_dir",
            "folder holding the dataset files (torchvision layout; for image_folder, one sub-folder of images "
            "per class: required)"),
    _option("image_size", int, None, "image_size",
            "image_folder: side length in pixels images are resized to (preset: 32)", minimum=1),
    # The image store's three settings are this machine's (memory, disk, cores): command line only.
    _option("resident_max_mb", float, None, None,
            "image_folder: decoded sets larger than this many MiB are written once to an on-disk store that "
            "trials read batches from (flat memory in the set's size); smaller ones stay in memory (default 1024)",
            minimum=0, metavar="MB"),
    _option("store_dir", str, None, None,
            "image_folder: where decoded stores live, reused by later runs on the same files (default "
            "$KDTUNE_STORE_DIR or ~/.cache/kdtune/stores)", to_spec=values.resolved_path),
    _option("decode_workers", int, None, None,
            "image_folder: decode the images in N parallel shards (default: the CPU count)", minimum=1, metavar="N"),
    _option("download", bool, True, None,
            "fetch missing mnist / fashion_mnist / cifar10 / cifar100 files into --data-dir with torchvision's "
            "md5-checked downloader (default: on; --no-download for offline use: missing files are then an error)"),
    _option("subset", int, None, "subset", "train on this many training images (quick runs)",
            minimum=1, smoke=256),
    _option("val_fraction", float, 0.1, "val_fraction", "share of the training set held out for validation",
            minimum=0, minimum_open=True, maximum=1, maximum_open=True),
    _option("seed", int, 0, "seed", "seed for the data split, the samplers and the trials"),
    _option("augment_views", arg_types.views, None, "search.augment_views",
            "augmented datasets (cifar): students cycle through K fixed augmented views per image whose teacher "
            "logits are computed once per search on the workers, not in every trial (FKD). Default K = "
            "--max-epochs: the same pixels and teacher logits as a fresh view every epoch. 0 or online: the "
            "teacher runs in every trial", metavar="K|online", to_spec=arg_types.parse_views),
    _option("augment", arg_types.augment, None, "train.augment",
            "training augmentation of the students (and of the teacher unless --teacher-augment or the preset's "
            "teacher sets one): none, crop_flip[:PAD] or jitter[:SHIFT] (random shift of up to SHIFT px, "
            "default 2; default: the dataset's)", metavar="NAME[:PIXELS]", write=values.write_augment),
    _option("teacher_augment", arg_types.augment, None, "teacher.augment",
            "the teacher's training augmentation only, e.g. jitter:2 (Hinton et al. 2015)",
            metavar="NAME[:PIXELS]", write=values.write_augment),
    _option("imports", str, (), "imports",
            "import a module or .py file first (repeatable): its @kdtune.register_model / register_dataset / "
            "register_loss / register_family names are then usable; imported in every Ray worker too and "
            "recorded for --resume and the analysis",
            flag="--import", metavar="MODULE_OR_FILE", repeat=True, merge=values.appended,
            to_spec=_resolve_imports),
)
