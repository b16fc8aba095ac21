"""How some options' values are merged and stored: the `merge`, `write` and `to_spec` hooks the
option table (this package) names. Pure functions of the values; registry lookups only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def as_tuple(value: Any) -> tuple:
    """A preset's list or the flag's comma list as a tuple (a lone name is a 1-tuple)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def as_tuple_or_none(value: Any) -> tuple | None:
    return as_tuple(value) or None


def resolved_path(value: Any) -> str | None:
    """An absolute path: the manifest records it, and a resume may start in another folder."""
    return str(Path(value).expanduser().resolve()) if value else None


def appended(preset_value: Any, flag_value: Any) -> list:
    """A repeatable flag adds to the preset's list (--import beside a preset's imports:)."""
    return [*(preset_value or []), *(flag_value or [])]


def per_family(preset_value: Any, flag_value: Any) -> Any:
    """--depth mlp=1:3 replaces only the families it names of a per-family preset setting."""
    if isinstance(flag_value, Mapping) and isinstance(preset_value, Mapping):
        return {**preset_value, **flag_value}
    return flag_value


def write_augment(section: dict, value: tuple[str, int | None]) -> None:
    """NAME[:PIXELS] fills the section's augment and augment_pixels (None: the augmentation's default)."""
    section["augment"], section["augment_pixels"] = value


def write_teacher_model(section: dict, model: str) -> None:
    """--teacher: a different architecture drops the preset's sizes (they belonged to the old
    one) and keeps the options (freeze_backbone, dropout, ...) that the new model takes."""
    if model != section.get("model"):
        from kdtune.models.registry import model_kwargs

        try:
            accepted = set(model_kwargs(model))
        except ValueError:  # an unknown name: validation reports it
            accepted = set()
        kwargs = {k: v for k, v in section.get("model_kwargs", {}).items() if k in accepted}
        for key in ("depth", "width", "model_kwargs"):
            section.pop(key, None)
        section.update(model_kwargs=kwargs)
    section["model"] = model
