"""KD methods through the trainable and the analysis: every method trains from the driver's
cached logits and from an online teacher, DKD's warm-up follows the loop's epochs (resume
included), and the per-method tables pick each method's best trial."""
import pandas as pd
import pytest

from kdtune.analysis.best_trials import best_per_method, settings
from kdtune.search.record.summary import method_table
from kdtune.trainables import reporting
from kdtune.trainables.distill import distill_student
from kdtune.trainables.losses import DKDLoss
from kdtune.trainables.teacher import train_teacher
from kdtune.trainables.teacher_logits import compute_logits, load_teacher

FAST = {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.1, "precision": "fp32",
        "seed": 0, "num_threads": 1, "width": 32}
METHODS = [{"kd_method": "kd", "alpha": 0.7, "logit_standardize": True},
           {"kd_method": "dkd", "dkd_beta": 2.0, "dkd_warmup": 1},
           {"kd_method": "dist", "dist_beta": 2.0, "dist_gamma": 2.0},
           {"kd_method": "mse", "alpha": 0.5}]


@pytest.fixture(scope="module")
def teacher(bundle, tmp_path_factory):
    with reporting.local_session(root=str(tmp_path_factory.mktemp("teacher"))) as rec:
        train_teacher({**FAST, "width": 128}, data=bundle)
    path = rec.checkpoints[-1]
    logits = compute_logits(load_teacher(path), bundle.train, 256, "cpu", mean=bundle.mean, std=bundle.std)
    return path, logits


@pytest.mark.parametrize("method", METHODS, ids=[m["kd_method"] for m in METHODS])
def test_every_method_distils_from_cached_logits_and_an_online_teacher(method, bundle, teacher):
    path, logits = teacher
    with reporting.local_session():
        cached = distill_student({**FAST, **method, "teacher_checkpoint": path}, data=bundle,
                                 teacher_logits=logits)
        online = distill_student({**FAST, **method, "online_teacher": "mlp",
                                  "online_teacher_kwargs": {"width": 64}}, data=bundle)
        plain = distill_student({**FAST, "teacher_checkpoint": path, "alpha": 0.0}, data=bundle)
    assert cached["diverged"] == 0 and cached["val_acc"] > 0.2 and "agreement" in cached  # chance: 0.1
    # Two epochs of a teacher trained from scratch teach little: the path runs, finitely.
    assert online["diverged"] == 0 and "teacher_val_acc" in online and "agreement" in online
    # The soft term was trained: the training loss differs from the undistilled student's.
    assert cached["train_loss"] != pytest.approx(plain["train_loss"], abs=1e-4)


def test_dkd_warmup_follows_the_loops_batches_across_a_resume(bundle, teacher, monkeypatch):
    seen, real = [], DKDLoss.warmup_weight
    monkeypatch.setattr(DKDLoss, "warmup_weight", lambda self: (seen.append(self.epochs_done), real(self))[1])
    config = {**FAST, "epochs": 2, "kd_method": "dkd", "dkd_warmup": 2, "teacher_checkpoint": teacher[0]}
    with reporting.local_session() as full:
        distill_student(config, data=bundle, teacher_logits=teacher[1])
        straight, seen[:] = list(seen), []
        with reporting.local_session(resume_from=full.checkpoints[0]):
            distill_student(config, data=bundle, teacher_logits=teacher[1])
    n = len(straight) // 2  # batches per epoch
    assert n > 1 and straight == pytest.approx([(i + 1) / n for i in range(2 * n)])  # 1/n ... 2 epochs
    assert seen == pytest.approx(straight[n:])  # the resumed run redoes epoch 2's ramp exactly


