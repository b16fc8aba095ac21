"""Run options: the search's budget and resources (--help group "search budget and resources")."""
from __future__ import annotations

from functools import partial

from kdtune.search.input.schema import Option
from kdtune.search.tune.objective import OBJECTIVES

_option = partial(Option, group="search budget and resources")

OPTIONS = (
    _option("num_samples", int, 12, "search.num_samples", "distillation trials", minimum=1, smoke=2),
    _option("baseline_samples", int, 6, "search.baseline_samples", "undistilled baseline trials", minimum=1, smoke=2),
    _option("max_epochs", int, 20, "search.max_epochs", "epochs of a trial that ASHA never stops", minimum=1, smoke=2),
    _option("grace_period", int, 4, "search.grace_period", "epochs before ASHA may stop a trial", minimum=1, smoke=1),
    _option("reduction_factor", int, 3, "search.reduction_factor", "ASHA keeps 1/RF of the trials at each rung",
            minimum=2),
    _option("max_concurrent", int, 2, "search.max_concurrent", "trials running at once", minimum=1, smoke=2),
    _option("objective", str, "accuracy", "search.objective",
            ", or ".join(f"{o.name} ({o.help})" for o in OBJECTIVES.values()), choices=tuple(OBJECTIVES)),
    _option("final_top_k", int, 3, "search.final_top_k", "final stage: distinct distilled configs retrained (the "
            "Pareto set's cap under --objective pareto), beside the best baseline and each one's undistilled twin",
            minimum=1, smoke=1),
    _option("final_seeds", int, 3, "search.final_seeds", "final stage: seeds per retrained config, each tested "
            "once (0 turns it off)", minimum=0, smoke=2, note=" (0 turns the final stage off)"),
    # A preset's resources are for a bigger machine: hardware.fit_to_machine fits them to this one.
    _option("cpus_per_trial", float, 1, "resources.cpus_per_trial", "CPUs per trial (also its torch threads)",
            minimum=0, minimum_open=True),
    _option("gpus_per_trial", float, 0, "resources.gpus_per_trial", "GPUs per trial; fractions share a card",
            minimum=0),
    # Not resume-safe: the batch_size of a DDP run is per worker, so N changes what a step sees.
    _option("teacher_workers", int, 1, "resources.teacher_workers", "DDP workers training the teacher (Ray Train "
            "inside its Tune trial; gloo on CPU, NCCL on GPUs), each with --cpus-per-trial / --gpus-per-trial; "
            "the teacher's batch_size is per worker (a step sees batch_size x N)", minimum=1),
    _option("final_workers", int, 1, "resources.final_workers", "DDP workers for each final-stage retraining "
            "run, as --teacher-workers (batch_size per worker)", minimum=1),
    # The size budget is top-level in a preset (it bounds the students, not the search's trials).
    _option("max_params", int, None, "max_params", "largest student the sampler proposes, in parameters", minimum=1),
    _option("max_flops", int, None, "max_flops", "largest student the sampler proposes, in FLOPs per image "
            "(a multiply-add = 2)", minimum=1),
)
