"""kdtune models: the registry (create_model, list_models, ...) and every architecture.

Importing the package imports the architecture modules, which registers their models:

    from kdtune import models
    models.list_models()
    net = models.create_model("mlp", num_classes=10, in_shape=(1, 28, 28), width=1200, depth=2)
"""
from kdtune.models.registry import (
    count_params,
    create_from_spec,
    create_model,
    flops_per_image,
    gradient_probes,
    list_models,
    register_model,
)

# Imported for their @register_model side effect.
from kdtune.models import cifar_resnet, mlp, resnet, torchvision_resnets, zoo  # noqa: F401,E402

__all__ = [
    "count_params",
    "create_from_spec",
    "create_model",
    "flops_per_image",
    "gradient_probes",
    "list_models",
    "register_model",
]