def _trials():
    rows = [("distill", "kd", 0.90, {"alpha": 0.5, "temperature": 4.0}),
            ("distill", "kd", 0.95, {"alpha": 0.8, "temperature": 2.0}),
            ("distill", "dkd", 0.97, {"dkd_alpha": 1.0, "dkd_beta": 4.0, "dkd_temperature": 3.0,
                                        "temperature": 9.0}),  # kd's T: not dkd's, never shown
            ("distill", "dist", 0.93, {"dist_beta": 2.0, "dist_gamma": 1.0, "dist_temperature": 1.0}),
            ("distill", "dist", None, {"dist_beta": 1.0, "dist_gamma": 1.0, "dist_temperature": 1.0}),
            ("baseline", None, 0.99, {"alpha": 0.0})]
    return [{"stage": s, "kd_method": m, "val_acc": v, "trial_id": f"t{i}", "model": "mlp", "depth": 1,
             "width": 16 + i, "params": 100 + i, **kw} for i, (s, m, v, kw) in enumerate(rows)]


def test_best_per_method_table_picks_each_methods_best_trial():
    table = best_per_method(pd.DataFrame(_trials()))
    assert list(table["kd_method"]) == ["dkd", "kd", "dist"]  # best first; no baseline row
    assert list(table["trials"]) == [1, 2, 1]  # trials with a val_acc
    assert list(table["trial_id"]) == ["t2", "t1", "t3"]
    assert table.loc[1, "median_val_acc"] == pytest.approx(0.925)
    assert table.loc[0, "settings"] == "dkd_alpha=1, dkd_beta=4, T=3"
    assert settings(pd.Series({"kd_method": "kd", "alpha": 0.8, "temperature": 2.0,
                               "logit_standardize": True})) == "alpha=0.8, T=2, std=True"


def test_summary_lists_methods_only_when_several_were_searched():
    trials = [t for t in _trials() if t["stage"] == "distill"]
    lines = method_table(trials)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split(" | ")[0] for r in rows] == ["| dkd", "| kd", "| dist"]
    assert "dkd_alpha=1, dkd_beta=4, T=3 |" in rows[0] and "97.00%" in rows[0]
    assert method_table([t for t in trials if t["kd_method"] == "kd"]) == []


def test_a_kd_only_search_shows_its_method_in_tables_and_summary(small_search, capsys):
    from kdtune.analysis import best_trials

    assert best_trials.main([str(small_search)]) == 0
    md = (small_search / "analysis" / "best_trials.md").read_text()
    assert "### distill: best trial per KD method" in md and "| method |" in md
    table = pd.read_csv(small_search / "analysis" / "best_trials.csv")
    assert set(table[table["stage"] == "distill"]["kd_method"]) == {"kd"}
    assert table[table["stage"] == "baseline"]["kd_method"].isna().all()
    per_method = pd.read_csv(small_search / "analysis" / "best_per_method.csv")
    assert list(per_method["kd_method"]) == ["kd"]
    assert per_method.loc[0, "val_acc"] == pytest.approx(table[table["stage"] == "distill"]["val_acc"].max())
    assert "kd_method=kd" in (small_search / "summary.md").read_text()


def test_final_stage_rows_show_each_candidates_method_and_its_own_settings():
    from kdtune.search.record.final_summary import final_table

    def row(role, stage, **cfg):
        return {"role": role, "source_stage": stage, "model": "mlp", "depth": 1, "width": 32, "lr": 0.05,
                "params": 1000, "flops": 2000, "seeds": 2, "val_acc_mean": 0.9, "val_acc_sd": 0.01,
                "test_acc_mean": 0.89, "test_acc_sd": 0.02, **cfg}

    stage = {"status": "done", "seeds": [1000, 1001], "headline": "distilled #1",
             "results": [row("baseline", "baseline", alpha=0.0),
                         row("distilled #1", "distill", kd_method="dkd", dkd_beta=4.2, dkd_temperature=3.0,
                             temperature=4.0, alpha=0.5),
                         row("distilled #2", "distill", alpha=0.7, temperature=2.0)]}  # a pre-methods row
    lines = final_table(stage)
    by_role = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ") and "mlp" in line}
    assert "| dkd: dkd_beta=4.2, T=3, lr=0.05 |" in by_role["distilled #1"]  # not kd's alpha or T
    assert "| kd: alpha=0.7, T=2, lr=0.05 |" in by_role["distilled #2"]
    assert "| lr=0.05 |" in by_role["baseline"]
    assert "(distilled #1, dkd, 1,000 params)" in next(line for line in lines if line.startswith("**Final"))
