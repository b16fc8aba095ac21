"""Reliability of the search service: trial faults, driver interrupts, divergence, unsafe
inputs and concurrent runs. Every scenario runs the real CLI as a subprocess on digits.

    ~/.venvs/kdtune/bin/python -m pytest -q tests/test_reliability.py

Budgets are tiny (few trials, few epochs) and at most 2 trials run at once per Ray
(~840 MiB per trial actor: docs/architecture.md). Each scenario polls the experiment folder (manifest
stage status, trial result.json rows) with a timeout and kills what it started in `finally`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
import pytest
import ray
import torch
import yaml

from kdtune.search.run_kd_search import main

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "search" / "run_kd_search.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0",
       "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0", "CUDA_VISIBLE_DEVICES": ""}
# Slow-enough students to be hit mid-run: a CIFAR ResNet-20 x24 on 8x8 digits, ~1 s an epoch.
SLOW_STUDENTS = ["--students", "cifar_resnet", "--depth", "20", "--width", "24"]


# ---- helpers ---------------------------------------------------------------------------------
def _budget(samples: int, epochs: int, baseline: int = 1, concurrent: int = 2, final_seeds: int = 0) -> list[str]:
    """Trial budget flags; grace period == max epochs, so ASHA has no rung and stops nothing.
    No final stage unless asked for (final_seeds > 0: it retrains the baseline and the best one)."""
    return ["--num-samples", str(samples), "--baseline-samples", str(baseline), "--max-epochs", str(epochs),
            "--grace-period", str(epochs), "--reduction-factor", "2", "--max-concurrent", str(concurrent),
            "--final-seeds", str(final_seeds), "--final-top-k", "1"]


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows


def _trial_dirs(stage_dir: Path) -> list[Path]:
    if not stage_dir.is_dir():
        return []
    return sorted(p for p in stage_dir.iterdir() if p.is_dir() and (p / "result.json").exists())


def _every_trial(stage_dir: Path) -> list[Path]:
    """`_trial_dirs` for checks that loop over a finished stage: none is a failure, so the
    loop cannot pass without checking anything."""
    dirs = _trial_dirs(stage_dir)
    assert dirs, f"no trial folders with results in {stage_dir}"
    return dirs


def _manifest(exp: Path) -> dict:
    try:
        return json.loads((exp / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):  # not written yet (writes are atomic renames)
        return {}


def _stage_status(exp: Path, stage: str) -> str | None:
    return _manifest(exp).get("stages", {}).get(stage, {}).get("status")


def _as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test runner started as a background job (`cmd &`)
    passes SIGINT on *ignored*, and Python then never raises KeyboardInterrupt for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """One CLI process in its own session (so `finally` can end it and whatever it spawned)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        self._fh = open(log, "w")  # a file, not a pipe: Ray's chatter must never block the driver
        self.proc = subprocess.Popen([sys.executable, str(CLI), *args], cwd=ROOT, env=env or ENV, stdout=self._fh,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=_as_in_a_terminal)

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
        """Poll `predicate` until it returns something truthy; fail if the run ends or time runs out."""
        end = time.time() + timeout
        while time.time() < end:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"run exited with {self.proc.returncode} before {what}:\n{self.output()[-3000:]}")
            time.sleep(poll)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.output()[-3000:]}")

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run did not end within {timeout:.0f} s:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        """Always called in `finally`: end the run (gracefully first) and its process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started, by its id
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=30)
        self._fh.close()


def _cli(tmp: Path, name: str, *args: str) -> list[str]:
    return ["--storage-path", str(tmp), "--name", name, *args]


def _resume(tmp: Path, name: str, log: Path, timeout: float = 300, extra: tuple[str, ...] = ()) -> str:
    run = Run(["--resume", "--storage-path", str(tmp), "--name", name, *extra], log)
    try:
        code = run.finish(timeout)
        out = run.output()
    finally:
        run.stop()
    assert code == 0, out[-4000:]
    return out


def _iterations(trial: Path) -> list[int]:
    return [int(row["training_iteration"]) for row in _rows(trial)]


def _assert_continuous(trial: Path, epochs: int) -> None:
    """Ran every epoch exactly once: a trial restarted from scratch would report 1 again."""
    its = _iterations(trial)
    assert its == list(range(1, epochs + 1)), (trial.name, its)
    assert [int(row["epoch"]) for row in _rows(trial)] == its, trial.name


def _assert_all_done(exp: Path, teacher: int, baseline: int, distill: int) -> dict:
    manifest = _manifest(exp)
    for stage in ("teacher", "baseline", "distill"):
        assert manifest["stages"][stage]["status"] == "done", (stage, manifest["stages"][stage])
    counts = {stage: len(_trial_dirs(exp / stage)) for stage in ("teacher", "baseline", "distill")}
    # What an uninterrupted run of these flags produces: 1 teacher (0 when adopted), the budgets.
    assert counts == {"teacher": teacher, "baseline": baseline, "distill": distill}, counts
    assert len(manifest["stages"]["distill"]["trials"]) == distill
    assert len(manifest["stages"]["baseline"]["trials"]) == baseline
    assert (exp / "summary.md").is_file()
    return manifest


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> str:
    """A small real kdtune teacher for digits (as the digits preset splits it), made in-process:
    scenarios that are not about the teacher stage adopt it and skip that stage."""
    from kdtune.trainables.reporting import local_session
    from kdtune.trainables.teacher import train_teacher

    root = tmp_path_factory.mktemp("teacher")
    with local_session(root=str(root)) as rec:
        train_teacher({"dataset": "digits", "val_fraction": 0.2, "model": "mlp", "depth": 1, "width": 64,
                       "epochs": 2})
    path = Path(rec.checkpoints[-1]) / "checkpoint.pt"
    assert path.is_file()
    return str(path)


# ---- trial faults ----------------------------------------------------------------------------
@pytest.mark.ray
def test_sigkilled_trial_worker_is_retried_from_its_checkpoint(tmp_path, teacher_ckpt):
    epochs = 4
    args = _cli(tmp_path, "fault", "--teacher-checkpoint", teacher_ckpt, "--max-failures", "2",
                *SLOW_STUDENTS, *_budget(samples=2, epochs=epochs))
    exp = tmp_path / "fault"
    run = Run(args, tmp_path / "fault.log")
    try:
        def running_trial():
            # A distill trial with a checkpointed epoch and >= 2 still to go: kill its worker.
            for trial in _trial_dirs(exp / "distill"):
                rows = _rows(trial)
                if 1 <= len(rows) <= epochs - 2 and not rows[-1].get("done"):
                    return trial, rows[-1]
            return None

        trial, last = run.wait_for(running_trial, 300, "a distill trial in mid-training")
        victim = int(last["pid"])
        os.kill(victim, signal.SIGKILL)
        code = run.finish(300)
        out = run.output()
    finally:
        run.stop()
    assert code == 0, out[-4000:]
    _assert_all_done(exp, teacher=0, baseline=1, distill=2)
    rows = _rows(trial)
    pids = [row["pid"] for row in rows]
    assert victim in pids and pids[-1] != victim, f"{trial.name} was never run again by another worker: {pids}"
    _assert_continuous(trial, epochs)  # iterations 1..N once each: resumed, not restarted
    last_killed = max(i for i, pid in enumerate(pids) if pid == victim)
    assert rows[last_killed + 1]["training_iteration"] == rows[last_killed]["training_iteration"] + 1, \
        "the retried trial did not continue from its last checkpoint"
    for other in _every_trial(exp / "distill"):
        _assert_continuous(other, epochs)
    trials = _manifest(exp)["stages"]["distill"]["trials"]
    assert all(t["error"] is None and t["epochs"] == epochs for t in trials), trials


# ---- driver interrupts -----------------------------------------------------------------------
@pytest.mark.ray
def test_sigterm_during_teacher_stage_then_resume_continues_the_teacher(tmp_path):
    # SIGTERM (cluster schedulers, `kill`) takes the graceful Ctrl-C path, also after ray.init
    # replaced the driver's handler: state saved, exit 130, the resume hint.
    teacher_epochs = 8
    args = _cli(tmp_path, "tcut", "--teacher", "resnet20", "--teacher-epochs", str(teacher_epochs),
                "--width", "16:32", "--depth", "1", *_budget(samples=1, epochs=1))
    exp = tmp_path / "tcut"
    run = Run(args, tmp_path / "tcut.log")
    try:
        def teacher_mid_run():
            trials = _trial_dirs(exp / "teacher")
            return trials and 2 <= len(_rows(trials[0])) <= teacher_epochs - 3

        run.wait_for(teacher_mid_run, 300, "the teacher trial in mid-training")
        run.proc.send_signal(signal.SIGTERM)
        code = run.finish(120)
        out = run.output()
    finally:
        run.stop()
    assert code == 130, f"exit {code} after SIGTERM:\n{out[-4000:]}"
    assert "interrupted during the teacher stage" in out and "--resume" in out, out[-2000:]
    assert _stage_status(exp, "teacher") == "interrupted"
    assert not _trial_dirs(exp / "baseline"), "a later stage started before the teacher finished"
    (teacher_trial,) = _trial_dirs(exp / "teacher")
    before = _rows(teacher_trial)
    assert len(before) < teacher_epochs

    _resume(tmp_path, "tcut", tmp_path / "tcut-resume.log")
    manifest = _assert_all_done(exp, teacher=1, baseline=1, distill=1)
    after = _rows(teacher_trial)
    assert after[: len(before)] == before
    _assert_continuous(teacher_trial, teacher_epochs)  # resumed, not retrained from epoch 1
    assert after[len(before)]["pid"] != before[-1]["pid"]  # really another process carried on
    assert manifest["stages"]["distill"]["config"]["teacher_checkpoint"] == manifest["stages"]["teacher"][
        "best_checkpoint"]


def _interrupt_mid_stage(tmp_path: Path, name: str, stage: str, args: list[str], epochs: int,
                         wait_s: float) -> tuple[Path, dict]:
    """Run `args`, SIGINT it once a `stage` trial has finished `epochs` beside a running one,
    check the run says it was interrupted there; (experiment dir, {finished trial: its rows})."""
    exp = tmp_path / name
    run = Run(args, tmp_path / f"{name}-{stage}.log")
    try:
        def one_finished_one_running():
            lengths = [len(_rows(t)) for t in _trial_dirs(exp / stage)]
            return epochs in lengths and any(1 <= n < epochs for n in lengths)

        run.wait_for(one_finished_one_running, wait_s, f"a finished {stage} trial beside a running one")
        run.proc.send_signal(signal.SIGINT)
        code = run.finish(120)
        out = run.output()
    finally:
        run.stop()
    assert code == 130, out[-4000:]
    assert "--resume" in out and f"interrupted during the {stage} stage" in out, out[-2000:]
    assert _stage_status(exp, stage) == "interrupted"
    finished = {t.name: _rows(t) for t in _trial_dirs(exp / stage) if len(_rows(t)) == epochs}
    assert finished
    return exp, finished


@pytest.mark.ray
def test_sigint_during_distill_then_final_stage_each_resume_reruns_no_finished_trial(tmp_path, teacher_ckpt):
    """One run interrupted twice (one run, not two, for the suite's time): Ctrl-C while a
    distill trial has finished beside a running one; `--resume`, Ctrl-C again while a final
    retraining run has finished beside a running one; `--resume` to the end."""
    epochs, samples, seeds = 3, 3, 2
    args = _cli(tmp_path, "cut", "--teacher-checkpoint", teacher_ckpt, *SLOW_STUDENTS,
                *_budget(samples=samples, epochs=epochs, final_seeds=seeds))
    exp, finished = _interrupt_mid_stage(tmp_path, "cut", "distill", args, epochs, wait_s=300)
    _, finished_final = _interrupt_mid_stage(tmp_path, "cut", "final",
                                             ["--resume", "--storage-path", str(tmp_path), "--name", "cut"],
                                             epochs, wait_s=400)
    assert _stage_status(exp, "distill") == "done"
    _resume(tmp_path, "cut", tmp_path / "cut-resume.log")

    _assert_all_done(exp, teacher=0, baseline=1, distill=samples)
    for trial in _every_trial(exp / "distill"):
        # Every epoch once: no trial restarted, and none reports the epoch in flight at the
        # interrupt twice (search/tune/result_loggers.py).
        _assert_continuous(trial, epochs)
        if trial.name in finished:
            assert _rows(trial) == finished[trial.name], f"finished trial {trial.name} was run again"
    # The Optuna study on disk continued too: one trial per Ray trial, none left RUNNING, no
    # duplicate from the session that was interrupted.
    study = optuna.load_study(study_name="kdtune-distill", storage=f"sqlite:///{exp / 'distill' / 'optuna.db'}")
    assert len(study.trials) == samples, [t.state for t in study.trials]
    assert all(t.state.is_finished() for t in study.trials), [t.state for t in study.trials]

    final = _manifest(exp)["stages"]["final"]
    assert final["status"] == "done"
    trials = _trial_dirs(exp / "final")
    assert len(trials) == 3 * seeds  # the baseline, the distilled config and its twin, each over 2 seeds
    for trial in trials:
        _assert_continuous(trial, epochs)  # resumed, not restarted; each epoch once
        if trial.name in finished_final:
            assert _rows(trial) == finished_final[trial.name], f"finished trial {trial.name} was run again"
        assert "test_acc" in _rows(trial)[-1]
    assert [len(r["runs"]) for r in final["results"]] == [seeds, seeds, seeds]
    assert all(run["test_acc"] is not None for r in final["results"] for run in r["runs"])
    assert final["results"][1]["kd_gain_test"]["low"] is not None
    assert "## Final stage" in (exp / "summary.md").read_text()


# ---- numerical faults ------------------------------------------------------------------------
@pytest.mark.ray
def test_diverging_trials_are_recorded_and_the_search_finishes(tmp_path, teacher_ckpt):
    # lr 1e4 on an MLP overflows in the first epoch (lr 10 does not: BatchNorm absorbs it).
    samples = 2
    args = _cli(tmp_path, "nan", "--teacher-checkpoint", teacher_ckpt, "--lr", "10000", "--depth", "1",
                "--width", "16:32", *_budget(samples=samples, epochs=2))
    run = Run(args, tmp_path / "nan.log")
    try:
        code = run.finish(300)
        out = run.output()
    finally:
        run.stop()
    assert code == 0, out[-4000:]
    exp = tmp_path / "nan"
    manifest = _assert_all_done(exp, teacher=0, baseline=1, distill=samples)
    for trial in _every_trial(exp / "distill"):
        last = _rows(trial)[-1]
        assert last["diverged"] == 1 and last["val_acc"] == 0.0, (trial.name, last)
        assert "diverged at epoch" in last["stop_reason"], last
    rows = manifest["stages"]["distill"]["trials"]
    assert all(r["diverged"] and not r["stopped_early"] and r["error"] is None for r in rows), rows
    summary = (exp / "summary.md").read_text()
    assert f"Distillation trials: {samples}, stopped early by ASHA: 0, diverged: {samples}." in summary, summary


# ---- untrusted files are data, never code ----------------------------------------------------
class _Exploit:
    """Unpickling this runs a shell command: what a hostile checkpoint.pt would carry."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class _Payload:  # a plain class instance: not weights-only data either
    pass


def _checkpoint_with(tmp: Path, name: str, obj) -> str:
    path = tmp / name / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"format": "kdtune-checkpoint", "version": 1, "model_spec": {}, "dataset": {}, "config": {},
                "state_dict": {}, "epoch": 1, "x": obj}, path)
    return str(path)


