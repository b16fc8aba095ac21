"""`image_folder`: a user's class-per-folder images (e.g. MHIST histopathology) via ImageFolder.

Layout: either root/train/<class>/* and root/test/<class>/* (the test split is used as is),
or root/<class>/* (a stratified 20% test split is carved with the fixed
`splits.TEST_SPLIT_SEED`). Every image is decoded once, as RGB, resized to
`image_size` x `image_size` (default 32) by torchvision's Resize, into uint8 (N, 3, S, S).
Normalisation constants are computed from the train split by `create_dataset`.
"""
from __future__ import annotations

import os

import torch
from PIL import UnidentifiedImageError
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .bundle import DatasetError
from .registry import Decoded, register_dataset
from .splits import STREAM_TEST, TEST_SPLIT_SEED, holdout_size, stratified_holdout

DEFAULT_IMAGE_SIZE = 32
TEST_FRACTION = 0.2


def _load_folder(folder: str, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every image under folder/<class>/ into uint8 (N, 3, size, size) + labels."""
    to_tensor = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])
    try:
        ds = ImageFolder(folder, transform=to_tensor)
    except (FileNotFoundError, OSError) as err:
        raise DatasetError(f"image_folder: no class folders with images in {folder} ({err}); "
                           "pass --data-dir pointing at a folder of one sub-folder per class "
                           "(image_folder cannot be downloaded)") from err
    images = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(ds.samples):
        try:
            images[i] = ds[i][0]
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DatasetError(f"cannot decode image {path}: {err}") from err
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return images, labels, list(ds.classes)


@register_dataset
def image_folder(root: str, *, download: bool = False, image_size: int | None = None) -> Decoded:
    """Class-per-folder images under `root` (see the module docstring for the layouts)."""
    del download  # a user's own images: nothing to fetch
    size = image_size or DEFAULT_IMAGE_SIZE
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train_x, train_y, classes = _load_folder(train_dir, size)
        test_x, test_y, test_classes = _load_folder(test_dir, size)
        if test_classes != classes:
            raise DatasetError(f"image_folder: class folders differ between {train_dir} "
                               f"{classes} and {test_dir} {test_classes}")
    else:
        images, labels, classes = _load_folder(root, size)
        n_test = holdout_size(len(labels), TEST_FRACTION)
        keep, held = stratified_holdout(labels, n_test, TEST_SPLIT_SEED, STREAM_TEST)
        train_x, train_y, test_x, test_y = images[keep], labels[keep], images[held], labels[held]
    return Decoded(train_images=train_x, train_labels=train_y, test_images=test_x,
                   test_labels=test_y, class_names=tuple(classes), augment="crop_flip")
