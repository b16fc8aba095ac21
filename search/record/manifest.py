"""manifest.json: the experiment's own record, beside the Tune stage folders.

It holds the resolved spec (so `--resume` re-runs exactly the same search), the dataset
metadata, the git revision, and for every finished stage its best trial and checkpoint
(so later stages and analysis/ load the teacher from here, never re-train it).
Writes are atomic (temp file + rename): an interrupt never leaves half a manifest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kdtune.search.record.stage_names import STAGES, TEACHER

MANIFEST_NAME = "manifest.json"
FORMAT = "kdtune-experiment"
FORMAT_VERSION = 1


def git_revision() -> str:
    """The code's git SHA (with '-dirty' when uncommitted changes exist), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]  # search/record/ -> the repository
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Manifest:
    """Read/modify/write access to one experiment's manifest.json."""

    def __init__(self, experiment_dir: Path, data: dict[str, Any]):
        self.dir = Path(experiment_dir)
        self.data = data

    @property
    def path(self) -> Path:
        return self.dir / MANIFEST_NAME

    @classmethod
    def create(cls, experiment_dir: Path, spec: dict[str, Any], dataset_meta: dict[str, Any],
               stages: tuple[str, ...] = STAGES) -> "Manifest":
        data = {
            "format": FORMAT, "version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_revision": git_revision(),
            "command": sys.argv,
            "spec": spec,
            "dataset": dataset_meta,
            "stages": {name: {"status": "pending"} for name in stages},  # the stages this run plans
        }
        manifest = cls(experiment_dir, data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, experiment_dir: Path) -> "Manifest":
        """Load and check an existing manifest; ValueError when the folder holds no kdtune run."""
        path = Path(experiment_dir) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{experiment_dir} holds no kdtune run (no {MANIFEST_NAME})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a kdtune manifest")
        return cls(Path(experiment_dir), data)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path)

    # ---- stages ------------------------------------------------------------------------------
    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def is_done(self, name: str) -> bool:
        return self.stage(name).get("status") == "done"

    def mark(self, name: str, status: str, **info: Any) -> None:
        """Set a stage's status. "running" stamps `started_at` (Unix seconds); "done" after it
        records `wall_s`, the seconds of the attempt that finished the stage (an interrupted
        attempt's time is not added: a resumed stage reports its last attempt only)."""
        now, previous = time.time(), self.stage(name)
        timing: dict[str, float] = {}
        if status == "running":
            timing["started_at"] = now
        elif status == "done" and previous.get("status") == "running" and "started_at" in previous:
            timing["wall_s"] = round(now - previous["started_at"], 3)
        self.data["stages"][name] = {**previous, **info, **timing, "status": status,
                                     "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.save()

    def teacher_checkpoint(self) -> str | None:
        return self.stage(TEACHER).get("best_checkpoint")


def latest_experiment(storage_path: Path) -> Path | None:
    """The most recently modified experiment under storage_path."""
    candidates = list(Path(storage_path).glob(f"*/{MANIFEST_NAME}"))
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parent
