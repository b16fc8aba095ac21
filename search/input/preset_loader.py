"""Presets: YAML files under search/presets/ that give every flag of run_kd_search.py a default.

A preset is data, never code: it is read with `yaml.safe_load` and checked key by key, so a
typo fails with the list of valid keys instead of being silently ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdtune.search.input import schema
from kdtune.search.input.errors import UsageError

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"  # search/presets/

# Top-level keys a preset may hold, and the keys allowed inside its sections.
SECTIONS: dict[str, set[str] | None] = {
    "dataset": None, "data_dir": None, "image_size": None, "val_fraction": None, "seed": None, "subset": None,
    "description": None, "train": None, "teacher": None, "teacher_checkpoint": None,
    "students": None, "methods": None, "space": None, "chain": None, "sweep": None,
    "imports": None, "max_params": None, "max_flops": None,
    "search": schema.section_keys("search") | {"augment_views"},
    "resources": schema.section_keys("resources"),
}


def list_presets() -> list[str]:
    """Names of the bundled presets (file stems)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """A bundled preset name ("digits") or a path to a user's YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"preset file {path} does not exist")
        return path
    bundled = PRESET_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise UsageError(f"unknown preset {name_or_path!r}; bundled presets: {', '.join(list_presets())} "
                         "(or pass a path to a .yaml file)")
    return bundled


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read and structurally check one preset; raises UsageError with the file name on any problem."""
    path = preset_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"preset {path} is not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"preset {path} must be a YAML mapping of settings, got {type(data).__name__}")
    for key, value in data.items():
        if key not in SECTIONS:
            raise UsageError(f"preset {path}: unknown key {key!r}; valid keys: {', '.join(sorted(SECTIONS))}")
        allowed = SECTIONS[key]
        if allowed is not None:
            if not isinstance(value, dict):
                raise UsageError(f"preset {path}: {key!r} must be a mapping")
            extra = set(value) - allowed
            if extra:
                raise UsageError(f"preset {path}: unknown {key} key(s) {sorted(extra)}; valid: {sorted(allowed)}")
    for key in ("train", "teacher", "space"):
        if key in data and not isinstance(data[key], dict):
            raise UsageError(f"preset {path}: {key!r} must be a mapping")
    return data