@pytest.mark.parametrize("kind", ["reduce-os-system", "callable", "class-instance"])
def test_teacher_checkpoint_with_pickled_code_is_refused_unexecuted(kind, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    obj = {"reduce-os-system": _Exploit(sentinel), "callable": os.system, "class-instance": _Payload()}[kind]
    ckpt = _checkpoint_with(tmp_path, kind, obj)
    storage = tmp_path / "storage"
    code = main(["--storage-path", str(storage), "--teacher-checkpoint", ckpt])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "--teacher-checkpoint" in err and "not a kdtune checkpoint" in err, err
    assert not sentinel.exists(), "unpickling the checkpoint ran its code"
    assert not ray.is_initialized()
    assert not storage.exists() or not any(storage.iterdir()), "something ran: the storage path was written"
    if kind == "reduce-os-system":  # control: the file really is hostile to a full unpickle
        torch.load(ckpt, weights_only=False)
        assert sentinel.exists()


def test_preset_with_python_tag_is_refused_unexecuted(tmp_path):
    sentinel = tmp_path / "pwned"
    preset = tmp_path / "evil.yaml"
    preset.write_text(f'dataset: digits\nseed: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    storage = tmp_path / "storage"
    proc = subprocess.run([sys.executable, str(CLI), "--preset", str(preset), "--storage-path", str(storage)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and "not valid YAML" in proc.stderr, proc.stderr
    assert not sentinel.exists(), "the preset's python tag was executed"
    assert not storage.exists() or not any(storage.iterdir())
    yaml.unsafe_load(preset.read_text())  # control: the tag does run under a full YAML loader
    assert sentinel.exists()


# ---- concurrent runs -------------------------------------------------------------------------
def _foreign_datasets_env(folder: Path) -> dict[str, str]:
    """ENV with a foreign top-level package called `datasets` (as Hugging Face's is) first on the
    path of the driver and, through the inherited environment, of every Ray worker."""
    package = folder / "datasets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Not kdtune\'s: a stand-in for Hugging Face datasets."""\nFOREIGN = True\n')
    return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), ENV.get("PYTHONPATH")]))}


