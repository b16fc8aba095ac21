"""Presets: YAML files under search/presets/ that give every flag of run_kd_search.py a default.

A preset is data, never code: it is read with `yaml.safe_load` and checked key by key, so a
typo fails with the list of valid keys instead of being silently ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdtune.search.input import options
from kdtune.search.input.errors import UsageError
from kdtune.search.input.schema import DICT_SECTIONS

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"  # search/presets/

# Top-level keys that are not run options: a comment for people, the free-form sections (their
# keys are TrainConfig / TeacherConfig / search-space keys, checked by those) and a grid sweep.
STRUCTURE: dict[str, set[str] | None] = {"description": None, **{k: None for k in DICT_SECTIONS}, "sweep": None}


def sections() -> dict[str, set[str] | None]:
    """Top-level keys a preset may hold (None: any value) and the keys allowed inside the
    sections the option table owns (search, resources): the structure above plus every
    declared option's preset key. Read from the table when a preset is loaded."""
    out = dict(STRUCTURE)
    for o in options.OPTIONS:
        head, *rest = o.preset_parts or (None,)
        if head is None or head in DICT_SECTIONS:
            continue
        if not rest:
            out[head] = None
        else:
            out.setdefault(head, set()).add(rest[0])
    return out


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
    known = sections()
    for key, value in data.items():
        if key not in known:
            raise UsageError(f"preset {path}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}")
        allowed = known[key]
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
