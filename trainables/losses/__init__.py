"""Distillation losses: a registry of methods, one nn.Module each, all called the same way.

    from kdtune.trainables.losses import create_loss, list_losses, loss_from_config
    loss = create_loss("dkd", beta=2.0)          # loss(student_logits, labels, teacher_logits)

Logit methods: kd (Hinton et al. 2015), kd_weighted (kd with separate CE and KD weights),
dkd (Zhao et al. 2022), dist (Huang et al. 2022), mse (Kim et al. 2021); logit
standardisation (Sun et al. 2024) is an option of kd, kd_weighted and dkd. Feature methods
(feature_base.py: bound to the student's and teacher's feature taps): fitnet (Romero et al.
2015), at (Zagoruyko & Komodakis 2017), sp (Tung & Mori 2019), pkt (Passalis & Tefas 2018),
rkd (Park et al. 2019), crd (Tian et al. 2020), reviewkd (Chen et al. 2021). See
registry.py for the interface (set_epoch, uses_teacher, needs) and hyperparameters.py for how a
method declares its hyperparameters (the one place their defaults and ranges are written).

    python -m pytest tests/test_losses.py -q
"""
from kdtune.trainables.losses.hyperparameters import TEACHER_OUTPUTS, Hyperparameter
from kdtune.trainables.losses.registry import (DistillationLoss, all_hyperparameters, create_loss,
                                               list_losses, loss_class, loss_from_config,
                                               method_fields, method_hyperparameters,
                                               method_settings, methods_reading, register_loss,
                                               supervised_loss)
from kdtune.trainables.losses.standardize import standardize
# Importing the modules registers their losses.
from kdtune.trainables.losses.kd import KDLoss
from kdtune.trainables.losses.dkd import DKDLoss
from kdtune.trainables.losses.dist import DISTLoss
from kdtune.trainables.losses.mse import MSELoss


def _import_method_modules() -> None:
    """Import every other module of this folder, so a new method is one file dropped here
    (its @register_loss runs on import): no list of methods to edit."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_method_modules()

__all__ = ["Hyperparameter", "TEACHER_OUTPUTS", "all_hyperparameters", "method_hyperparameters",
           "methods_reading", "DistillationLoss", "create_loss", "list_losses", "loss_class", "loss_from_config",
           "method_fields", "method_settings", "register_loss", "supervised_loss", "standardize",
           "KDLoss", "DKDLoss", "DISTLoss", "MSELoss"]
