"""The installable package: one import name (kdtune), its folder mapping, no sys.path edits,
and the public Python API (registries, run_search's options, the experiment reader)."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("search", "trainables", "models", "datasets", "analysis")  # kdtune.<folder> -> <folder>/
SOURCE_DIRS = (*MAPPED, "kdtune", "benchmarks", "experiments", "tests")


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _listed(key: str) -> list[str]:
    return [line.strip() for line in _setup_cfg()["options"][key].strip().splitlines() if line.strip()]


def test_setup_cfg_lists_every_package_folder_under_kdtune():
    mapping = dict(line.replace(" ", "").split("=") for line in _listed("package_dir"))
    assert mapping == {"kdtune": "kdtune", **{f"kdtune.{d}": d for d in MAPPED}}
    on_disk = {"kdtune.search.presets"}  # YAML only: a namespace package shipped as package data
    for top in ("kdtune", *MAPPED):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            on_disk.add(".".join(("kdtune", *rel)) if top != "kdtune" else ".".join(rel))
    assert sorted(_listed("packages")) == sorted(on_disk)


def test_the_wheel_installs_one_top_level_name_and_the_presets(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "kdtune_results", "data", "tests", ".*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("kdtune-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kdtune", next(t for t in tops if t.endswith(".dist-info"))}
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert [zipfile.ZipFile(wheel).read(n).decode().split() for n in top_level] in ([], [["kdtune"]])
    assert "kdtune/search/presets/digits.yaml" in names
    assert "kdtune/search/run_kd_search.py" in names and "kdtune/datasets/registry.py" in names


def test_no_code_edits_sys_path_or_imports_a_bare_top_level_folder():
    bare = re.compile(rf"^\s*(from|import)\s+({'|'.join(MAPPED)})\b", re.M)
    offenders = []
    for top in SOURCE_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            text = path.read_text()
            if path.name == "test_package.py":
                continue
            if "sys.path.insert" in text or "sys.path.append" in text:
                offenders.append(f"{path.relative_to(ROOT)}: edits sys.path")
            for m in bare.finditer(text):
                offenders.append(f"{path.relative_to(ROOT)}: {m.group(0).strip()}")
    assert offenders == []


def test_import_kdtune_is_light_and_lists_its_api():
    code = ("import sys, kdtune; assert 'torch' not in sys.modules and 'ray' not in sys.modules; "
            "print(len(kdtune.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 20


def test_every_public_name_resolves():
    import kdtune

    for name in kdtune.__all__:
        assert getattr(kdtune, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kdtune.nope  # noqa: B018


def test_a_model_registered_through_the_api_is_built_by_name():
    import torch

    import kdtune

    @kdtune.register_model
    def api_test_net(num_classes: int, in_shape: tuple[int, int, int], width: int = 8) -> torch.nn.Module:
        c, h, w = in_shape
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, num_classes))

    assert "api_test_net" in kdtune.list_models()
    model = kdtune.create_model("api_test_net", num_classes=3, in_shape=(1, 4, 4), width=5)
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    assert kdtune.count_params(model) == 16 * 5 + 5 + 5 * 3 + 3


def test_run_search_options_are_the_cli_flags():
    from kdtune.api import to_argv

    import kdtune

    options = kdtune.search_options()
    assert {"dataset", "num_samples", "methods", "resume", "smoke_test", "final_seeds"} <= set(options)
    assert to_argv({"dataset": "mnist", "num_samples": 6, "methods": ["kd", "dkd"], "smoke_test": True,
                    "download": False, "name": None}) == [
        "--dataset", "mnist", "--num-samples", "6", "--methods", "kd,dkd", "--smoke-test", "--no-download"]
    with pytest.raises(TypeError, match="unknown option 'num_sample'.*num_samples"):
        to_argv({"num_sample": 6})
    with pytest.raises(TypeError, match="smoke_test takes True"):
        to_argv({"smoke_test": "yes"})


def test_run_search_refuses_bad_input_before_any_work(tmp_path):
    import kdtune

    with pytest.raises(kdtune.UsageError, match="num-samples"):
        kdtune.run_search(num_samples=0, storage_path=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_experiment_reader_gives_stages_winners_and_the_final_table(small_search):
    import kdtune

    exp = kdtune.open_experiment(small_search)
    assert {"teacher", "baseline", "distill", "final"} <= set(exp.stages)
    assert all(status == "done" for status in exp.stages.values())
    best = exp.best("distill")
    assert best["config"]["alpha"] > 0 and 0 < best["metrics"]["val_acc"] <= 1 and Path(best["best_checkpoint"]).is_file()
    table = exp.final_table()
    assert list(table["source_stage"]) == ["baseline", "distill", "twin"] and (table["seeds"] == 2).all()
    distilled = table[table["source_stage"] == "distill"].iloc[0]
    baseline = table[table["source_stage"] == "baseline"].iloc[0]
    assert distilled["kd_gain"] == pytest.approx(distilled["test_acc_mean"] - baseline["test_acc_mean"])
    twin = table[table["source_stage"] == "twin"].iloc[0]
    assert distilled["kd_gain_twin"] == pytest.approx(distilled["test_acc_mean"] - twin["test_acc_mean"])
    with pytest.raises(kdtune.ExperimentError, match="stage assistant of small is pending, not done"):
        exp.best("assistant")


# Floors of the house: a module imports only its own floor or the ones below.
FLOORS = {"models": 1, "datasets": 1, "trainables": 2, "search": 3, "analysis": 4, "kdtune": 5}


def _imports(path: Path) -> set[Path]:
    """Repository files that `path` imports (kdtune.X resolved through the package mapping)."""
    import ast

    rel = path.relative_to(ROOT)
    package = ["kdtune", *rel.parent.parts] if rel.parts[0] != "kdtune" else list(rel.parent.parts)
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [f"{module}.{a.name}" for a in node.names] + [module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "kdtune" or len(parts) == 1:  # `kdtune` itself: its lazy API, loaded by every kdtune.X
                continue
            folder = parts[1:2] if len(parts) > 1 and parts[1] in FLOORS else []
            where = ROOT.joinpath(*(folder or ["kdtune"]), *parts[1 + len(folder):])
            for candidate in (where.with_suffix(".py"), where / "__init__.py"):
                if candidate.is_file() and candidate != path:
                    targets.add(candidate)
                    break
    return targets


def test_no_import_runs_up_a_floor_and_no_two_files_import_each_other():
    graph = {p: _imports(p) for top in FLOORS for p in (ROOT / top).rglob("*.py")}
    floor = lambda p: FLOORS[p.relative_to(ROOT).parts[0]]  # noqa: E731
    upward = [f"{a.relative_to(ROOT)} -> {b.relative_to(ROOT)}" for a, outs in graph.items() for b in outs
              if floor(b) > floor(a)]
    mutual = sorted({" <-> ".join(sorted(str(x.relative_to(ROOT)) for x in (a, b)))
                     for a, outs in graph.items() for b in outs
                     if a in graph.get(b, ()) and "__init__.py" not in (a.name, b.name)})
    assert (upward, mutual) == ([], [])
