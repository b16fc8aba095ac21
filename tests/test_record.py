"""The experiment-record layer (search/record/trials.py): one reader of a stage's trials,
on a stage folder this test writes as Tune does (result.json lines with the config nested,
progress.csv with config/ columns, params.json), and the same answers on the search's path
(the manifest's stage record, the final stage's choice) and the analysis path (Experiment).

No Ray, no training: the Tune snapshot (ExperimentAnalysis) is stood in for by the trials'
own files, read the way Ray reads them.
"""
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from kdtune.search.record import trials as record
from kdtune.search.record.stage_names import BASELINE, DISTILL, STAGES
from kdtune.search.tune.objective import objective

NAN, INF = float("nan"), float("inf")
# trial id -> (val_acc per epoch, diverged flag per epoch, params, done, planned epochs)
TRIALS = {
    "a": ([0.5, NAN, 0.8, 0.7], [0, 0, 0, 0], 1000, True, 4),   # a NaN epoch; best is epoch 3
    "b": ([0.6, 0.9, 0.0], [0, 0, 1], 500, True, 4),             # diverged after its best epoch
    "c": ([0.0], [1], 100, True, 4),                              # diverged in epoch 1 (loop reports 0.0)
    "d": ([0.6, INF, 0.65], [0, 0, 0], 2000, True, 4),           # a broken (infinite) value; ASHA stop
    "f": ([0.7], [0], 300, True, 4),                              # stopped by ASHA after 1 epoch
    "u": ([0.55, 0.58], [0, 0], 800, False, 4),                   # still running (no `done`)
}


# Tune's trial-folder files read as Ray reads them (the stand-in for Result.metrics_dataframe).
def load_frame(trial_dir: str | Path) -> "pd.DataFrame | None":
    """A trial folder's per-epoch rows as Ray reads them: result.json (one JSON object per
    line, nested keys joined with "/"), else progress.csv; None without either."""
    trial_dir = Path(trial_dir)
    if (trial_dir / "result.json").is_file():
        content = (trial_dir / "result.json").read_text().rstrip("\n")
        if not content:
            return pd.DataFrame()
        return pd.json_normalize([json.loads(line) for line in content.split("\n")], sep="/")
    if (trial_dir / "progress.csv").is_file():
        return pd.read_csv(io.StringIO((trial_dir / "progress.csv").read_text()), dtype={"trial_id": str})
    return None


def _rows(tid):
    curve, flags, params, done, planned = TRIALS[tid]
    config = {"model": "mlp", "depth": 1, "width": params // 10, "lr": 0.01, "alpha": 0.5, "epochs": planned,
              "seed": 0}
    rows = [{"epoch": e, "training_iteration": e, "trial_id": tid, "val_acc": v, "val_loss": 1.0 - (v if math.isfinite(v) else 0),
             "params": params, "diverged": d, "done": bool(done and e == len(curve)), "config": config}
            for e, (v, d) in enumerate(zip(curve, flags), start=1)]
    return config, rows


