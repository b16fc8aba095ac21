"""kdtune: a Ray Tune + Optuna search for the smallest knowledge-distilled student.

The public Python API. Everything here is importable as `kdtune.<name>`; it is loaded on first
use (PEP 562), so `import kdtune` stays light and `import kdtune.models` does not pull in Ray.

    import kdtune

    @kdtune.register_model                       # a model create_model builds by name
    def tiny_net(num_classes, in_shape, width=32): ...

    exp = kdtune.run_search(dataset="digits", num_samples=6, max_epochs=4)   # the CLI's options
    exp.best("distill")                           # the best distilled config and its metrics
    exp.final_table()                             # the final stage: test mean ± sd per config
    exp.export(rank=1)                            # ONNX / torch.export / TorchScript + model card
    kdtune.open_experiment("kdtune_results/<name>")   # the same reader for an earlier run

The installed distribution has one top-level import name, `kdtune`; its subpackages are the
repository's folders (kdtune.search is search/, kdtune.models is models/, ...).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models: every registered architecture is a teacher or a student by name
    "register_model": "kdtune.models.registry",
    "create_model": "kdtune.models.registry",
    "list_models": "kdtune.models.registry",
    "count_params": "kdtune.models.registry",
    "flops_per_image": "kdtune.models.registry",
    "register_family": "kdtune.models.families",
    "list_families": "kdtune.models.families",
    "SizeDim": "kdtune.models.families",
    # datasets: decoded once into a DatasetBundle
    "register_dataset": "kdtune.datasets.registry",
    "create_dataset": "kdtune.datasets.registry",
    "list_datasets": "kdtune.datasets.registry",
    "DatasetBundle": "kdtune.datasets.bundle",
    "Split": "kdtune.datasets.bundle",
    # KD methods (losses), optimisers and learning-rate schedules
    "register_loss": "kdtune.trainables.losses.registry",
    "create_loss": "kdtune.trainables.losses.registry",
    "list_losses": "kdtune.trainables.losses.registry",
    "DistillationLoss": "kdtune.trainables.losses.registry",
    "AlphaBlendLoss": "kdtune.trainables.losses.registry",
    "register_optimizer": "kdtune.trainables.optim",
    "list_optimizers": "kdtune.trainables.optim",
    "register_schedule": "kdtune.trainables.optim",
    "list_schedules": "kdtune.trainables.optim",
    "Schedule": "kdtune.trainables.optim",
    # searches and their experiments
    "run_search": "kdtune.api",
    "search_options": "kdtune.api",
    "open_experiment": "kdtune.api",
    "Experiment": "kdtune.api",
    "ExperimentError": "kdtune.analysis.experiment",
    "UsageError": "kdtune.search.input.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kdtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
