"""`Option`: how one run option of run_kd_search.py is declared. The declarations themselves
are the table in search/input/options/ (one module per --help group); everything that knows
about an option reads that table:

    Option("grace_period", int, 4, "search.grace_period", "epochs before ASHA may stop a trial",
           minimum=1, smoke=1)

gives the flag --grace-period (its type and range checked when parsed: cli.build_parser), the
preset key `search: {grace_period: 2}` (preset_loader.sections), SearchSpec's field and default
(spec.spec_class), build_spec's merge (flag over preset over default), the --smoke-test cap (a
flag the user gives wins over it), the resume rule (flag_rules: only options declared
`resume=True` may go with --resume) and the range check of a preset's value (validate).
Rules between options (grace_period <= max_epochs, --image-size only for image_folder, the
machine's CPUs) stay in validate.py and flag_rules.py.

Where a value lives is its `preset` path: "dataset" (a top-level key), "search.num_samples"
(a key of a section the table owns) or "teacher.epochs" (a key inside one of the free-form
sections train / teacher / space, which the spec keeps as dicts and the trainables' configs
check). Options of the first two kinds are SearchSpec fields named after the option; the third
kind edits the spec's dict. `preset=None`: command line only (where and how this session runs,
--preset itself, and the image store's machine-local settings).

Why a table of dataclasses rather than pydantic (2.13 is installed through Ray) or
jsonargparse: the table must drive argparse (the CLI's flags, help groups and one-line
errors stay exactly as the README documents them), presets whose sections are merged under
flags, the smoke caps and the resume rule; pydantic would validate a second time with its
own multi-line ValidationError to translate back into kdtune's one line naming the flag, and
jsonargparse would replace the command line's behaviour. The checks an option needs are a
type, a range or a choice list, which the fifteen lines of `parse` / `check` below do.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kdtune.search.input.errors import UsageError

# Preset sections the spec keeps as dicts: their own keys are TrainConfig / TeacherConfig /
# search-space keys, checked by those; an option may set one of them ("teacher.epochs").
DICT_SECTIONS = ("train", "teacher", "space")
_NUMBERS = (int, float)


@dataclass(frozen=True)
class Option:
    name: str                      # argparse dest and, unless it edits a dict section, SearchSpec field
    kind: Any                      # int, float, str, bool (a switch) or a converter from arg_types
    default: Any                   # None: unset (the preset's, else a config's default applies)
    preset: str | None             # where a preset sets it ("seed", "search.seed", "teacher.epochs"); None: CLI only
    help: str | Callable[[], str]  # a callable when it lists a registry (read when --help is built)
    group: str = ""                # the --help heading
    minimum: float | None = None
    minimum_open: bool = False     # True: value must be > minimum
    maximum: float | None = None
    maximum_open: bool = False     # True: value must be < maximum
    choices: tuple[str, ...] = ()
    smoke: Any = None              # --smoke-test cap (min with the preset's value); None: not capped
    note: str = ""                 # why the range, shown in the error
    resume: bool = False           # may go with --resume: it says where or how to run, never what
    flag: str = ""                 # default --name-with-dashes
    metavar: str | None = None
    repeat: bool = False           # the flag may be given several times (a list)
    merge: Callable[[Any, Any], Any] | None = None   # (preset's value, flag's) -> value; default: the flag's
    write: Callable[[dict, Any], None] | None = None  # puts a flag's value into its dict section itself
    to_spec: Callable[[Any], Any] | None = None      # the merged value as the spec holds it (tuples, paths)

    def __post_init__(self):
        if not self.flag:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))

    # ---- where it lives ------------------------------------------------------------------
    @property
    def preset_parts(self) -> tuple[str, ...]:
        return tuple(self.preset.split(".")) if self.preset else ()

    @property
    def in_dict_section(self) -> bool:
        """Does it edit the spec's train / teacher / space dict rather than own a field?"""
        return len(self.preset_parts) > 1 and self.preset_parts[0] in DICT_SECTIONS

    def read(self, spec: Any) -> Any:
        """Its value on a spec (or a mapping of spec fields); None where a dict section lacks it."""
        if not self.in_dict_section:
            return spec[self.name] if isinstance(spec, Mapping) else getattr(spec, self.name)
        head, *keys = self.preset_parts
        value = spec[head] if isinstance(spec, Mapping) else getattr(spec, head)
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    def finish(self, value: Any) -> Any:
        """The merged value as SearchSpec holds it."""
        if self.to_spec is not None:
            return self.to_spec(value)
        return bool(value) if self.kind is bool else value

    # ---- command line ------------------------------------------------------------------
    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    def argparse_kwargs(self) -> dict[str, Any]:
        """add_argument's keywords. Every default is None, so "not given" falls back to the preset."""
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help_text(), "default": None}
        if self.kind is bool:  # a switch; one that defaults to on also gets --no-NAME
            kwargs["action"] = argparse.BooleanOptionalAction if self.default else "store_true"
            return kwargs
        if self.choices:
            kwargs["choices"] = self.choices
        elif self.kind in _NUMBERS:
            kwargs["type"] = self.parse
        elif self.kind is not str:
            kwargs["type"] = self.kind  # a converter: raises ArgumentTypeError, one usage line
        if self.repeat:
            kwargs["action"] = "append"
        if self.metavar:
            kwargs["metavar"] = self.metavar
        elif self.kind in _NUMBERS:
            kwargs["metavar"] = self.name.upper()
        return kwargs

    def _range_text(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"in {'(' if self.minimum_open else '['}{low:g}, {high:g}{')' if self.maximum_open else ']'}"
        if high is not None:
            return f"{'<' if self.maximum_open else '<='} {high:g}"
        return f"{'>' if self.minimum_open else '>='} {low:g}{self.note}"

    def _out_of_range(self, value: float) -> bool:
        low, high = self.minimum, self.maximum
        return ((low is not None and (value < low or (self.minimum_open and value == low)))
                or (high is not None and (value > high or (self.maximum_open and value == high))))

    def _ranged(self) -> bool:
        return self.minimum is not None or self.maximum is not None

    def parse(self, text: str) -> Any:
        """argparse `type=` of a number: a bad value is one usage error line."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if self.kind is int else 'a number'}, got {text!r}") from None
        if self._out_of_range(value):
            raise argparse.ArgumentTypeError(f"must be {self._range_text()}, got {value}")
        return value

    # ---- a preset's value ----------------------------------------------------------------
    def check(self, value: Any) -> None:
        """A value from a preset (or a resumed spec): UsageError naming the flag.

        Converters' values (lists, dimensions, paths) were checked when parsed or are names
        that their registries check once --import has loaded; an unset optional one passes."""
        if value is None and self.default is None:
            return
        if self.choices:
            if value not in self.choices:
                raise UsageError(f"{self.flag} must be one of {self.choices}, got {value!r}")
            return
        if self.kind not in _NUMBERS:
            return
        numeric = (int,) if self.kind is int else _NUMBERS
        if isinstance(value, bool) or not isinstance(value, numeric) or self._out_of_range(value):
            rule = self._range_text() if self._ranged() else ""
            what = ("an integer " if self.kind is int else "") + rule if rule else (
                "an integer" if self.kind is int else "a number")
            raise UsageError(f"{self.flag} must be {what}, got {value!r}")