def _write_stage(stage_dir: Path, csv_only: tuple[str, ...] = ()) -> Path:
    """One trial folder per TRIALS entry, as Ray Tune writes them."""
    for tid in TRIALS:
        config, rows = _rows(tid)
        folder = stage_dir / f"distill_student_{tid}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(config))
        # result.json: one JSON object per line (Python's json writes NaN / Infinity, as Ray does)
        if tid not in csv_only:
            (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        flat = pd.json_normalize(rows, sep="/")
        flat.to_csv(folder / "progress.csv", index=False)
    return stage_dir


def _analysis(stage_dir: Path):
    """What ExperimentAnalysis gives for the folder: its trials (id, config, last result,
    status, path) and each one's per-epoch rows."""
    trials, frames = [], {}
    for folder in sorted(stage_dir.iterdir()):
        tid = folder.name.rsplit("_", 1)[1]
        frame = load_frame(folder)
        last = {k: v for k, v in frame.iloc[-1].to_dict().items() if not k.startswith("config/")}
        trials.append(SimpleNamespace(trial_id=tid, config=json.loads((folder / "params.json").read_text()),
                                      last_result=last, status="TERMINATED" if last["done"] else "RUNNING",
                                      path=str(folder)))
        frames[tid] = frame
    return SimpleNamespace(trials=trials, trial_dataframes=frames)


class _Result:
    """A ray.tune.Result as the pipeline's stage record reads it (ResultGrid after fit)."""

    def __init__(self, folder: Path):
        self.metrics_dataframe = load_frame(folder)
        self.metrics = {k: v for k, v in self.metrics_dataframe.iloc[-1].to_dict().items()
                        if not k.startswith("config/")}
        self.config = json.loads((folder / "params.json").read_text())
        self.error, self.best_checkpoints, self.checkpoint, self.path = None, [], None, str(folder)


@pytest.fixture()
def stage_dir(tmp_path) -> Path:
    return _write_stage(tmp_path / "run" / DISTILL)


def test_the_reader_applies_the_outcome_rules_to_tunes_files(stage_dir):
    recs = {r.trial_id: r for r in record.records_of(_analysis(stage_dir), DISTILL)}
    a, b, c, d, f, u = (recs[k] for k in "abcdfu")
    assert (a.val_acc, a.best_epoch, a.epochs, a.params) == (0.8, 3, 4, 1000)  # the NaN epoch skipped
    assert a.best["val_loss"] == pytest.approx(0.2) and a.config["width"] == 100 and a.stage == DISTILL
    assert (b.val_acc, b.best_epoch, b.diverged) == (0.9, 2, True)
    assert b.scored and not b.candidate  # may be the stage's winner, never retrained
    assert (c.val_acc, c.diverged, c.candidate, c.params) == (0.0, True, False, 100)
    assert (d.val_acc, d.best_epoch) == (0.65, 3)  # the infinite value is no best epoch
    assert d.stopped_early and f.stopped_early and not a.stopped_early
    assert not b.stopped_early and not c.stopped_early  # a diverged trial stopped itself
    assert not u.ended and not u.stopped_early  # unfinished, not stopped early
    assert record.winner(recs.values()) is b
    assert [r.trial_id for r in record.ranked_distinct(recs.values())] == ["a", "d", "u", "f"]  # by epochs, then val_acc


def test_progress_csv_gives_the_same_record_as_result_json(tmp_path):
    """Ray falls back on progress.csv when result.json is missing: the same best epoch."""
    json_dir = _write_stage(tmp_path / "j" / DISTILL)
    csv_dir = _write_stage(tmp_path / "c" / DISTILL, csv_only=tuple(TRIALS))
    for tid in TRIALS:
        config = json.loads((json_dir / f"distill_student_{tid}" / "params.json").read_text())
        got = [record.from_frame(tid, config, load_frame(d / f"distill_student_{tid}"))
               for d in (json_dir, csv_dir)]
        assert [(r.val_acc, r.best_epoch, r.epochs, r.diverged, r.params) for r in got[:1]] == \
               [(r.val_acc, r.best_epoch, r.epochs, r.diverged, r.params) for r in got[1:]], tid
    assert load_frame(tmp_path) is None


def test_search_and_analysis_paths_give_the_same_answers(stage_dir, monkeypatch):
    """The manifest's stage record (pipeline, from the ResultGrid), the final stage's choice
    (from the folder) and the analysis table (Experiment) read one record of each trial."""
    from kdtune.analysis.experiment import Experiment
    from kdtune.search.record.manifest import Manifest
    from kdtune.search.stages.final_select import select

    folders = sorted(stage_dir.iterdir())
    stage = record.stage_record([record.from_result(_Result(f), DISTILL) for f in folders], objective("pareto"))
    manifest_rows = {row["trial_id"]: row for row in stage["trials"]}

    monkeypatch.setattr(record, "open_stage", lambda folder: _analysis(Path(folder)))
    Manifest.create(stage_dir.parent, {"max_epochs": 4}, {"name": "digits"}, STAGES)
    table = Experiment.open(stage_dir.parent).trials((DISTILL,)).set_index("trial_id")
    from_disk = record.read_stage(stage_dir)

    assert stage["trial_id"] == "b" and stage["metrics"]["val_acc"] == 0.9 and stage["epochs_run"] == 3
    assert set(manifest_rows) == set(table.index) == {r.trial_id for r in from_disk} == set(TRIALS)
    for tid, row in manifest_rows.items():
        shown = table.loc[tid]
        for key in ("val_acc", "params", "epochs", "stopped_early", "diverged"):
            if row[key] is None:
                assert pd.isna(shown[key]), (tid, key)
            else:
                assert shown[key] == row[key], (tid, key, shown[key], row[key])
    # The Pareto set: candidates only (b and c diverged), the same front from either path.
    assert [m["trial_id"] for m in stage["pareto_set"]] == ["a", "f"]
    assert [r.trial_id for r in objective("pareto").front(from_disk)] == ["a", "f"]
    # The final stage retrains the best candidate, not the diverged stage winner.
    chosen = select(from_disk, [], k=1, objective="accuracy", epochs=4)
    assert [(c["role"], c["source_trial"], c["search_val_acc"]) for c in chosen][:1] == [("distilled #1", "a", 0.8)]


def test_read_stage_without_a_snapshot_is_empty(tmp_path):
    assert record.read_stage(tmp_path / BASELINE) == []
    (tmp_path / BASELINE).mkdir()
    assert record.read_stage(tmp_path / BASELINE) == []  # no experiment_state yet
