"""The suite's own machinery, run on tiny generated test folders with this suite's conftest:
tests sharing the finished search run on one xdist worker (built once), and a fast-tier test
that starts Ray fails naming itself."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(folder)],
                          cwd=folder, capture_output=True, text=True, timeout=300)


def test_tests_of_the_shared_search_run_on_one_worker(tmp_path):
    """conftest marks every test using small_search / search_only with one xdist_group; under
    `-n 2 --dist loadgroup` (make test) the session fixture must then be built once."""
    folder = tmp_path / "suite"
    folder.mkdir()
    conftest = CONFTEST.read_text()
    # The real fixture runs a search; this stand-in only records which worker built it.
    conftest = conftest.replace("def small_search(tmp_path_factory):", "def _real_small_search(tmp_path_factory):")
    conftest += ('\n\n@pytest.fixture(scope="session")\ndef small_search(tmp_path_factory):\n'
                 f'    with open({str(tmp_path / "built.txt")!r}, "a") as f:\n'
                 '        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")\n'
                 '    return tmp_path_factory.mktemp("s")\n')
    (folder / "conftest.py").write_text(conftest)
    for name in ("a", "b", "c"):
        (folder / f"test_{name}.py").write_text(
            "import time\n\n"
            "def test_uses_it(small_search):\n    time.sleep(0.3)\n\n"
            "def test_plain_one():\n    time.sleep(0.3)\n\n"
            "def test_plain_two():\n    time.sleep(0.3)\n")
    result = _pytest(folder, "-n", "2", "--dist", "loadgroup", "-m", "")
    assert result.returncode == 0, result.stdout[-2000:]
    assert len((tmp_path / "built.txt").read_text().split()) == 1  # one worker built it


def test_a_fast_tier_test_that_starts_ray_fails_naming_itself(tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    shutil.copy(CONFTEST, folder / "conftest.py")
    (folder / "test_sneaky.py").write_text(
        "import ray\n\ndef test_sneaky():\n    ray.init(num_cpus=1)\n")
    result = _pytest(folder, "-m", "not slow")
    assert result.returncode == 1
    assert "test_sneaky.py::test_sneaky starts Ray (ray.init) but is not marked `ray`" in result.stdout
