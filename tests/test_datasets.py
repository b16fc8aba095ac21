"""Tests of datasets/: every registered dataset through its real decode path, and DeviceLoader.

Files are written by tests/fakedata.py in the real formats; only the real-MNIST test reads
real files, from $KDTUNE_MNIST_DIR or else the repository's ./data (the default data root), and it is
skipped where neither holds them. Run:
    python -m pytest -q tests/test_datasets.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests import fakedata
from kdtune.datasets import DatasetError, DeviceLoader, Split, create_dataset, list_datasets

REAL_MNIST = Path(os.environ.get("KDTUNE_MNIST_DIR") or Path(__file__).resolve().parents[1] / "data")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("data")
    fakedata.write_mnist(r, n_train=200, n_test=50, gz=True)
    fakedata.write_fashion_mnist(r, n_train=100, n_test=30, gz=False)
    fakedata.write_cifar10(r, n_per_batch=40, n_test=50)
    fakedata.write_cifar100(r, n_train=300, n_test=100)
    fakedata.write_image_folder(r / "flat", ["hp", "ssa"], n_per_class=10)
    for split, n in (("train", 8), ("test", 3)):
        fakedata.write_image_folder(r / "tt" / split, ["hp", "ssa"], n_per_class=n)
    return r


# (name, root sub-path, in_shape, n_train_full, n_test, first class name, augment)
CASES = [
    ("mnist", "", (1, 28, 28), 200, 50, "0 - zero", "none"),
    ("fashion_mnist", "", (1, 28, 28), 100, 30, "T-shirt/top", "none"),
    ("cifar10", "", (3, 32, 32), 200, 50, "airplane", "crop_flip"),
    ("cifar100", "", (3, 32, 32), 300, 100, "fine_00", "crop_flip"),
    ("image_folder", "flat", (3, 32, 32), 16, 4, "hp", "crop_flip"),
    ("image_folder", "tt", (3, 32, 32), 16, 6, "hp", "crop_flip"),
]


def _rows(split: Split) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) + bytes([int(y)]) for img, y in zip(split.images, split.labels)}


def test_registry_lists_all():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion_mnist", "image_folder", "mnist"]


@pytest.mark.parametrize("name,sub,shape,n_full,n_test,first,augment", CASES)
def test_dataset_loads(root, name, sub, shape, n_full, n_test, first, augment):
    b = create_dataset(name, str(root / sub), val_fraction=0.25, seed=3)
    assert b.in_shape == shape and b.augment == augment and b.class_names[0] == first
    for s in (b.train, b.val, b.test):
        assert s.images.dtype == torch.uint8 and s.labels.dtype == torch.int64
        assert s.images.is_contiguous() and s.images.shape[1:] == shape
        assert int(s.labels.max()) < b.num_classes
    assert len(b.train) + len(b.val) == n_full and len(b.test) == n_test
    assert len(b.val) == round(0.25 * n_full)
    assert not _rows(b.train) & _rows(b.val)  # fake images carry noise: rows are unique
    assert len(b.mean) == len(b.std) == shape[0]
    meta = json.loads(json.dumps(b.meta()))
    assert meta["sizes"] == {"train": len(b.train), "val": len(b.val), "test": n_test}
    assert meta["in_shape"] == list(shape) and meta["num_classes"] == b.num_classes


def test_seed_reproducible_and_changes_val_not_test(root):
    a = create_dataset("cifar10", str(root), seed=1)
    b = create_dataset("cifar10", str(root), seed=1)
    c = create_dataset("cifar10", str(root), seed=2)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)


def test_val_split_is_stratified(root):
    b = create_dataset("cifar10", str(root), val_fraction=0.2)
    counts = torch.bincount(b.val.labels, minlength=10)
    assert counts.min() >= 3 and counts.max() <= 5  # 20 per class in train, 20% held out


def test_digits_offline_default():
    b = create_dataset("digits", seed=0)
    assert b.in_shape == (1, 8, 8) and b.num_classes == 10 and b.augment == "none"
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.test) == round(0.2 * 1797)
    assert int(b.train.images.max()) == 255  # 16 -> 255
    # Computed stats: normalised train pixels have mean ~0, std ~1.
    x = (b.train.images.float() / 255 - b.mean[0]) / b.std[0]
    assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-2
    other = create_dataset("digits", seed=5)
    assert torch.equal(b.test.images, other.test.images)
    assert not torch.equal(b.val.labels, other.val.labels) or not torch.equal(b.val.images, other.val.images)


def test_subset_keeps_seeded_train_subset(root):
    full = create_dataset("mnist", str(root))
    a = create_dataset("mnist", str(root), subset=50, seed=4)
    b = create_dataset("mnist", str(root), subset=50, seed=4)
    assert len(a.train) == 50 and torch.equal(a.train.images, b.train.images)
    assert len(a.val) == len(full.val) and len(a.test) == len(full.test)
    assert _rows(a.train) <= _rows(create_dataset("mnist", str(root), seed=4).train)


def test_image_size(root):
    b = create_dataset("image_folder", str(root / "flat"), image_size=16)
    assert b.in_shape == (3, 16, 16)
    with pytest.raises(ValueError, match="image_size"):
        create_dataset("cifar10", str(root), image_size=64)


def test_missing_folder_message(tmp_path):
    with pytest.raises(DatasetError) as err:
        create_dataset("mnist", str(tmp_path / "x"))
    msg = str(err.value)
    assert f"mnist files not found in {tmp_path / 'x' / 'MNIST' / 'raw'}" in msg
    assert "--no-download" in msg and "--data-dir" in msg
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py \(missing: data_batch_1, "):
        create_dataset("cifar10", str(tmp_path))
    with pytest.raises(DatasetError, match="--data-dir"):
        create_dataset("image_folder", str(tmp_path / "none"))


@pytest.mark.parametrize("writer,name,bad", [
    (fakedata.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_3"),
    (fakedata.write_cifar100, "cifar100", "cifar-100-python/test"),
    (fakedata.write_mnist, "mnist", "MNIST/raw/train-images-idx3-ubyte.gz"),
])
def test_truncated_file_names_it(tmp_path, writer, name, bad):
    writer(tmp_path)
    path = tmp_path / bad
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=str(path)):
        create_dataset(name, str(tmp_path))


def test_truncated_raw_idx(tmp_path):
    raw = fakedata.write_mnist(tmp_path, gz=False)
    path = raw / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-5])  # labels now disagree with images
    with pytest.raises(DatasetError, match="truncated"):
        create_dataset("mnist", str(tmp_path))


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="known datasets: cifar10, cifar100, digits"):
        create_dataset("imagenet")
    for frac in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            create_dataset("digits", val_fraction=frac)


@pytest.mark.skipif(not (REAL_MNIST / "MNIST" / "raw").is_dir(), reason="no real MNIST here")
def test_real_mnist_from_read_only_gz():
    b = create_dataset("mnist", str(REAL_MNIST), val_fraction=0.1)
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    assert torch.bincount(b.test.labels).tolist()[:2] == [980, 1135]  # official test counts
    assert not any(p.suffix != ".gz" for p in (REAL_MNIST / "MNIST" / "raw").iterdir())


# ---------------------------------------------------------------- DeviceLoader
@pytest.fixture(scope="module")
def cifar(root):
    return create_dataset("cifar10", str(root), val_fraction=0.1)


def _loader(b, **kw):
    kw = {"batch_size": 32, "mean": b.mean, "std": b.std, **kw}
    return DeviceLoader(b.train, **kw)


def test_loader_shapes_and_normalisation():
    b = create_dataset("digits")
    loader = _loader(b, batch_size=100)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(b.train) // 100)
    x, y, idx = batches[0]
    assert x.dtype == torch.float32 and x.shape == (100, 1, 8, 8)
    assert y.dtype == torch.int64 and idx.dtype == torch.int64
    assert torch.equal(y, b.train.labels[idx])
    allx = torch.cat([bx for bx, _, _ in batches])
    assert abs(float(allx.mean())) < 1e-3 and abs(float(allx.std()) - 1) < 1e-2
    assert len(_loader(b, batch_size=100, drop_last=True)) == len(b.train) // 100


def test_loader_covers_every_index_once(cifar):
    loader = _loader(cifar, shuffle=True, augment="crop_flip", seed=7)
    idx = torch.cat([i for _, _, i in loader])
    assert sorted(idx.tolist()) == list(range(len(cifar.train)))
    assert idx.tolist() != list(range(len(cifar.train)))  # shuffled


def test_loader_deterministic_per_seed_epoch(cifar):
    def run(seed, epoch):
        loader = _loader(cifar, shuffle=True, augment="crop_flip", seed=seed)
        loader.set_epoch(epoch)
        return [t.clone() for batch in loader for t in batch]

    a, b = run(0, 2), run(0, 2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    c = run(0, 3)
    assert not torch.equal(a[2], c[2])  # different order in another epoch
    d = run(1, 2)
    assert not torch.equal(a[2], d[2])


def test_crop_flip_changes_pixels_keeps_shape(cifar):
    plain = next(iter(_loader(cifar, augment="none")))[0]
    aug = next(iter(_loader(cifar, augment="crop_flip")))[0]
    assert aug.shape == plain.shape and not torch.equal(aug, plain)
    # Zero padding shows up as the normalised value of a black pixel somewhere.
    black = torch.tensor([-m / s for m, s in zip(cifar.mean, cifar.std)]).view(1, 3, 1, 1)
    assert torch.isclose(aug, black.expand_as(aug), atol=1e-5).any()


def test_crop_flip_matches_reference():
    from kdtune.datasets.augment import apply_params, draw_params
    imgs = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = apply_params("crop_flip", imgs, draw_params("crop_flip", 16, gen))
    gen = torch.Generator().manual_seed(0)  # replay the draws to build the reference
    offs = torch.randint(0, 9, (16, 2), generator=gen)
    flips = torch.randint(0, 2, (16,), generator=gen)
    padded = torch.nn.functional.pad(imgs, (4, 4, 4, 4))
    for i in range(16):
        ref = padded[i, :, offs[i, 0]:offs[i, 0] + 8, offs[i, 1]:offs[i, 1] + 8]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)


def _reference_crop(img, oy, ox, flip, padding):
    """One image's crop written with slicing: the zero-padded image cut at (oy, ox), mirrored."""
    c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (padding,) * 4)
    crop = padded[:, oy:oy + h, ox:ox + w]
    return crop.flip(-1) if flip else crop


