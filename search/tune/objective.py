"""What a search optimises, as one object instead of `objective == "pareto"` tests in each
module that cares (the searcher, the scheduler, the study's directions, the stage's winners,
the final stage's choice).

    obj = objective("pareto")
    obj.metrics, obj.modes         # ("val_acc", "params"), ("max", "min")
    obj.size_metric                # "params": the scheduler ranks rungs by Pareto rank
    obj.multi                      # True: a Pareto set, not one winner
    obj.front(records)             # the stage's Pareto set ([] under a single objective)
    obj.final_members(records, k)  # what the final stage retrains of a search stage

`accuracy`: val_acc alone. `pareto`: val_acc up and params down (search/tune/nondominated.py
ranks by non-dominated front, ties by crowding distance). Nothing heavy is imported here, so
the CLI reads the names (OBJECTIVES) without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any


@dataclass(frozen=True)
class Objective:
    name: str
    size_metric: str | None = None  # the second objective, minimised (model size)
    help: str = ""

    @property
    def multi(self) -> bool:
        return self.size_metric is not None

    @property
    def metrics(self) -> tuple[str, ...]:
        from kdtune.trainables.reporting import METRIC

        return (METRIC,) + ((self.size_metric,) if self.size_metric else ())

    @property
    def modes(self) -> tuple[str, ...]:
        from kdtune.trainables.reporting import MODE

        return (MODE,) + (("min",) if self.size_metric else ())

    def searcher_args(self) -> dict[str, Any]:
        """metric= and mode= as Ray's searchers take them: a name, or lists when multi."""
        if self.multi:
            return {"metric": list(self.metrics), "mode": list(self.modes)}
        return {"metric": self.metrics[0], "mode": self.modes[0]}

    def front(self, records: Sequence) -> list:
        """The trials on the front of val_acc (max) and size_metric (min), most accurate first
        (search/tune/nondominated.front); candidates only (search/record/trials.TrialRecord:
        no error, no divergence). [] under a single objective: a stage has one winner then."""
        if not self.multi:
            return []
        from kdtune.search.tune.nondominated import front

        return front([r for r in records if r.candidate], accuracy=lambda r: r.val_acc,
                     cost=lambda r: r.value(self.size_metric))

    def final_members(self, records: Sequence, k: int) -> list:
        """At most k distinct configs of a search stage for the final stage, most accurate first.

        Single objective: the top k by (epochs trained, val_acc) (trials.ranked_distinct).
        Multi: the front of the distinct configs; more than k members are spread over it by
        size (k evenly spaced positions of the front sorted by size, so both ends, the
        smallest and the most accurate, are retrained); with k = 1 the most accurate member
        (the headline's)."""
        from kdtune.search.record.trials import ranked_distinct

        pool = ranked_distinct(records)
        if not self.multi:
            return pool[:k]
        members = self.front(pool)
        if k == 1:
            return members[:1]
        if len(members) > k:
            by_size = sorted(members, key=lambda r: (r.value(self.size_metric), -r.val_acc))
            picks = sorted({round(i * (len(by_size) - 1) / (k - 1)) for i in range(k)})
            members = sorted((by_size[i] for i in picks), key=lambda r: -r.val_acc)
        return members

    def directions(self) -> list:
        """The Optuna study's directions, one per metric."""
        import optuna

        return [optuna.study.StudyDirection.MAXIMIZE if m == "max" else optuna.study.StudyDirection.MINIMIZE
                for m in self.modes]


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("accuracy", help="best val_acc"),
    "pareto": Objective("pareto", size_metric="params", help="val_acc max, params min"),
}


def objective(value: "str | Objective") -> Objective:
    """The Objective named `value` (an Objective passes through); unknown names list the known."""
    if isinstance(value, Objective):
        return value
    if value not in OBJECTIVES:
        raise ValueError(f"unknown objective {value!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[value]
