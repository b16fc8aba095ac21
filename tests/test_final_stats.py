"""The final stage's statistics (search/record/stats.py) and candidate choice (search/stages/final_select.py).

No Ray, no training: milliseconds.
"""
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from kdtune.search.record.trials import TrialRecord, ranked_distinct
from kdtune.search.stages.final_select import select
from kdtune.search.tune.objective import objective

# The final stage's choices, now the objective's (search/tune/objective.Objective.final_members).
top_k, pareto_members = objective("accuracy").final_members, objective("pareto").final_members
from kdtune.search.record.stats import MeanSd, paired_interval, welch_interval


def _welch_by_hand(a, b, confidence):
    """Welch's interval from its textbook formula (Welch 1947; Satterthwaite's df)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    return diff - half, diff + half, df


@pytest.mark.parametrize("a, b, confidence", [
    ([0.971, 0.965, 0.978], [0.952, 0.960, 0.949], 0.95),
    ([0.90, 0.91], [0.93, 0.80, 0.85, 0.88], 0.95),  # unequal sizes and spreads
    ([0.5, 0.7, 0.6, 0.65], [0.55, 0.56, 0.57], 0.90),
])
def test_welch_interval_matches_the_textbook_formula(a, b, confidence):
    got = welch_interval(a, b, confidence)
    low, high, df = _welch_by_hand(a, b, confidence)
    assert got["diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
    assert got["df"] == pytest.approx(df)
    assert got["low"] < got["diff"] < got["high"]
    assert got["confidence"] == confidence and got["method"] == "Welch's t interval"


def test_welch_interval_needs_two_values_a_side_and_spread():
    one = welch_interval([0.9], [0.8, 0.85])
    assert one["diff"] == pytest.approx(0.075) and one["low"] is None and one["high"] is None
    flat = welch_interval([0.9, 0.9, 0.9], [0.8, 0.8])
    # No spread on either side: the interval is undefined (was printed as [+10.00, +10.00]).
    assert flat["diff"] == pytest.approx(0.1) and flat["low"] is None and flat["high"] is None
    assert "undefined" in flat["reason"]
    assert welch_interval([], [0.8, 0.9])["diff"] is None


def test_paired_interval_is_the_paired_t_on_per_seed_differences():
    a = {1000: 0.971, 1001: 0.965, 1002: 0.978, 1003: 0.970}
    b = {1000: 0.960, 1001: 0.962, 1002: 0.961, 1003: 0.958, 1004: 0.5}  # 1004 has no pair
    got = paired_interval(a, b)
    d = np.array([a[s] - b[s] for s in sorted(a)])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert got["pairs"] == 4 and got["df"] == 3
    assert got["diff"] == pytest.approx(d.mean())
    assert got["low"] == pytest.approx(d.mean() - half) and got["high"] == pytest.approx(d.mean() + half)
    assert got["method"] == "paired t interval on per-seed differences"
    # Pairing matters when the seed moves both runs alike: the twin differs by ~1 point at
    # every seed while the seeds spread over 7 points; unpaired (Welch) the gain is lost.
    twin = {1: 0.90, 2: 0.95, 3: 0.92, 4: 0.97}
    kd = {s: v + dv for (s, v), dv in zip(twin.items(), (0.010, 0.012, 0.009, 0.011))}
    paired, welch = paired_interval(kd, twin), welch_interval(list(kd.values()), list(twin.values()))
    assert paired["low"] > 0 and welch["low"] < 0
    same = paired_interval({1: 0.9, 2: 0.8}, {1: 0.85, 2: 0.75})  # constant difference
    assert same["diff"] == pytest.approx(0.05) and same["low"] is None and "do not vary" in same["reason"]
    assert paired_interval({1: 0.9}, {1: 0.8})["reason"] == "fewer than 2 paired seeds"


def test_a_non_finite_scipy_interval_is_named_as_such(monkeypatch):
    """scipy answering a non-finite interval was reported as "fewer than 2 seeds"; the
    interval functions now say what happened, and the summary prints their reason."""
    from kdtune.search.record.final_summary import _gain

    from types import SimpleNamespace

    nan = SimpleNamespace(df=math.nan, confidence_interval=lambda c: SimpleNamespace(low=math.nan, high=math.nan))
    monkeypatch.setattr(stats, "ttest_ind", lambda *a, **k: nan)
    monkeypatch.setattr(stats, "ttest_rel", lambda *a, **k: nan)
    welch = welch_interval([0.9, 0.8, 0.85], [0.7, 0.75])
    paired = paired_interval({1: 0.9, 2: 0.8, 3: 0.7}, {1: 0.85, 2: 0.7, 3: 0.69})
    for got in (welch, paired):
        assert got["diff"] is not None and got["low"] is None and got["high"] is None
        assert got["reason"] == "scipy returned a non-finite interval"
        assert _gain(got).endswith("(no interval: scipy returned a non-finite interval)")


def test_no_interval_says_why():
    from kdtune.search.record.final_summary import _gain

    assert _gain({"diff": 0.1, "low": None, "reason": "scipy returned a non-finite interval"}) \
        == "+10.00 pts (no interval: scipy returned a non-finite interval)"
    flat = welch_interval([0.9, 0.9], [0.8, 0.8])
    assert "fewer than 2 seeds" not in _gain(flat) and "undefined" in _gain(flat)
    assert _gain(welch_interval([0.9], [0.8, 0.85])) == "+7.50 pts (no interval: fewer than 2 seeds)"


def test_mean_sd_is_the_sample_sd():
    got = MeanSd.of([0.9, 0.92, 0.97])
    assert (got.mean, got.sd) == pytest.approx((statistics.fmean([0.9, 0.92, 0.97]),
                                                np.std([0.9, 0.92, 0.97], ddof=1)))
    assert (MeanSd.of([0.5]).mean, MeanSd.of([0.5]).sd) == (0.5, None)
    assert (MeanSd.of([]).mean, MeanSd.of([]).sd) == (None, None)


def test_mean_sd_is_one_form_for_every_reader():
    """Three helpers with three return types (a tuple in the final stage, a dict in the model
    card, a string in benchmarks/) are one MeanSd: its fields, its JSON form, its text."""
    from benchmarks.common import mean_sd as bench_text
    from kdtune.analysis.final_seeds import mean_sd_text
    from kdtune.search.record.final_summary import _pct

    got = MeanSd.of([0.9, None, float("nan"), 0.92])  # runs without a figure are left out
    assert got.n == 2 and got.as_dict() == {"mean": got.mean, "sd": got.sd, "n": 2}
    assert got.text() == _pct(got.mean, got.sd) == mean_sd_text(got.mean, got.sd) == "91.00 ± 1.41%"
    assert MeanSd(0.5).text() == "50.00%" and MeanSd(None).text() == "n/a" and mean_sd_text(float("nan"), None) == ""
    assert bench_text([12, 14, 13]) == "13.0 ± 1.0" and bench_text([7], digits=0) == "7"


def _trial(tid, val, epochs=4, params=100.0, **cfg):
    return TrialRecord(tid, {"model": "mlp", "lr": 0.1, "seed": 0, **cfg}, val, params, epochs)


def test_top_k_ranks_by_fidelity_then_val_acc_and_drops_duplicate_configs():
    trials = [_trial("short", 0.99, epochs=2, width=8),           # high, but after only 2 epochs
              _trial("a", 0.95, width=16), _trial("dup", 0.97, width=16),  # the same config twice
              _trial("b", 0.90, width=32), _trial("c", 0.93, width=64)]
    assert [t.trial_id for t in ranked_distinct(trials)] == ["dup", "c", "b", "short"]
    assert [t.trial_id for t in top_k(trials, 2)] == ["dup", "c"]


def test_pareto_members_keep_both_ends_of_the_front_under_the_cap():
    trials = [_trial("big", 0.97, params=1000, width=1), _trial("mid", 0.95, params=500, width=2),
              _trial("small", 0.90, params=100, width=3), _trial("tiny", 0.80, params=50, width=4),
              _trial("dominated", 0.85, params=800, width=5)]
    assert {t.trial_id for t in pareto_members(trials, 10)} == {"big", "mid", "small", "tiny"}
    capped = pareto_members(trials, 2)
    assert [t.trial_id for t in capped] == ["big", "tiny"]  # the most accurate and the smallest


def test_pareto_members_with_one_slot_retrain_the_most_accurate_member():
    """k = 1 took position 0 of the front sorted by size: the smallest, least accurate member."""
    trials = [_trial("big", 0.97, params=1000, width=1), _trial("tiny", 0.80, params=50, width=4),
              _trial("mid", 0.95, params=500, width=2)]
    assert [t.trial_id for t in pareto_members(trials, 1)] == ["big"]


def test_select_puts_the_baseline_first_and_retrains_at_the_full_budget():
    distill = [_trial("d1", 0.95, width=16, alpha=0.5), _trial("d2", 0.96, width=32, alpha=0.7)]
    baseline = [_trial("b1", 0.90, width=16, alpha=0.0), _trial("b2", 0.92, epochs=2, width=8, alpha=0.0)]
    chosen = select(distill, baseline, k=3, objective="accuracy", epochs=18)
    assert [c["role"] for c in chosen] == ["baseline", "distilled #1", "distilled #2",
                                           "twin of distilled #1", "twin of distilled #2"]
    assert [c["source_trial"] for c in chosen] == ["b1", "d2", "d1", "d2", "d1"]
    for c in chosen:
        assert c["config"]["epochs"] == 18 and c["config"]["test_best_epoch"] is True
        assert "seed" not in c["config"]  # each final trial sets its own


def test_select_adds_one_undistilled_twin_per_distinct_architecture_and_recipe():
    """The twin keeps architecture and recipe, drops the teacher and every KD hyperparameter;
    two distilled configs differing only in KD settings share one twin."""
    kd = dict(teacher_checkpoint="/t.pt", kd_method="kd", alpha=0.7, temperature=3.0, width=64, weight_decay=1e-4)
    distill = [_trial("a", 0.97, **kd), _trial("b", 0.96, **{**kd, "kd_method": "dkd", "dkd_beta": 2.0}),
               _trial("c", 0.95, **{**kd, "width": 32})]
    cands = select(distill, [_trial("base", 0.9, width=128, alpha=0.0)], k=3, objective="accuracy", epochs=5)
    roles = [c["role"] for c in cands]
    assert roles == ["baseline", "distilled #1", "distilled #2", "distilled #3",
                     "twin of distilled #1", "twin of distilled #3"]
    twin = cands[4]
    assert twin["source_stage"] == "twin" and twin["twin_of"] == ["distilled #1", "distilled #2"]
    assert twin["config"] == {"model": "mlp", "lr": 0.1, "width": 64, "weight_decay": 1e-4, "kd_method": "kd",
                              "alpha": 0.0, "epochs": 5, "test_best_epoch": True}
    assert [c.get("twin") for c in cands[1:4]] == ["twin of distilled #1"] * 2 + ["twin of distilled #3"]


def test_summarize_pairs_each_distilled_config_with_its_twin_by_seed():
    from types import SimpleNamespace

    from kdtune.search.stages.final import summarize

    cands = select([_trial("a", 0.97, teacher_checkpoint="/t.pt", alpha=0.5)], [_trial("b", 0.9)], k=1,
                   objective="accuracy", epochs=3)
    acc = {0: {1: 0.90, 2: 0.80, 3: 0.85}, 1: {1: 0.93, 2: 0.84, 3: 0.87}, 2: {1: 0.91, 2: 0.82, 3: 0.86}}
    results = [SimpleNamespace(config={"candidate": c, "seed": s}, error=None, checkpoint=None,
                               metrics={"best_val_acc": a, "test_acc": a, "epoch": 3, "done": True})
               for c, by_seed in acc.items() for s, a in by_seed.items()]
    out = summarize(results, cands, [1, 2, 3])
    kd = out["results"][1]
    assert kd["twin"] == "twin of distilled #1" and out["results"][2]["twin_of"] == ["distilled #1"]
    diffs = [acc[1][s] - acc[2][s] for s in (1, 2, 3)]
    assert kd["kd_gain_twin"]["diff"] == pytest.approx(np.mean(diffs))
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert kd["kd_gain_twin"]["low"] == pytest.approx(np.mean(diffs) - half)
    assert kd["kd_gain_test"]["method"] == "Welch's t interval"
    assert "kd_gain_twin" not in out["results"][0] and "kd_gain_test" not in out["results"][2]


def test_a_diverged_final_run_is_excluded_from_the_mean_whatever_its_epoch():
    """A run diverging in epoch 1 has no tested weights and was dropped from the mean, while one
    diverging later was averaged in with its pre-divergence weights: one rule now, every
    diverged run counted in `diverged` and left out of the mean and the intervals."""
    from types import SimpleNamespace

    from kdtune.search.stages.final import summarize

    cands = select([], [_trial("b", 0.9)], k=1, objective="accuracy", epochs=3)

    def run(seed, test_acc, diverged):
        metrics = {"best_val_acc": test_acc, "test_acc": test_acc, "epoch": 1 if test_acc is None else 3,
                   "diverged": int(diverged), "done": True}
        return SimpleNamespace(config={"candidate": 0, "seed": seed}, error=None, checkpoint=None, metrics=metrics)

    out = summarize([run(1, None, True), run(2, 0.5, True), run(3, 0.9, False), run(4, 0.8, False)],
                    cands, [1, 2, 3, 4])
    row = out["results"][0]
    assert row["diverged"] == 2 and row["seeds"] == 2
    assert row["test_acc_mean"] == pytest.approx(0.85)


def test_a_search_trials_best_epoch_follows_the_outcome_rule():
    """final_select re-derived the best epoch with idxmax, which takes an infinite val_acc (a
    broken metric) as the best; it now uses trial_outcome.best_epoch (finite values only),
    the epoch the stage's checkpoint keeps."""
    import pandas as pd

    from kdtune.search.record.trials import from_frame

    def search_trial(tid, config, df, errored=False):
        """A final candidate, or None (the record layer's `candidate` rule)."""
        rec = from_frame(tid, config, df, error="error" if errored else None)
        return rec if rec.candidate else None

    df = pd.DataFrame({"val_acc": [0.5, math.inf, 0.7, 0.6], "params": [10.0] * 4, "epoch": [1, 2, 3, 4],
                       "diverged": [0, 0, 0, 0]})
    got = search_trial("t", {"model": "mlp", "seed": 0}, df)
    assert got.val_acc == 0.7 and got.epochs == 4 and got.params == 10.0
    assert search_trial("t", {}, df.assign(diverged=[0, 0, 0, 1])) is None
    assert search_trial("t", {}, df.assign(val_acc=[math.nan] * 4)) is None
    assert search_trial("t", {}, df, errored=True) is None


