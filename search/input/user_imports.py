"""--import MODULE_OR_FILE: user code (models, datasets, losses, families) loaded everywhere.

A user's module registers with kdtune's registries when it is imported, so it must be
imported in every process that looks a name up: the driver (before the flags are checked,
so `--students user_net` and `--methods user_loss` are valid), every Ray worker (a trial
builds its model and loss there; on a cluster, on other machines) and later readers of the
experiment (--resume, the analysis scripts, export), which find the list in manifest.json.

Workers import through Ray's `worker_process_setup_hook` (a runtime_env key: it runs in every
worker process of the job before any task or actor, on every node), given as this module's
dotted name with the list in an environment variable, because a hook closure would be
pickled with the driver's file paths resolved already and a module name travels as text.
A file path must be readable at the same path on every node (a shared filesystem; for a
cluster without one, install the plugin as a package and give its module name).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Iterable

from kdtune.search.input.errors import UsageError

ENV = "KDTUNE_IMPORTS"  # JSON list of what workers import
HOOK = "kdtune.search.input.user_imports.import_from_env"


def is_file(entry: str) -> bool:
    return entry.endswith(".py") or os.sep in entry or "/" in entry


def resolve(entries: Iterable[str]) -> list[str]:
    """Files as absolute paths (so a worker in another folder finds them); modules as given."""
    out = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            continue
        if is_file(entry):
            path = Path(entry).expanduser().resolve()
            if not path.is_file():
                raise UsageError(f"--import {entry}: no such file {path}")
            entry = str(path)
        if entry not in out:
            out.append(entry)
    return out


def load(entries: Iterable[str]) -> None:
    """Import every entry (idempotent); a failure is one UsageError line naming the entry."""
    for entry in resolve(entries):
        try:
            if is_file(entry):
                _load_file(Path(entry))
            else:
                if importlib.util.find_spec(entry) is None:
                    raise ModuleNotFoundError(f"no module named {entry!r}")
                importlib.import_module(entry)
        except UsageError:
            raise
        except Exception as exc:  # the user's code: any error it raises is reported, in one line
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UsageError(f"--import {entry}: {type(exc).__name__}: {first}") from None


def _load_file(path: Path) -> None:
    # Imported under its file stem, as `import my_plugin` would: objects it defines then pickle
    # by reference under the same name in the driver and in every worker.
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return
        raise UsageError(f"--import {path}: a module named {name!r} is already imported from "
                         f"{getattr(loaded, '__file__', None)}; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def runtime_env(entries: Iterable[str]) -> dict:
    """The job's runtime_env that imports `entries` in every Ray worker ({} without any)."""
    entries = resolve(entries)
    if not entries:
        return {}
    return {"env_vars": {ENV: json.dumps(entries)}, "worker_process_setup_hook": HOOK}


def import_from_env() -> None:
    """Ray's worker setup hook: import what the driver exported in KDTUNE_IMPORTS."""
    load(json.loads(os.environ.get(ENV) or "[]"))