def test_a_kept_crop_source_serves_batches_of_any_size_and_shape():
    """The loader's CropSource is reused from batch to batch: a smaller last batch, a larger
    batch, another shape or padding give the same crops as slicing, and a crop already returned
    is not changed by the next batch's use of the buffer (the crops do not alias it)."""
    from kdtune.datasets.augment import CropSource, crop_flip_at
    gen = torch.Generator().manual_seed(1)
    source = CropSource()
    earlier = []
    for b, c, h, w, padding in ((16, 3, 8, 8, 4), (5, 3, 8, 8, 4), (24, 3, 8, 8, 4),
                                (7, 1, 6, 10, 2), (9, 3, 8, 8, 4)):
        imgs = torch.randint(1, 256, (b, c, h, w), dtype=torch.uint8, generator=gen)
        offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen)
        flips = torch.randint(0, 2, (b,), generator=gen).bool()
        for mirrored in (True, False):
            out = crop_flip_at(imgs, offsets, flips if mirrored else None, padding, source)
            ref = torch.stack([_reference_crop(imgs[i], *offsets[i].tolist(), mirrored and bool(flips[i]), padding)
                               for i in range(b)])
            assert out.shape == imgs.shape and torch.equal(out, ref)
            earlier.append((out, out.clone()))
    assert all(torch.equal(out, copy) for out, copy in earlier)


