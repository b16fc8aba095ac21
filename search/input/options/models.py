"""Run options: the teacher and the students (--help group "teacher and students").

Model, family and method names are checked by their registries (after --import has added its
own), so these declare no choices."""
from __future__ import annotations

from functools import partial

from kdtune.search.input import arg_types
from kdtune.search.input.options import values
from kdtune.search.input.schema import Option

_option = partial(Option, group="teacher and students")


def _methods_help() -> str:
    from kdtune.trainables.losses import list_losses

    return (f"KD methods searched, comma-separated ({', '.join(list_losses())}; several: the method is a "
            "searched dimension with its own hyperparameters; default: the preset's, else kd)")


OPTIONS = (
    _option("teacher", str, None, "teacher.model", "teacher model name (see models.list_models())",
            write=values.write_teacher_model),
    _option("teacher_epochs", int, None, "teacher.epochs", "epochs of the teacher stage", minimum=1, smoke=1),
    _option("teacher_weights", str, None, "teacher.model_kwargs.weights_path",
            "local state-dict file for a torchvision teacher (resnet18/resnet50)"),
    _option("teacher_checkpoint", str, None, "teacher_checkpoint",
            "a kdtune checkpoint.pt to use as the teacher (skips its training)"),
    _option("students", arg_types.csv_list, ("mlp",), "students",
            "student families to search, comma-separated (mlp, cifar_resnet, timm:resnet, timm:mobilenetv3, "
            "timm:efficientnet, or any registered model, taken as it is)", to_spec=values.as_tuple),
    _option("methods", arg_types.csv_list, ("kd",), "methods", _methods_help, to_spec=values.as_tuple),
    _option("chain", arg_types.csv_list, None, "chain",
            "teacher-assistant distillation (Mirzadeh et al. 2020): TEACHER,ASSISTANT,STUDENT, each a model name "
            "or FAMILY:DEPTH:WIDTH (e.g. resnet56,resnet32,resnet20 or mlp:2:512,mlp:2:128,mlp:1:32)",
            to_spec=values.as_tuple_or_none),
)