def test_the_chains_ta_distill_winner_is_retrained_with_its_twin():
    """--chain: the ta_distill stage's winner (the chain's student, taught by the assistant)
    was never a final candidate; it is now, with its undistilled twin."""
    distill = [_trial("d", 0.95, teacher_checkpoint="/teacher.pt", alpha=0.5, width=64)]
    ta = [_trial("ta1", 0.93, teacher_checkpoint="/assistant.pt", alpha=0.6, width=16),
          _trial("ta2", 0.96, teacher_checkpoint="/assistant.pt", alpha=0.4, width=16, lr=0.2)]
    cands = select(distill, [_trial("b", 0.9)], k=1, objective="accuracy", epochs=4, ta_distill=ta)
    assert [(c["role"], c["source_trial"]) for c in cands] == [
        ("baseline", "b"), ("distilled #1", "d"), ("ta-distilled #1", "ta2"),
        ("twin of distilled #1", "d"), ("twin of ta-distilled #1", "ta2")]
    assert cands[2]["config"]["teacher_checkpoint"] == "/assistant.pt"


def test_final_trial_gives_the_cached_logits_only_to_the_cached_teachers_students(monkeypatch):
    """The cache holds the search teacher's logits: the chain's student (taught by the
    assistant) must not train on them; it runs its own teacher in the trial."""
    import kdtune.trainables.distill as distill_module
    from kdtune.search.stages.final import final_trial

    seen = {}
    monkeypatch.setattr(distill_module, "distill_student",
                        lambda run, data=None, teacher_logits=None: seen.setdefault(run["role"], teacher_logits))
    cands = [{"config": {"role": "kd", "teacher_checkpoint": "/teacher.pt"}},
             {"config": {"role": "ta", "teacher_checkpoint": "/assistant.pt"}},
             {"config": {"role": "twin"}}]
    for i in range(3):
        final_trial({"candidate": i, "seed": 7}, cands, teacher_logits={7: "cache"}, cache_teacher="/teacher.pt")
    assert seen == {"kd": "cache", "ta": None, "twin": None}