def test_loader_normalises_each_channel_with_its_mean_and_std(cifar):
    x, _, idx = next(iter(_loader(cifar)))
    u8 = cifar.train.images[idx].float()
    mean = torch.tensor(cifar.mean).view(1, 3, 1, 1)
    std = torch.tensor(cifar.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (u8 / 255 - mean) / std, rtol=0, atol=1e-5)


def _pixels_by_row(loader, epoch):
    loader.set_epoch(epoch)
    return {int(r): x for xb, _, ib in loader for x, r in zip(xb, ib % len(loader.labels))}


def test_augmentation_is_per_image_not_per_batch_position(cifar):
    """An image's view depends on (seed, epoch, image) only: not on the order or batch size."""
    a = _pixels_by_row(_loader(cifar, shuffle=True, augment="crop_flip", batch_size=7), 3)
    b = _pixels_by_row(_loader(cifar, shuffle=False, augment="crop_flip", batch_size=64), 3)
    assert a.keys() == b.keys() == set(range(len(cifar.train)))
    assert all(torch.equal(a[r], b[r]) for r in a)


def test_views_cycle_and_key_the_cache(cifar):
    n = len(cifar.train)
    loader = _loader(cifar, shuffle=True, augment="crop_flip", views=2)
    assert [loader.view(e) for e in (1, 2, 3, 4, 5)] == [1, 2, 1, 2, 1]
    epochs = {e: _pixels_by_row(loader, e) for e in (1, 2, 3)}
    assert all(torch.equal(epochs[1][r], epochs[3][r]) for r in range(n))  # view 1 again
    assert sum(not torch.equal(epochs[1][r], epochs[2][r]) for r in range(n)) > n // 2
    for epoch, view in ((1, 1), (2, 2), (3, 1)):
        loader.set_epoch(epoch)
        keys = torch.cat([k for _, _, k in loader])
        assert sorted(keys.tolist()) == list(range((view - 1) * n, view * n))
    # Without views the same seed shows view 1 in epoch 1: a views run only repeats it later.
    plain = _pixels_by_row(_loader(cifar, shuffle=True, augment="crop_flip"), 1)
    assert all(torch.equal(plain[r], epochs[1][r]) for r in range(n))
    # Nothing to cycle without augmentation: keys stay the rows.
    flat = _loader(cifar, augment="none", views=2)
    flat.set_epoch(2)
    assert torch.cat([k for _, _, k in flat]).tolist() == list(range(n))


