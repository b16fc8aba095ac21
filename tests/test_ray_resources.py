"""Which Ray a search uses, and how much of it a lone teacher trial takes.

Which: --address, else $RAY_ADDRESS (`ray job submit`), else a private local Ray. A bare
ray.init() joins any head started on the machine (`ray start --head`, a colleague's cluster)
and dies with it; kdtune starts its own unless told otherwise.
"""
import pytest
import ray

from search import pipeline
from search.cli import parse_args


@pytest.fixture
def init_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(pipeline, "graceful_sigterm", lambda: None)  # keep pytest's own handler
    return calls


def _spec(tmp_path, *flags):
    spec, _ = parse_args(["--storage-path", str(tmp_path), *flags])
    return spec


def test_without_an_address_a_private_local_ray_is_started(tmp_path, monkeypatch, init_calls):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = _spec(tmp_path)
    assert spec.address is None
    assert pipeline.start_ray(spec) is True
    assert init_calls[0]["address"] == "local"


def test_ray_address_from_the_environment_is_used(tmp_path, monkeypatch, init_calls):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    spec = _spec(tmp_path)
    assert spec.address == "10.0.0.5:6379"
    pipeline.start_ray(spec)
    assert init_calls[0]["address"] == "10.0.0.5:6379"


def test_the_address_flag_wins_over_the_environment(tmp_path, monkeypatch, init_calls):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    pipeline.start_ray(_spec(tmp_path, "--address", "auto"))
    assert init_calls[0]["address"] == "auto"


def _nodes(*resources):
    return lambda: [{"Alive": True, "Resources": r} for r in resources] + [
        {"Alive": False, "Resources": {"CPU": 512.0, "GPU": 8.0}}]  # a dead node counts for nothing


@pytest.mark.parametrize("flags, nodes, expected", [
    # 2 students x 1 CPU at a time: the lone teacher takes both CPUs (and torch threads)
    (["--cpus-per-trial", "1", "--max-concurrent", "2"], [{"CPU": 2.0}], {"cpus": 2.0, "gpus": 0.0}),
    # never more than the largest node: a trial cannot span nodes
    (["--cpus-per-trial", "1", "--max-concurrent", "8"], [{"CPU": 2.0}, {"CPU": 4.0}], {"cpus": 4.0, "gpus": 0.0}),
    # never less than one student's share
    (["--cpus-per-trial", "2", "--max-concurrent", "1"], [{"CPU": 1.0}], {"cpus": 2.0, "gpus": 0.0}),
    # 4 students on quarters of a card: the teacher gets the whole card
    (["--cpus-per-trial", "1", "--max-concurrent", "4", "--gpus-per-trial", "0.25", "--address", "auto"],
     [{"CPU": 16.0, "GPU": 1.0}], {"cpus": 4.0, "gpus": 1.0}),
    (["--cpus-per-trial", "1", "--max-concurrent", "2", "--gpus-per-trial", "0.25", "--address", "auto"],
     [{"CPU": 16.0, "GPU": 1.0}], {"cpus": 2.0, "gpus": 0.5}),
    # whole GPUs per trial stay as asked
    (["--cpus-per-trial", "1", "--max-concurrent", "2", "--gpus-per-trial", "1", "--address", "auto"],
     [{"CPU": 16.0, "GPU": 4.0}], {"cpus": 2.0, "gpus": 1.0}),
])
def test_the_lone_teacher_trial_takes_what_the_concurrent_students_share(tmp_path, monkeypatch, flags,
                                                                          nodes, expected):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "nodes", _nodes(*nodes))
    assert pipeline.solo_trial_resources(_spec(tmp_path, *flags)) == expected
