"""The run options of a search's budget and resources, each declared once: type, default,
preset section, flag and help, smoke-test cap and valid range. None of them may go with
--resume (they change what a run computes; flag_rules.RESUME_FLAGS lists those that may).

    Option("grace_period", int, 4, "search", "epochs before ASHA may stop a trial", minimum=1, smoke=1)

is all a budget knob needs: the CLI flag (--grace-period, its type and range checked when
parsed, search/input/cli.py), the preset key (`search: {grace_period: 2}`,
search/input/preset_loader.py), build_spec's merge of flag over preset, the --smoke-test cap
(a flag the user gives wins over it), SearchSpec's default and validate's range check (for a
preset's value) all read this table. Cross-option rules (grace_period <= max_epochs,
final_top_k <= num_samples, CPUs this machine has) stay in validate.py.

Why a table of dataclasses rather than pydantic (2.13 is installed through Ray): the options
are flat scalars whose checks must end in kdtune's one-line UsageError naming the flag, and
argparse must keep building the command line; a pydantic model would add a second validation
path and its multi-line ValidationError to translate, for nothing these ten lines don't do.

Not yet covered (issue 32, item 1): the data, teacher/student, search-space and run options
still live in cli.py, spec.py and validate.py.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from kdtune.search.input.errors import UsageError
from kdtune.search.tune.objective import OBJECTIVES


@dataclass(frozen=True)
class Option:
    name: str                      # SearchSpec field, preset key, flag --name-with-dashes
    kind: type                     # int, float or str
    default: Any
    section: str                   # preset section: "search" or "resources"
    help: str
    minimum: float | None = None
    minimum_open: bool = False     # True: value must be > minimum
    choices: tuple[str, ...] = ()
    smoke: Any = None              # --smoke-test cap (min with the preset's value); None: not capped
    note: str = ""                 # why the range, shown in the error

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def _range_text(self) -> str:
        return f"{'>' if self.minimum_open else '>='} {self.minimum:g}{self.note}"

    def _out_of_range(self, value: float) -> bool:
        return self.minimum is not None and (value < self.minimum or (self.minimum_open and value == self.minimum))

    def parse(self, text: str) -> Any:
        """argparse `type=`: a bad value is one usage error line."""
        if self.choices:
            return text  # argparse's choices= reports it
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if self.kind is int else 'a number'}, got {text!r}") from None
        if self._out_of_range(value):
            raise argparse.ArgumentTypeError(f"must be {self._range_text()}, got {value}")
        return value

    def check(self, value: Any) -> None:
        """A value from a preset (or a resumed spec): UsageError naming the flag."""
        if self.choices:
            if value not in self.choices:
                raise UsageError(f"{self.flag} must be one of {self.choices}, got {value!r}")
            return
        numeric = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or self._out_of_range(value):
            what = "an integer " if self.kind is int else ""
            raise UsageError(f"{self.flag} must be {what}{self._range_text()}, got {value!r}")


OPTIONS: tuple[Option, ...] = (
    Option("num_samples", int, 12, "search", "distillation trials", minimum=1, smoke=2),
    Option("baseline_samples", int, 6, "search", "undistilled baseline trials", minimum=1, smoke=2),
    Option("max_epochs", int, 20, "search", "epochs of a trial that ASHA never stops", minimum=1, smoke=2),
    Option("grace_period", int, 4, "search", "epochs before ASHA may stop a trial", minimum=1, smoke=1),
    Option("reduction_factor", int, 3, "search", "ASHA keeps 1/RF of the trials at each rung", minimum=2),
    Option("max_concurrent", int, 2, "search", "trials running at once", minimum=1, smoke=2),
    Option("objective", str, "accuracy", "search",
           ", or ".join(f"{o.name} ({o.help})" for o in OBJECTIVES.values()), choices=tuple(OBJECTIVES)),
    Option("final_top_k", int, 3, "search", "final stage: distinct distilled configs retrained (the Pareto "
           "set's cap under --objective pareto), beside the best baseline and each one's undistilled twin",
           minimum=1, smoke=1),
    Option("final_seeds", int, 3, "search", "final stage: seeds per retrained config, each tested once "
           "(0 turns it off)", minimum=0, smoke=2, note=" (0 turns the final stage off)"),
    Option("cpus_per_trial", float, 1, "resources", "CPUs per trial (also its torch threads)",
           minimum=0, minimum_open=True),
    Option("gpus_per_trial", float, 0, "resources", "GPUs per trial; fractions share a card", minimum=0),
    Option("teacher_workers", int, 1, "resources", "DDP workers training the teacher (Ray Train inside its Tune "
           "trial; gloo on CPU, NCCL on GPUs), each with --cpus-per-trial / --gpus-per-trial; the teacher's "
           "batch_size is per worker (a step sees batch_size x N)", minimum=1),
    Option("final_workers", int, 1, "resources", "DDP workers for each final-stage retraining run, as "
           "--teacher-workers (batch_size per worker)", minimum=1),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def default(name: str) -> Any:
    return BY_NAME[name].default


def section_keys(section: str) -> set[str]:
    """The preset keys of `section` that this table declares."""
    return {o.name for o in OPTIONS if o.section == section}


def smoke_limits() -> dict[str, Any]:
    return {o.name: o.smoke for o in OPTIONS if o.smoke is not None}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per option, its type and range checked when parsed (default None: given or not)."""
    for o in OPTIONS:
        kwargs: dict[str, Any] = {"help": o.help}
        if o.choices:
            kwargs["choices"] = o.choices
        else:
            kwargs["type"] = o.parse
            kwargs["metavar"] = o.name.upper()
        group.add_argument(o.flag, **kwargs)


def check_values(values: Any) -> None:
    """Every declared option's value on a spec (UsageError on the first out of range)."""
    for o in OPTIONS:
        o.check(getattr(values, o.name))
