"""How a KD method declares one hyperparameter: the single place its default, valid range,
search range, scale and type are written.

    from kdtune.trainables.losses.hyperparameters import Hyperparameter

    BETA = Hyperparameter("my_beta", 2.0, low=0.0, search=(0.5, 8.0), log=True, kwarg="beta",
                          source="paper X, Table 3", help="weight of the relation term")

Everything else reads the declaration: DistillConfig accepts `my_beta` as a flat key and checks
it with `check`; the search spaces sample `search` on the declared scale (or pin `default` when
`search` is None and no preset ranges it); the preflight checks a preset's range against
`low`/`high`; summaries print it as `short=value`; analysis lists it as a column and knows its
scale for fANOVA. Nothing torch-related is imported here, so the search's input layer can read
declarations cheaply.

Fields:
    name     the flat config key and search dimension. Two methods may share a name only with
             identical declarations (kd and mse share `alpha`): one key, one default.
    default  the value a trial gets when nothing sets it; also the loss __init__'s default
             (register_loss refuses a class whose signature says otherwise).
    kind     "float", "int", "bool" or "categorical" (then `choices`).
    search   the default search range (lo, hi) for float/int; None = pinned at `default`
             unless a preset or flag ranges it. bool: None = pinned, (False, True) = searched.
    log      sample `search` on a log scale (ratios matter: loss weights spanning a decade).
    low/high valid bounds; low_open/high_open make them strict (a temperature is > 0).
    kwarg    the loss __init__ keyword, when it differs from `name` (dkd_beta -> beta).
    short    how settings strings show it ("T" for every temperature); None = `name`.
    source   where `default` comes from (paper, reference code): the reason for the value.
    help     one line: what the value means, with units.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any

KINDS = ("float", "int", "bool", "categorical")
# Teacher outputs a loss may declare in `needs`. Every teacher source (cached logits, the
# fixed-views cache, an online teacher, an assistant) provides logits; feature-based methods
# add their outputs here when a source provides them.
TEACHER_OUTPUTS = ("logits", "features")  # features: feature_teacher.py + FeatureTap


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    default: Any
    kind: str = "float"
    search: tuple[Any, Any] | None = None
    log: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    kwarg: str | None = None
    short: str | None = None
    source: str = ""
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"hyperparameter {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "categorical" and not self.choices:
            raise ValueError(f"hyperparameter {self.name}: a categorical needs `choices`")
        if self.kind == "bool":
            object.__setattr__(self, "choices", (False, True))
        self.check(self.default)  # a default outside its own range is a declaration bug
        if self.search is not None:
            if len(self.search) != 2:
                raise ValueError(f"hyperparameter {self.name}: search must be (lo, hi), got {self.search!r}")
            for bound in self.search:
                self.check(bound)
        if self.log and self.kind in ("float", "int") and self.search is not None and self.search[0] <= 0:
            raise ValueError(f"hyperparameter {self.name}: a log scale needs a search range > 0")

    @property
    def keyword(self) -> str:
        """The loss __init__ keyword this value goes to."""
        return self.kwarg or self.name

    @property
    def label(self) -> str:
        return self.short or self.name

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def space_default(self) -> Any:
        """What the search uses when no preset or flag mentions it: the range or the pin."""
        return tuple(self.search) if self.search is not None else self.default

    @property
    def searched_by_default(self) -> bool:
        return self.search is not None and self.search[0] != self.search[1]

    def bounds_text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"

    def check(self, value: Any) -> Any:
        """`value` coerced to the declared type; ValueError naming the key when it is not valid."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind == "categorical":
            if value not in self.choices:
                hint = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"unknown {self.name} {value!r}{extra}; known: "
                                 f"{', '.join(map(str, self.choices))}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{self.name} must be a{'n integer' if self.kind == 'int' else ' number'}, "
                             f"got {value!r}")
        if self.kind == "int":
            if not float(value).is_integer():
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"{self.name} must be a number, got nan")
        below = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        above = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if (below or above) and self.low is not None and self.high is not None:
            raise ValueError(f"{self.name} must be in {self.bounds_text()}, got {value}")
        if below:
            raise ValueError(f"{self.name} must be {'>' if self.low_open else '>='} {self.low:g}, got {value}")
        if above:
            raise ValueError(f"{self.name} must be {'<' if self.high_open else '<='} {self.high:g}, got {value}")
        return value
