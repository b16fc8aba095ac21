"""trainables/logit_cache.py: the rows a trial gathers are the teacher's logits at its keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtune.trainables.logit_cache import LogitCache, as_cache


def _logits(views: int, n: int, classes: int, dtype=torch.bfloat16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(views * n, classes, generator=g) * 5).to(dtype)


def test_rows_are_the_view_major_rows_of_the_keys_in_their_dtype():
    flat, val = _logits(3, 50, 7), _logits(1, 20, 7)
    cache = LogitCache.from_tensors(flat, val, views=3)
    assert (cache.views, cache.rows_per_view, cache.num_classes, cache.dtype) == (3, 50, 7, "bfloat16")
    one_view = torch.tensor([100, 149, 103, 120])  # all in view 3
    mixed = torch.tensor([0, 149, 51, 7, 99, 100])  # views 1, 3, 2, 1, 2, 3
    for keys in (one_view, mixed):
        got = cache.rows(keys, "cpu")
        assert got.dtype == torch.bfloat16 and torch.equal(got, flat[keys])
    assert cache.val_logits("cpu").dtype == torch.float32
    assert torch.equal(cache.val_logits("cpu"), val.float())
    assert cache.nbytes() == (3 * 50 + 20) * 7 * 2  # bf16: 2 bytes a logit


def test_float32_logits_round_trip_exactly():
    flat = _logits(1, 30, 4, torch.float32)
    cache = as_cache(flat, None)  # a plain tensor of train rows, as scripts pass it
    assert cache.dtype == "float32" and cache.val is None
    keys = torch.randperm(30)[:8]
    assert torch.equal(cache.rows(keys, "cpu"), flat[keys])


def test_a_cache_for_another_split_is_refused():
    cache = LogitCache.from_tensors(_logits(2, 50, 7), _logits(1, 20, 7), views=2)
    cache.check(2, 50, 20, 7)  # the split it was built for
    with pytest.raises(ValueError, match="expected 3 augmented views x 50 rows"):
        cache.check(3, 50, 20, 7)
    with pytest.raises(ValueError, match="7 classes; the dataset has 10"):
        cache.check(2, 50, 20, 10)
    with pytest.raises(ValueError, match="20 validation rows"):
        cache.check(2, 50, 21, 7)
    with pytest.raises(ValueError, match="not 3 augmented views"):
        as_cache(_logits(2, 50, 7), 3)  # 100 rows cannot be 3 views


def test_views_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        LogitCache((np.zeros((4, 3), np.float32), np.zeros((5, 3), np.float32)), None, "float32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_gather_gives_the_host_gathers_rows(dtype):
    # The accelerator path (one copy of the views on the device, gathered there: no per-batch
    # host sync) returns exactly the rows of the host path, mixed views included.
    views, n, classes = 3, 50, 7
    logits = torch.randn(views * n, classes).to(dtype)
    cache = LogitCache.from_tensors(logits, None, views)
    gen = torch.Generator().manual_seed(0)
    for keys in (torch.randint(0, n, (16,), generator=gen) + n,  # one view, as an epoch shows
                 torch.randint(0, views * n, (40,), generator=gen)):  # views mixed
        host = cache.host_rows(keys, "cpu")
        dev = cache.device_rows(keys, "cpu")
        assert dev.dtype == host.dtype == dtype
        assert torch.equal(dev, host) and torch.equal(dev, logits[keys])
    assert len(cache._tables) == 1  # copied to the device once, reused by every batch


def _saved(tmp_path, cache: LogitCache):
    from kdtune.trainables.logit_cache import MappedLogitCache

    paths = []
    for i, array in enumerate((*cache.train, cache.val)):
        np.save(tmp_path / f"part{i}.npy", array)
        paths.append(str(tmp_path / f"part{i}.npy"))
    return MappedLogitCache(tuple(paths[:-1]), paths[-1], cache.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_mapped_cache_gives_the_resident_caches_rows(tmp_path, dtype):
    import pickle

    flat, val = _logits(3, 50, 7, dtype), _logits(1, 20, 7, dtype)
    resident = LogitCache.from_tensors(flat, val, views=3)
    files = _saved(tmp_path, resident)
    assert len(pickle.dumps(files)) < 1000  # what a trial is passed: paths, not logits
    mapped = as_cache(files, 3)
    assert all(isinstance(a, np.memmap) for a in mapped.train)
    for keys in (torch.tensor([100, 149, 103, 120]), torch.tensor([0, 149, 51, 7, 99, 100]), torch.arange(150)):
        assert torch.equal(mapped.rows(keys, "cpu"), resident.rows(keys, "cpu"))
    assert torch.equal(mapped.val_logits("cpu"), resident.val_logits("cpu"))
    assert mapped.nbytes() == resident.nbytes() and files.nbytes() > resident.nbytes()  # + .npy headers
    mapped.check(3, 50, 20, 7)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _epoch_over_a_mapped_cache(folder: str) -> tuple[float, float]:
    """In a fresh process set up as a trial is (its allocator keeps freed memory,
    trainables/allocator.py): RssAnon growth (MiB) over an epoch of gathers from a 64 MiB
    mapped cache, and what loading the same cache resident adds."""
    from pathlib import Path

    from kdtune.trainables.allocator import retain_freed_memory
    retain_freed_memory()
    n, classes = 64 * 2**20 // (100 * 2), 100  # bf16: 64 MiB of logits
    g = torch.Generator().manual_seed(1)
    resident = LogitCache.from_tensors(torch.randn(n, classes, generator=g).to(torch.bfloat16),
                                       torch.randn(10, classes, generator=g).to(torch.bfloat16))
    files = _saved(Path(folder), resident)
    del resident, g
    mapped = as_cache(files, None)
    before = _rss_kib("RssAnon")
    for keys in torch.randperm(n).split(4096):  # one epoch of shuffled batches
        mapped.rows(keys, "cpu")
    grown_mib = (_rss_kib("RssAnon") - before) / 1024
    before = _rss_kib("RssAnon")
    loaded = np.load(files.train[0])  # what a resident copy costs
    resident_mib = (_rss_kib("RssAnon") - before) / 1024
    del loaded
    return grown_mib, resident_mib


def test_gathering_a_whole_mapped_cache_keeps_the_trials_private_memory_flat(tmp_path):
    """An epoch's gathers over a 64 MiB mapped cache: the pages read are shared file pages of
    the page cache (RssFile), not the trial's own (RssAnon), which grows by less than a batch's
    worth of scratch; a resident copy of the same cache costs its full size in RssAnon.
    Measured in a fresh process: RSS in a test worker depends on what ran there before."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        grown_mib, resident_mib = pool.apply(_epoch_over_a_mapped_cache, (str(tmp_path),))
    assert grown_mib < 16, f"RssAnon grew {grown_mib:.1f} MiB over a 64 MiB mapped cache"
    assert resident_mib > 60


def test_a_student_trains_identically_on_the_mapped_and_the_resident_cache(tmp_path):
    from kdtune import datasets
    from kdtune.search.stages.teacher_cache import local_cache
    from kdtune.trainables import reporting
    from kdtune.trainables.distill import distill_student
    from kdtune.trainables.teacher import train_teacher

    data = datasets.create_dataset("digits", val_fraction=0.2, seed=0)
    base = {"dataset": "digits", "val_fraction": 0.2, "precision": "fp32", "num_threads": 1, "epochs": 1}
    with reporting.local_session(root=str(tmp_path / "teacher")) as rec:
        train_teacher({**base, "width": 32}, data=data)
    resident = local_cache(data, rec.checkpoints[-1], precision="fp32", threads=1)
    mapped = _saved(tmp_path, resident)
    student = {**base, "epochs": 2, "width": 16, "teacher_checkpoint": rec.checkpoints[-1], "alpha": 0.7}
    with reporting.local_session():
        a = distill_student(student, data=data, teacher_logits=resident)
        b = distill_student(student, data=data, teacher_logits=mapped)
    for key in ("train_loss", "val_loss", "val_acc", "agreement"):
        assert a[key] == b[key], key
