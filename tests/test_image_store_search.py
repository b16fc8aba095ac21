"""An image-folder search on the on-disk store (a low --resident-max-mb forces it), interrupted
after its teacher and resumed: every stage finishes, the teacher is not retrained, the store
is decoded once and reused by the resumed run, and checkpoints record the split."""
from __future__ import annotations

import json
import signal

import pytest
import torch

from . import fakedata
from .test_reliability import Run, _assert_all_done, _budget, _cli, _manifest, _resume, _stage_status

pytestmark = pytest.mark.timeout(900)


@pytest.mark.ray
def test_store_backed_search_interrupted_and_resumed(tmp_path):
    folder = fakedata.write_image_folder(tmp_path / "imgs", ["a", "b", "c"], n_per_class=24, size=12)
    store = tmp_path / "store"
    exp = tmp_path / "st"
    args = _cli(tmp_path, "st", "--dataset", "image_folder", "--data-dir", str(folder), "--image-size", "8",
                "--resident-max-mb", "0", "--store-dir", str(store), "--decode-workers", "2",
                "--teacher", "mlp", "--teacher-epochs", "2", "--students", "mlp", "--depth", "1",
                "--cpus-per-trial", "1", *_budget(samples=2, epochs=2))
    run = Run(args, tmp_path / "st.log")
    try:
        run.wait_for(lambda: _stage_status(exp, "teacher") == "done", 400, "the teacher stage")
        run.proc.send_signal(signal.SIGINT)
        code = run.finish(180)
        out = run.output()
    finally:
        run.stop()
    assert code in (0, 130), out[-3000:]  # 0 only if the rest finished before the signal landed
    stores = list(store.iterdir())
    assert len(stores) == 1 and (stores[0] / "header.json").is_file()
    header_mtime = (stores[0] / "header.json").stat().st_mtime_ns

    out = _resume(tmp_path, "st", tmp_path / "st-resume.log", timeout=600)
    manifest = _assert_all_done(exp, teacher=1, baseline=1, distill=2)
    assert [p.name for p in store.iterdir()] == [stores[0].name]  # reused, not decoded again
    assert (stores[0] / "header.json").stat().st_mtime_ns == header_mtime
    assert manifest["dataset"]["sizes"]["train"] + manifest["dataset"]["sizes"]["val"] == 58
    best = manifest["stages"]["distill"]["best_checkpoint"]
    best = best if best.endswith(".pt") else f"{best}/checkpoint.pt"
    payload = torch.load(best, map_location="cpu", weights_only=True)
    assert payload["split"]["dataset"] == "image_folder"
    assert payload["split"]["val_indices_sha256"] == manifest["dataset"]["split"]["val_indices_sha256"]
    assert json.loads((stores[0] / "header.json").read_text())["num_images"] == 72
