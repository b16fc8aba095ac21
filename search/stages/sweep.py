"""Grid sweeps: the seeds' hand-run experiments (depth x width x residual, ...) as one stage.

A preset's `sweep:` section names independent axes (`grid`, Cartesian product, each value is
one config value) and joint settings (`variants`, each a dict of config keys that belong
together, e.g. `{model: mlp, depth: 2, width: 80}` vs `{model: cifar_resnet, depth: 20}`).
Every combination is one Tune trial, run to full length (no early stopping: these are
comparisons, and ASHA would cut the very curves the experiment is about).

Tune grids one key at a time, so a variant travels as the reserved key `variant` and
`sweep_trial` merges it into the config before the trainable parses it (`model_kwargs`
merged key by key, so a grid over `model_kwargs.residual` composes with a variant's `layers`).
"""
from __future__ import annotations

from typing import Any, Mapping

VARIANT = "variant"


def merge(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """config with overrides on top; model_kwargs dicts merged rather than replaced."""
    out = dict(config)
    for key, value in overrides.items():
        if key == "model_kwargs" and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def sweep_trial(config: dict, data=None, teacher_logits=None):
    """The trainable of a sweep: one grid point = base config + its variant."""
    from kdtune.trainables.distill import distill_student

    variant = config.get(VARIANT) or {}
    base = {k: v for k, v in config.items() if k != VARIANT}
    return distill_student(merge(base, variant), data=data, teacher_logits=teacher_logits)


def _expand_kwargs_grid(grid: Mapping[str, Any]) -> dict[str, list]:
    """`model_kwargs: {residual: [true, false]}` -> `model_kwargs: [{residual: true}, {residual: false}]`."""
    out = {k: list(v) for k, v in grid.items() if k != "model_kwargs"}
    kwargs = grid.get("model_kwargs")
    if isinstance(kwargs, Mapping):
        combos: list[dict] = [{}]
        for name, values in kwargs.items():
            combos = [{**c, name: v} for c in combos for v in values]
        out["model_kwargs"] = combos
    elif kwargs is not None:
        out["model_kwargs"] = list(kwargs)
    return out


def sweep_points(sweep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination as one override dict (for validation and counting)."""
    points: list[dict[str, Any]] = [{}]
    for key, values in _expand_kwargs_grid(sweep.get("grid", {})).items():
        points = [merge(p, {key: v}) for p in points for v in values]
    variants = list(sweep.get("variants", [])) or [{}]
    return [merge(p, v) for p in points for v in variants]


def param_space(sweep: Mapping[str, Any], constants: Mapping[str, Any]) -> dict[str, Any]:
    """Tune param_space: constants, one grid_search per axis, and the variants."""
    from ray import tune

    space: dict[str, Any] = dict(constants)
    for key, values in _expand_kwargs_grid(sweep.get("grid", {})).items():
        space[key] = tune.grid_search(values)
    if sweep.get("variants"):
        space[VARIANT] = tune.grid_search(list(sweep["variants"]))
    return space


def needs_teacher(sweep: Mapping[str, Any] | None, constants: Mapping[str, Any]) -> bool:
    """A search always distils; a sweep needs a teacher only when a point has alpha > 0."""
    if not sweep:
        return True
    return any(merge(constants, p).get("alpha", 0.0) > 0 for p in sweep_points(sweep))


def check_sweep(sweep: Mapping[str, Any]) -> None:
    if not isinstance(sweep, Mapping) or not (sweep.get("grid") or sweep.get("variants")):
        raise ValueError("a sweep needs `grid` (axes: key -> list of values) and/or `variants` (list of dicts)")
    for key, values in dict(sweep.get("grid", {})).items():
        if key != "model_kwargs" and not isinstance(values, list):
            raise ValueError(f"sweep grid {key!r}: expected a list of values, got {values!r}")