@pytest.mark.ray
def test_two_concurrent_runs_in_one_storage_path_do_not_interfere(tmp_path):
    """Also: the right-hand run has a foreign `datasets` package first on its path (kdtune's
    own code is kdtune.datasets, so it must not care)."""
    names = ("left", "right")
    envs = {"left": ENV, "right": _foreign_datasets_env(tmp_path.parent / f"{tmp_path.name}-foreign")}
    runs = []
    try:
        for name in names:
            # one trial each: 2 runs on 2 cores; the stages compared are the searches' (no final)
            runs.append(Run(_cli(tmp_path, name, "--smoke-test", "--max-concurrent", "1", "--seed", str(len(runs)),
                                 "--final-seeds", "0"), tmp_path / f"{name}.log", env=envs[name]))
        codes = [run.finish(400) for run in runs]
        outs = [run.output() for run in runs]
    finally:
        for run in runs:
            run.stop()
    for name, code, out in zip(names, codes, outs):
        assert code == 0, f"{name} exited {code}:\n{out[-4000:]}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(names)
    trial_ids = {}
    for name in names:
        exp = tmp_path / name
        manifest = _assert_all_done(exp, teacher=1, baseline=2, distill=2)
        assert manifest["spec"]["name"] == name
        assert f"# kdtune run `{name}`" in (exp / "summary.md").read_text()
        ids = set()
        for stage in ("teacher", "baseline", "distill"):
            info = manifest["stages"][stage]
            assert Path(info["path"]) == exp / stage
            assert Path(info["best_checkpoint"]).is_relative_to(exp), (name, stage, info["best_checkpoint"])
            for trial in _every_trial(exp / stage):  # every row in a run's folder is that trial's own
                assert all(trial.name.endswith("_" + r["trial_id"]) for r in _rows(trial)), trial
                ids |= {r["trial_id"] for r in _rows(trial)}
            assert {r["trial_id"] for r in info.get("trials", [])} <= ids
        trial_ids[name] = ids
        teacher_ckpt = manifest["stages"]["teacher"]["best_checkpoint"]
        for trial in _every_trial(exp / "distill"):
            params = json.loads((trial / "params.json").read_text())
            assert params["teacher_checkpoint"] == teacher_ckpt, "a run distilled from the other run's teacher"
    assert not trial_ids["left"] & trial_ids["right"]
