"""search/tune/nondominated.py against hand-computed fronts and NSGA-II crowding distances."""
import math

from kdtune.search.tune.nondominated import crowding_distances, dominator_counts, non_dominated_ranks, pareto_order

# (val_acc, -params): maximise both.
POINTS = [(0.9, -100), (0.8, -50), (0.85, -80), (0.7, -10), (0.6, -60), (0.55, -70)]


def test_fronts_and_dominator_counts():
    # (0.6, -60) is beaten by (0.8, -50) and (0.7, -10); (0.55, -70) by those two and (0.6, -60).
    assert dominator_counts(POINTS) == [0, 0, 0, 0, 2, 3]
    assert non_dominated_ranks(POINTS) == [0, 0, 0, 0, 1, 2]
    assert non_dominated_ranks([(1, 1), (1, 1)]) == [0, 0]  # identical points do not dominate
    assert non_dominated_ranks([]) == [] and dominator_counts([]) == []


def test_crowding_distance_is_the_normalised_neighbour_gap_sum():
    front = POINTS[:4]
    d = crowding_distances(front)
    assert math.isinf(d[0]) and math.isinf(d[3])  # extremes of both objectives
    assert math.isclose(d[1], (0.85 - 0.7) / 0.2 + (-10 - -80) / 90)
    assert math.isclose(d[2], (0.9 - 0.8) / 0.2 + (-50 - -100) / 90)
    assert crowding_distances([(1, 2), (3, 4)]) == [math.inf, math.inf]


def test_pareto_order_front_then_crowding_then_arrival():
    assert pareto_order(POINTS) == [0, 3, 1, 2, 4, 5]


class _Result:
    """What kdtune.search.record.trials reads of a Ray Result."""

    def __init__(self, tid, curve, params, diverged=0, error=None):
        import pandas as pd

        # the epoch a trial diverged in reports diverged=1 (trainables/loop.py), earlier ones 0
        self.metrics_dataframe = pd.DataFrame({"val_acc": curve, "params": params,
                                               "epoch": range(1, len(curve) + 1),
                                               "diverged": [0] * (len(curve) - 1) + [diverged]})
        self.metrics = {"trial_id": tid, "training_iteration": len(curve), "params": params,
                        "diverged": diverged, "done": True}
        self.config = {"model": "mlp", "width": params // 100, "lr": 0.01}
        self.error, self.best_checkpoints, self.checkpoint = error, [], None


def pareto_set(results):
    """The stage's Pareto set as the pipeline records it (search/record/trials.stage_record)."""
    from kdtune.search.record.trials import from_result
    from kdtune.search.tune.objective import objective

    return [m.member_record() for m in objective("pareto").front([from_result(r) for r in results])]


def test_stage_pareto_set_is_the_non_dominated_trials_most_accurate_first():
    results = [_Result("big", [0.8, 0.9, 0.95], 100_000), _Result("mid", [0.7, 0.92], 50_000),
               _Result("worse", [0.6, 0.91], 60_000),  # beaten by mid on both
               _Result("tiny", [0.5], 1_000), _Result("nan", [0.4], 500, diverged=1),
               _Result("err", [0.99], 10, error=RuntimeError("boom"))]
    front = pareto_set(results)
    assert [m["trial_id"] for m in front] == ["big", "mid", "tiny"]
    assert front[1] == {"trial_id": "mid", "config": {"model": "mlp", "width": 500, "lr": 0.01},
                        "val_acc": 0.92, "params": 50_000, "epochs": 2, "best_checkpoint": None}


def test_identical_points_have_no_crowding_and_keep_arrival_order():
    """An objective without range adds nothing and marks no extreme: three identical points
    tie at 0 and stay in arrival order (the first and last were infinite before)."""
    same = [(0.9, -10), (0.9, -10), (0.9, -10)]
    assert crowding_distances(same) == [0.0, 0.0, 0.0]
    assert pareto_order(same) == [0, 1, 2]
    # One objective flat, the other spread: only the spread one marks extremes.
    d = crowding_distances([(0.9, -30), (0.9, -10), (0.9, -20)])
    assert math.isinf(d[0]) and math.isinf(d[1]) and d[2] == 1.0


def test_an_infinite_objective_gives_no_nan_distance():
    """A -inf objective (e.g. a diverged trial's loss) made inf - inf = NaN distances, which
    sort ahead of the extremes; now every distance is a number or +inf."""
    front = [(-math.inf, -1), (0.5, -2), (0.7, -3), (0.9, -4)]
    d = crowding_distances(front)
    assert not any(math.isnan(x) for x in d)
    assert math.isinf(d[0]) and math.isinf(d[3]) and 0 < d[1] < math.inf and 0 < d[2] < math.inf
    assert pareto_order(front)[:2] == [0, 3]  # the extremes first, then the interior
