"""The on-disk image store (datasets/store.py): the same data as the resident path, reused
across runs, rebuilt when the folder changes, parallel decoding, a bad image named, and a
stored bundle that pickles without its pixels."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from kdtune.datasets import DatasetError, DeviceLoader, create_dataset
from kdtune.datasets.store import MappedImages, decode_images, open_or_build, scan_folder
from kdtune.search.run_kd_search import main

from . import fakedata

CLASSES = ["a", "b", "c"]


@pytest.fixture()
def folder(tmp_path):
    return fakedata.write_image_folder(tmp_path / "imgs", CLASSES, n_per_class=20, size=20)


def _stored(folder, store, **kw):
    return create_dataset("image_folder", str(folder), image_size=16, val_fraction=0.2, seed=1,
                          resident_max_mb=0, store_dir=str(store), **kw)


def test_store_and_resident_bundles_hold_the_same_data(folder, tmp_path):
    resident = create_dataset("image_folder", str(folder), image_size=16, val_fraction=0.2, seed=1)
    stored = _stored(folder, tmp_path / "store")
    assert not resident.train.stored and stored.train.stored and stored.test.stored
    assert isinstance(stored.train.images, MappedImages)
    assert stored.meta() == resident.meta()  # split record (val digest), sizes, mean/std, classes
    for name in ("train", "val", "test"):
        a, b = getattr(resident, name), getattr(stored, name)
        assert torch.equal(a.images, b.images.gather(np.arange(len(b))))
        assert torch.equal(a.labels, b.labels)
        # the loader's batches (order, crop/flip, normalisation, cache keys) are the same too
        kw = dict(batch_size=7, mean=resident.mean, std=resident.std, augment="crop_flip",
                  shuffle=True, seed=3, views=4)
        la, lb = DeviceLoader(a, **kw), DeviceLoader(b, **kw)
        la.set_epoch(2), lb.set_epoch(2)
        pairs = list(zip(la, lb))
        assert len(pairs) == len(la) > 0
        for (x1, y1, k1), (x2, y2, k2) in pairs:
            assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(k1, k2)


def test_decoding_matches_torchvision_imagefolder_resize(folder):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    ref = ImageFolder(str(folder), transform=transforms.Compose([transforms.Resize((12, 12)),
                                                                 transforms.PILToTensor()]))
    classes, samples = scan_folder(str(folder))
    assert classes == ref.classes and samples == ref.samples
    ours = decode_images([p for p, _ in samples], 12)
    assert np.array_equal(ours, np.stack([ref[i][0].numpy() for i in range(len(ref))]))
    assert np.array_equal(decode_images([p for p, _ in samples], 12, workers=2), ours)  # two shards


def test_store_is_reused_and_rebuilt_when_the_folder_changes(folder, tmp_path):
    store = tmp_path / "store"
    first, images, labels = open_or_build(str(folder), 16, root=store, workers=2)
    again, _, _ = open_or_build(str(folder), 16, root=store)
    assert first.built and not again.built and again.path == first.path
    assert len(images) == len(labels) == 60 and images.file_shape == (60, 3, 16, 16)
    assert os.path.getsize(first.path / "images.u8") == 60 * 3 * 16 * 16
    other_size, _, _ = open_or_build(str(folder), 8, root=store)
    assert other_size.built and other_size.path != first.path  # the size is part of the key
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "a" / "img_0.png")  # new content
    changed, images2, _ = open_or_build(str(folder), 16, root=store)
    assert changed.built and changed.path != first.path
    assert images2.gather([0]).sum() == 0
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no partial folders left


def test_stored_bundle_pickles_without_its_pixels(folder, tmp_path):
    small = pickle.dumps(_stored(folder, tmp_path / "s", decode_workers=1))
    big = create_dataset("image_folder", str(folder), image_size=64, val_fraction=0.2, seed=1,
                         resident_max_mb=0, store_dir=str(tmp_path / "s"))
    assert big.train.images.nbytes == 38 * 3 * 64 * 64 > 10 * len(pickle.dumps(big))
    assert abs(len(pickle.dumps(big)) - len(small)) < 64  # the same bytes whatever the image size
    back = pickle.loads(pickle.dumps(big))
    assert torch.equal(back.val.images.gather([0, 3]), big.val.images.gather([0, 3]))


def test_threshold_switches_by_decoded_size(folder, tmp_path):
    # 60 images x 3 x 16 x 16 = 46,080 bytes = 0.044 MiB
    below = _stored(folder, tmp_path / "s").train.stored
    above = create_dataset("image_folder", str(folder), image_size=16, resident_max_mb=0.05,
                           store_dir=str(tmp_path / "s")).train.stored
    assert below and not above


def test_corrupt_image_is_named(folder, tmp_path):
    bad = folder / "b" / "img_3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for kw in ({}, {"resident_max_mb": 0, "store_dir": str(tmp_path / "s"), "decode_workers": 2}):
        with pytest.raises(DatasetError, match=f"cannot decode image {bad}"):
            create_dataset("image_folder", str(folder), image_size=16, **kw)
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_cli_corrupt_image_is_one_line_exit_2(folder, tmp_path, capsys):
    bad = folder / "c" / "img_1.png"
    bad.write_bytes(b"garbage")
    code = main(["--dataset", "image_folder", "--data-dir", str(folder), "--resident-max-mb", "0",
                 "--store-dir", str(tmp_path / "s"), "--storage-path", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"cannot decode image {bad}" in err[0]
    assert not (tmp_path / "runs").exists()


def test_store_flags_refused_for_array_datasets(tmp_path, capsys):
    code = main(["--dataset", "digits", "--resident-max-mb", "0", "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--resident-max-mb applies to image_folder" in err
    with pytest.raises(ValueError, match="resident_max_mb applies only to"):
        create_dataset("digits", resident_max_mb=0)


@pytest.mark.ray
def test_ray_tasks_decode_the_same_store_and_name_a_bad_image(folder, tmp_path):
    import ray

    reference = decode_images([p for _, (p, _) in enumerate(scan_folder(str(folder))[1])], 16)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        info, images, _ = open_or_build(str(folder), 16, root=tmp_path / "s", workers=2)
        assert info.built and np.array_equal(images.gather(np.arange(len(images))).numpy(), reference)
        bad = folder / "a" / "img_5.png"
        bad.write_bytes(b"not an image")
        with pytest.raises(DatasetError, match=f"cannot decode image {bad}"):
            create_dataset("image_folder", str(folder), image_size=16, resident_max_mb=0,
                           store_dir=str(tmp_path / "s"), decode_workers=2)
    finally:
        ray.shutdown()