def test_final_report_per_config_pairs_the_twin_by_seed():
    """analysis/final_seeds.per_config: the twin gain from the report's own test accuracies,
    paired by the seed in each model's role, beside the Welch gain over the baseline."""
    import pandas as pd

    from kdtune.analysis.final_seeds import gain_text, per_config

    acc = {"baseline": [0.90, 0.80, 0.85], "distilled #1": [0.93, 0.84, 0.87], "twin of distilled #1": [0.91, 0.82, 0.86]}
    rows = [{"role": f"{g} seed {s}", "model": "mlp", "val_acc": a, "test_acc": a, "params": 1, "flops": 1, "cpu_ms": 0.1}
            for g, accs in acc.items() for s, a in zip((1000, 1001, 1002), accs)]
    table = pd.DataFrame(rows)
    groups = {r["role"]: r["role"].rsplit(" seed ", 1)[0] for r in rows}
    out = per_config(table, groups, twin_of={"distilled #1": "twin of distilled #1"}).set_index("config")
    diffs = np.subtract(acc["distilled #1"], acc["twin of distilled #1"])
    assert out.at["distilled #1", "twin_gain_pts"] == pytest.approx(100 * diffs.mean())
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert out.at["distilled #1", "twin_low_pts"] == pytest.approx(100 * (diffs.mean() - half))
    assert out.at["distilled #1", "kd_gain_pts"] == pytest.approx(100 * (np.mean(acc["distilled #1"]) - 0.85))
    assert pd.isna(out.at["twin of distilled #1", "kd_gain_pts"]) and pd.isna(out.at["baseline", "twin_gain_pts"])
    assert gain_text(out.loc["distilled #1"], "twin").startswith("+1.67 pts [")
