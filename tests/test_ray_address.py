"""Which Ray a search uses: --address, else $RAY_ADDRESS (`ray job submit`), else a private one.

A bare ray.init() joins any head started on the machine (`ray start --head`, a colleague's
cluster) and dies with it; kdtune starts its own unless told otherwise.
"""
import pytest
import ray

from kdtune.search.stages import pipeline
from kdtune.search.input.cli import parse_args


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
