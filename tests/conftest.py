"""Shared pytest set-up: CPU only, quiet local Ray. kdtune is imported as the installed
package (`pip install -e .`); benchmarks/ and experiments/ import from the repository root,
which pytest puts on the path for the tests package (rootdir/tests/__init__.py)."""
import os

# Local test clusters need no token auth (every ray.init writes ~/.ray/auth_token otherwise).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# No network here: the Hugging Face hub (timm's pretrained weights) reads this when it is first
# imported, so set it before anything imports it; otherwise each miss waits through its retries (~45 s).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest  # noqa: E402  (after the environment above is set)

# Fixtures that start Ray: a test using one (directly or through another fixture) is a `ray`
# test even without the marker written on it, so the fast tier never starts Ray by accident.
RAY_FIXTURES = {"small_search", "search_only", "ray_session", "local_ray", "ray_local"}


# Tests reading the one session-wide finished search run on one pytest-xdist worker (make
# test runs `-n 2 --dist loadgroup`), so that search is built once, not once per worker.
SHARED_RUN_FIXTURES = {"small_search", "search_only"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Every `ray` test is also `slow`: `-m "not slow"` is the fast tier (setup.cfg)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if RAY_FIXTURES & names:
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)
        if SHARED_RUN_FIXTURES & names:
            item.add_marker(pytest.mark.xdist_group("small_search"))


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_ray(request, monkeypatch):
    """A test not marked `ray` that starts Ray in-process fails, naming itself: the fast tier
    (`-m "not slow"`) must never wait for a Ray start-up. Tests that start Ray in a subprocess
    (the CLI) carry the marker by hand."""
    if request.node.get_closest_marker("ray") is None:
        import ray

        def refuse(*args, **kwargs):
            pytest.fail(f"{request.node.nodeid} starts Ray (ray.init) but is not marked `ray`: mark it "
                        "@pytest.mark.ray or use one of conftest.RAY_FIXTURES", pytrace=False)

        monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture(scope="module")
def ray_local():
    """A private 2-CPU local Ray for one test module (a `RAY_FIXTURES` member: its tests are Ray tests)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def bundle():
    """The offline digits set, decoded once for every test that trains on it."""
    from kdtune import datasets

    return datasets.create_dataset("digits", val_fraction=0.1, seed=0)


@pytest.fixture(scope="session")
def small_search(tmp_path_factory):
    """One small finished search on digits (real CLI, in-process), shared by the end-to-end and
    analysis tests: teacher 3 epochs, 3 baselines, 6 distillation trials under ASHA (grace 1,
    rf 3, 4 epochs at most, so it has rungs to cut at), per-layer gradient norms on (for
    learning_curves' second plot), every trial logged to MLflow (`--tracker mlflow`, a SQLite store
    in <experiment>/mlflow.db), and the final stage: the best baseline and the best distilled
    config retrained over 2 seeds. Run through the Python API (kdtune.run_search, which builds the
    CLI's command line), so every test of it also tests the API. Tests read the budget back from
    manifest.json's spec; what the run printed on stdout (captured: not a terminal) is in
    <experiment>.console.txt."""
    import contextlib

    import yaml

    import kdtune
    from kdtune.search.input.preset_loader import PRESET_DIR

    tmp = tmp_path_factory.mktemp("small_search")
    preset = yaml.safe_load((PRESET_DIR / "digits.yaml").read_text())
    preset["train"]["track_grad_norms"] = True
    (tmp / "digits_grads.yaml").write_text(yaml.safe_dump(preset))
    console = tmp / "small.console.txt"
    with open(console, "w", buffering=1) as out, contextlib.redirect_stdout(out):  # a file: no terminal
        exp = kdtune.run_search(num_samples=6, baseline_samples=3, max_epochs=4, grace_period=1,
                                reduction_factor=3, teacher_epochs=3, max_concurrent=2, width="16:64", depth="1:2",
                                preset=str(tmp / "digits_grads.yaml"), final_seeds=2, final_top_k=1,
                                storage_path=str(tmp), name="small", tracker="mlflow")
    assert exp.path == (tmp / "small").resolve() and exp.stages["final"] == "done", console.read_text()[-3000:]
    return tmp / "small"


@pytest.fixture(scope="session")
def search_only(small_search, tmp_path_factory):
    """small_search as a run without a final stage (--final-seeds 0) would have left it."""
    import json
    import shutil

    copy = tmp_path_factory.mktemp("search_only") / small_search.name
    shutil.copytree(small_search, copy, ignore=shutil.ignore_patterns("final", "analysis*", "export"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["stages"]["final"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy
