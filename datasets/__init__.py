"""kdtune datasets: a registry of datasets decoded once into uint8 tensors, plus
`DeviceLoader`, which batches, augments and normalises them on the training device.

    from kdtune.datasets import create_dataset, DeviceLoader
    bundle = create_dataset("digits")            # offline default; or "cifar10", "./data"
    loader = DeviceLoader(bundle.train, batch_size=128, mean=bundle.mean, std=bundle.std,
                          augment=bundle.augment, shuffle=True, seed=0)
"""
from .bundle import DatasetBundle, DatasetError, MissingFilesError, Split
from .loader import DeviceLoader
from .registry import create_dataset, list_datasets, register_dataset
# The builder modules (cifar, digits, image_folder, mnist) are imported on the registry's first
# lookup (datasets/registry.py), so unpickling a bundle does not import torchvision.

__all__ = ["DatasetBundle", "DatasetError", "DeviceLoader", "MissingFilesError", "Split", "create_dataset",
           "list_datasets", "register_dataset"]
