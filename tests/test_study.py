"""Each search stage's Optuna study on disk, read back with Optuna's own tools; --warm-start."""
import json
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from kdtune.analysis import importance
from kdtune.search.stages import pipeline
from kdtune.search.tune import optuna_study as study
from kdtune.search.input.cli import parse_args
from kdtune.search.run_kd_search import main

# The flags of conftest's small_search that shape its search space (the warm start must match).
SPACE = ["--width", "16:64", "--depth", "1:2"]


def _manifest(exp: Path) -> dict:
    return json.loads((exp / "manifest.json").read_text())


def test_each_search_stage_has_its_study_with_every_trial(small_search):
    spec = _manifest(small_search)["spec"]
    for stage, samples in (("distill", spec["num_samples"]), ("baseline", spec["baseline_samples"])):
        loaded = optuna.load_study(study_name=f"kdtune-{stage}",
                                   storage=f"sqlite:///{small_search / stage / 'optuna.db'}")
        trials = loaded.get_trials(deepcopy=False)
        assert len(trials) == samples, [t.state for t in trials]
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        # What Ray ran is what Optuna holds: the same sampled learning rates, trial for trial.
        rows = [json.loads(p.read_text().splitlines()[-1])["config"]["lr"]
                for p in (small_search / stage).glob("*/result.json")]
        assert sorted(t.params["lr"] for t in trials) == pytest.approx(sorted(rows))
        assert {"lr", "width"} <= set(trials[0].params)
        if stage == "baseline":
            assert "alpha" not in trials[0].params  # the baseline searches no KD weight


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass


def test_optuna_dashboard_serves_the_study(small_search):
    import optuna_dashboard

    storage = optuna.storages.RDBStorage(study.storage_url(small_search / "distill"))
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as reply:
            studies = json.load(reply)["study_summaries"]
        names = {s["study_name"]: s for s in studies}
        assert "kdtune-distill" in names
        study_id = names["kdtune-distill"]["study_id"]
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30) as reply:
            detail = json.load(reply)
        assert len(detail["trials"]) == _manifest(small_search)["spec"]["num_samples"]
    finally:
        server.shutdown()
        server.server_close()


def test_importance_reads_the_study_and_says_how_many_trials(small_search, capsys):
    loaded = study.load_study(small_search / "distill", "distill")
    complete = loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert importance.main([str(small_search)]) == 0
    text = (small_search / "analysis" / "importance.md").read_text()
    assert f"the distill study's {len(complete)} COMPLETE trials of {len(loaded.trials)}" in text
    if len(complete) >= importance.MIN_TRIALS:
        table = pd.read_csv(small_search / "analysis" / "importance.csv")
        varied = {k for k in importance.PARAMS if len({t.params.get(k) for t in complete}) > 1}
        assert set(table[table["varied"]]["param"]) == varied
    else:
        assert "no importance computed" in text


def _warm_argv(source: Path, tmp: Path, name: str, *extra: str) -> list[str]:
    manifest = _manifest(source)
    return ["--preset", str(source.parent / "digits_grads.yaml"),
            *SPACE, "--warm-start", str(source), "--storage-path", str(tmp), "--name", name,
            "--teacher-checkpoint", manifest["stages"]["teacher"]["best_checkpoint"], *extra]


def test_warm_start_copies_the_finished_trials_into_the_new_studies(small_search, tmp_path):
    from kdtune.search.input.validate import preflight

    spec, _args = parse_args(_warm_argv(small_search, tmp_path, "warm", "--num-samples", "2", "--final-top-k", "1"))
    spec, _bundle = preflight(spec)  # same space: accepted
    source = study.load_study(small_search / "distill", "distill")
    finished = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    storage = pipeline.stage_storage(spec, tmp_path / "warm", "distill")
    searcher = pipeline.optuna_search(study.stage_space(spec, "distill", "teacher.pt"), seed=0,
                                      objective=spec.objective, max_concurrent=2, max_epochs=spec.max_epochs,
                                      storage=storage, study_name=study.study_name("distill"))
    config = searcher.suggest("first")  # the new search's first trial, asked with the copies in place
    assert 16 <= config["width"] <= 64

    seeded = study.load_study(tmp_path / "warm" / "distill", "distill")
    copies = [t for t in seeded.trials if "warm_start_from" in t.user_attrs]
    assert len(copies) == len(finished) and len(seeded.trials) == len(finished) + 1
    assert sorted(t.params["lr"] for t in copies) == sorted(t.params["lr"] for t in finished)
    assert sorted(t.value or -1 for t in copies) == sorted(t.value or -1 for t in finished)
    assert [t.state for t in seeded.trials][-1] == TrialState.RUNNING  # the one just asked for


def test_warm_start_from_another_space_is_refused(small_search, tmp_path, capsys):
    argv = _warm_argv(small_search, tmp_path, "other")
    argv[argv.index("16:64")] = "16:128"  # a wider width range than the source searched
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--warm-start" in err[0] and "different space" in err[0] and "width" in err[0], err
    assert not (tmp_path / "other").exists()