def test_channels_last(cifar):
    x = next(iter(_loader(cifar, channels_last=True)))[0]
    assert x.is_contiguous(memory_format=torch.channels_last)
    ref = next(iter(_loader(cifar)))[0]
    assert torch.equal(x, ref)


def test_loader_rejects_bad_arguments(cifar):
    with pytest.raises(ValueError):
        _loader(cifar, batch_size=0)
    with pytest.raises(ValueError):
        _loader(cifar, augment="mixup")
    with pytest.raises(ValueError):
        _loader(cifar, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="views"):
        _loader(cifar, augment="crop_flip", views=0)


def test_cifar_pickle_naming_code_is_refused_not_run(tmp_path):
    """A hostile data_batch file must not execute anything (pickle.load would)."""
    import pickle

    root = tmp_path / "evil"
    fakedata.write_cifar10(root, n_per_batch=10, n_test=10)
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DatasetError, match="data_batch_3"):
        create_dataset("cifar10", str(root))
    assert not sentinel.exists()


def test_unpickling_a_bundle_imports_no_decoder_library(tmp_path):
    """A trial actor or cache task only unpickles the bundle: torchvision and scikit-learn
    (the decoders' libraries, ~2 s of a fresh worker's start on 2 cores) stay unimported."""
    import pickle
    import subprocess
    import sys

    (tmp_path / "bundle.pkl").write_bytes(pickle.dumps(create_dataset("digits", subset=64)))
    code = ("import pickle, sys; b = pickle.load(open(sys.argv[1], 'rb')); "
            "print(b.name, len(b.train.labels), 'torchvision' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bundle.pkl")], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.split() == ["digits", "64", "False", "False"]


def test_a_trial_process_imports_no_decoder_nor_ray_train(tmp_path):
    """What every trial actor does before its first batch: unpickle the bundle, import the
    trainables and check its config (DistillConfig checks the dataset name against the
    registry). None of it imports torchvision, scikit-learn or ray.train (~6 s of a fresh
    worker's start on 2 cores, measured 2026-12-07, paid by every trial and cache task)."""
    import pickle
    import subprocess
    import sys

    (tmp_path / "bundle.pkl").write_bytes(pickle.dumps(create_dataset("digits", subset=64)))
    code = ("import pickle, sys; b = pickle.load(open(sys.argv[1], 'rb')); "
            "import kdtune.trainables.distill, kdtune.trainables.teacher, kdtune.models; "
            "from kdtune.trainables.config import DistillConfig; "
            "c = DistillConfig.from_dict({'dataset': 'digits', 'model': 'mlp', 'epochs': 1}); "
            "print(c.dataset, *(m in sys.modules for m in ('torchvision', 'sklearn', 'ray.train')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bundle.pkl")], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.split() == ["digits", "False", "False", "False"]


def test_the_builtin_names_are_what_their_modules_register():
    """registry.BUILTINS lists each built-in module's datasets without importing it; importing
    the modules registers exactly those names."""
    import importlib

    from kdtune.datasets import registry

    for module, names in registry.BUILTINS.items():
        importlib.import_module(f"kdtune.datasets.{module}")
        assert set(names) <= set(registry._REGISTRY), module
    registered_by_builtins = {n for n, fn in registry._REGISTRY.items()
                              if fn.__module__.split(".")[-1] in registry.BUILTINS}
    assert registered_by_builtins == set().union(*registry.BUILTINS.values())
