"""analysis/export.py on the shared small search: the files are read back with onnxruntime,
torch.export.load and torch.jit.load and compared with the checkpoint's own logits, computed
here from the model card's normalisation (so a wrong card fails too)."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from kdtune import datasets
from kdtune import models
from kdtune.analysis import export, exporters
from kdtune.trainables.checkpoint import load_model


def _test_split(exp_dir: Path):
    spec = json.loads((exp_dir / "manifest.json").read_text())["spec"]
    return datasets.create_dataset(spec["dataset"], spec.get("data_dir"), val_fraction=spec["val_fraction"],
                                   seed=spec["seed"], subset=spec.get("subset")).test


@pytest.fixture(scope="module")
def exported(search_only, tmp_path_factory):
    """Exported through the Python API (Experiment.export runs analysis/export.py's main)."""
    import kdtune

    out = tmp_path_factory.mktemp("export") / "student"
    assert kdtune.open_experiment(search_only).export(out=out, repeats=3) == out
    return out, json.loads((out / "model_card.json").read_text())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exported_files_reproduce_the_checkpoint_on_the_test_split(small_search, exported):
    out, card = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([*exporters.FILES.values(), "model_card.json"])
    split = _test_split(small_search)
    norm = card["input"]["normalisation"]
    mean = np.array(norm["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(norm["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = ((split.images.numpy().astype(np.float32) / 255 - mean) / std).astype(np.float32)
    model, _payload = load_model(card["checkpoint"])
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == card["input"]["name"] and isinstance(inp.shape[0], str)  # a symbolic batch dim
    outputs = {"onnx": session.run(None, {inp.name: x})[0],  # the whole split: another batch size
               "torchscript": torch.jit.load(str(out / "model.torchscript.pt"))(torch.from_numpy(x)).detach().numpy(),
               "torch_export": torch.export.load(out / "model.pt2").module()(torch.from_numpy(x)).detach().numpy()}
    one = session.run(None, {inp.name: x[:1]})[0]
    np.testing.assert_allclose(one, ref[:1], atol=1e-4, rtol=1e-4)
    for fmt, logits in outputs.items():
        assert logits.shape == (len(split), len(card["classes"])), fmt
        np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4, err_msg=fmt)
        assert (logits.argmax(1) == ref.argmax(1)).all(), fmt
        check = card["verification"][fmt]
        assert check["passed"] and check["top1_agreement"] == 1.0
        assert check["max_abs_diff"] == pytest.approx(np.abs(logits - ref).max(), abs=2e-6)

    labels = split.labels.numpy()
    assert card["accuracy"]["test_acc"] == pytest.approx((ref.argmax(1) == labels).mean())
    assert card["verification"]["images"] == len(labels)


def test_model_card_describes_the_searched_student(search_only, exported):
    _out, card = exported
    manifest = json.loads((search_only / "manifest.json").read_text())
    winner = manifest["stages"]["distill"]
    model, payload = load_model(card["checkpoint"])
    assert card["stage"] == "distill" and card["rank"] == 1
    assert card["accuracy"]["val_acc"] == pytest.approx(winner["metrics"]["val_acc"])  # rank 1 = the stage's best
    assert card["model"]["params"] == models.count_params(model)
    assert card["model"]["flops_per_image"] == payload["metrics"]["flops"]
    assert card["classes"] == manifest["dataset"]["class_names"]
    # The checkpoint's split record rides along: a search adopting the file checks it for a leak.
    assert card["split"] == payload["split"] and card["split"]["val_indices_sha256"]
    assert card["input"]["shape"] == ["batch", *manifest["dataset"]["in_shape"]]
    assert card["distillation"]["alpha"] == payload["config"]["alpha"]
    assert card["distillation"]["temperature"] == payload["config"]["temperature"]
    assert card["teacher"]["params"] == manifest["stages"]["teacher"]["metrics"]["params"]
    assert [s["trial_id"] for s in card["accuracy"]["seeds"]] == [card["trial_id"]]
    assert card["git_revision"]["search"] == manifest["git_revision"]
    for fmt in exporters.FILES:
        lat = card["latency"][fmt]
        assert 0 < lat["batch_1_fastest_ms"] <= lat["batch_1_ms"] and 0 < lat["batch_64_fastest_ms"], fmt


def test_bad_requests_exit_2_with_one_line_and_write_nothing(search_only, tmp_path, capsys):
    for argv, message in ((["--stage", "final"], "no final stage"), (["--rank", "999"], "has only")):
        with pytest.raises(SystemExit) as exit_info:
            export.main([str(search_only), "--out", str(tmp_path / "x"), *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_final_stage_is_the_default_when_the_manifest_has_one(search_only, tmp_path):
    """A copy of the search whose distill folder is recorded as a `final` stage."""
    exp = tmp_path / "with_final"
    shutil.copytree(search_only, exp, ignore=shutil.ignore_patterns("analysis", "export"))
    (exp / "distill").rename(exp / "final")
    manifest = json.loads((exp / "manifest.json").read_text())
    manifest["stages"]["final"] = {"status": "done", "path": str(exp / "final")}
    del manifest["stages"]["distill"]
    (exp / "manifest.json").write_text(json.dumps(manifest))
    assert export.main([str(exp), "--repeats", "1"]) == 0
    card = json.loads((exp / "export" / "final-rank1" / "model_card.json").read_text())
    assert card["stage"] == "final" and Path(card["checkpoint"]).is_relative_to(exp / "final")
    assert not (exp / "export" / "final-rank1-unverified").exists()


def test_configs_differing_only_in_seed_rank_by_their_mean():
    """Config A's seeds score 0.90 and 0.80 (mean 0.85), config B's one seed 0.88: B ranks
    first, and A's export is its best-val seed."""
    from kdtune.search.record.trials import from_frame

    trials = [("a0", {"lr": 0.1, "seed": 0}, 0.90), ("a1", {"lr": 0.1, "seed": 1}, 0.80),
              ("b0", {"lr": 0.2, "seed": 0}, 0.88), ("c0", {"lr": 0.3, "seed": 0}, float("nan"))]
    # The trials as the record layer reads them (Experiment.records: val_acc None without a finite one).
    records = [from_frame(t, c, pd.DataFrame({"val_acc": [v], "epoch": [1]})) for t, c, v in trials]
    exp = SimpleNamespace(manifest={"stages": {"final": {}}}, records=lambda stage: records)
    ranked = export.rank_configs(exp, "final")
    assert [[t["trial_id"] for t in group] for group in ranked] == [["b0"], ["a0", "a1"]]
    assert [t["seed"] for t in ranked[1]] == [0, 1]


def test_compare_states_its_tolerance():
    ref = np.array([[2.0, 1.0, 0.0], [1.0, 1.00001, 0.0]])
    close = exporters.compare(ref + 5e-5, ref)
    assert close.passed and close.near_ties == 1 and close.max_abs_diff == pytest.approx(5e-5)
    flipped = ref.copy()
    flipped[1] = [1.00002, 1.0, 0.0]  # a near-tie flips within tolerance: counted, not failed
    assert exporters.compare(flipped, ref).passed and exporters.compare(flipped, ref).top1_agreement == 0.5
    wrong = ref.copy()
    wrong[0] = [0.0, 1.0, 2.0]
    result = exporters.compare(wrong, ref)
    assert not result.passed and result.disagreements == 1 and not result.within_tolerance


def test_readme_lines_run_the_export_with_numpy_and_onnxruntime_only(small_search, exported):
    """README's deployment snippet, run as written in a fresh interpreter where kdtune's
    packages and torch cannot be imported; it must print the checkpoint's predictions."""
    import re
    import subprocess
    import sys

    out, card = exported
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "onnxruntime as ort" in b]
    split = _test_split(small_search)
    np.save(out.parent / "images.npy", split.images[:5].numpy())
    blocked = ["torch", "search", "trainables", "models", "datasets", "analysis"]
    prelude = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"  # None: ImportError
               f"import numpy as np; images = np.load({str(out.parent / 'images.npy')!r})\n")
    run = subprocess.run([sys.executable, "-I", "-c", prelude + snippet], cwd=out, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    model, _payload = load_model(card["checkpoint"])
    x = datasets.DeviceLoader(split, batch_size=5, mean=card["input"]["normalisation"]["mean"],
                              std=card["input"]["normalisation"]["std"])
    with torch.no_grad():
        expected = model.eval()(next(iter(x))[0]).argmax(1).tolist()
    assert run.stdout.strip() == str([card["classes"][i] for i in expected])
