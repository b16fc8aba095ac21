"""The run options are declared once (search/input/options/, the Option of search/input/schema.py):
the flag, the preset key, SearchSpec's field and default, the smoke cap, the resume rule and
the range check all come from that table."""
import dataclasses
import json

import pytest
import yaml

from kdtune.search.input import options
from kdtune.search.input.cli import build_parser, parse_args
from kdtune.search.input.errors import UsageError
from kdtune.search.input.preset_loader import sections
from kdtune.search.input.schema import Option
from kdtune.search.input.spec import SearchSpec
from kdtune.search.input.validate import preflight, resolve_resume
from kdtune.search.record.manifest import Manifest
from kdtune.search.run_kd_search import main


def _preset(tmp_path, data: dict) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ------------------------------------------------------------------ (a) the table is the CLI
def test_every_argparse_flag_is_a_declared_option_and_the_reverse():
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    table = options.by_name()
    assert [a.dest for a in actions] == [o.name for o in options.OPTIONS]  # every flag, in the table's order
    for action in actions:
        o = table[action.dest]
        assert action.option_strings[0] == o.flag and action.help == o.help_text()
        assert action.default is None  # "not given" falls back to the preset


def test_every_declared_option_is_a_flag_a_preset_key_and_a_spec_default():
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions}
    defaults = {f.name: f.default for f in dataclasses.fields(SearchSpec)}
    known = sections()
    for o in options.OPTIONS:
        assert o.name in flags and flags[o.name].option_strings[0] == o.flag and flags[o.name].help == o.help_text()
        if o.preset is None:  # command line only: this session's settings, never a preset's
            assert o.name not in known
        else:
            head, *rest = o.preset_parts
            assert head in known, o.name
            assert known[head] is None or rest[0] in known[head], o.name
        if not o.in_dict_section:
            assert defaults[o.name] == o.default


def test_every_preset_key_of_an_option_reaches_the_spec(tmp_path):
    """A number or choice set in a preset (top level, search: or resources:) is the spec's value
    (as build_spec merges it: hardware.fit_to_machine may lower a preset's resources afterwards)."""
    from kdtune.search.input.preset_loader import load_preset
    from kdtune.search.input.spec import build_spec

    for o in options.OPTIONS:
        if o.preset is None or o.in_dict_section or not (o.choices or o.kind in (int, float)):
            continue
        value = next(c for c in o.choices if c != o.default) if o.choices else (
            o.kind((o.minimum or 0) + 1) if o.maximum is None else o.kind((o.minimum + o.maximum) / 2))
        head, *rest = o.preset_parts
        data = {"dataset": "digits", head: {rest[0]: value} if rest else value}
        spec = build_spec(load_preset(_preset(tmp_path, data)), "p", {})
        assert o.read(spec) == value, o.name


def test_smoke_test_caps_every_option_that_declares_a_cap(tmp_path):
    spec, _ = parse_args(["--smoke-test", "--storage-path", str(tmp_path)])
    capped = [o for o in options.OPTIONS if o.smoke is not None]
    assert capped and all(o.read(spec) <= o.smoke for o in capped)
    plain, _ = parse_args(["--storage-path", str(tmp_path)])
    assert any(o.read(plain) is None or o.read(plain) > o.smoke for o in capped)  # the caps did something


@pytest.mark.parametrize("name, text, message", [
    ("reduction_factor", "1", "--reduction-factor: must be >= 2, got 1"),
    ("cpus_per_trial", "0", "--cpus-per-trial: must be > 0, got 0.0"),
    ("max_concurrent", "two", "--max-concurrent: expected a whole number, got 'two'"),
    ("val_fraction", "1", "--val-fraction: must be in (0, 1), got 1.0"),
    ("max_failures", "-1", "--max-failures: must be >= 0, got -1"),
    ("decode_workers", "0", "--decode-workers: must be >= 1, got 0"),
])
def test_a_flag_out_of_its_declared_range_is_one_usage_line(name, text, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args([options.by_name()[name].flag, text])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("data, message", [
    ({"search": {"reduction_factor": 1}}, r"--reduction-factor must be an integer >= 2, got 1"),
    ({"seed": 1.5}, r"--seed must be an integer, got 1.5"),
    ({"val_fraction": 1.5}, r"--val-fraction must be in \(0, 1\), got 1.5"),
    ({"teacher": {"model": "mlp", "epochs": 0}}, r"--teacher-epochs must be an integer >= 1, got 0"),
    ({"max_params": 0}, r"--max-params must be an integer >= 1, got 0"),
])
def test_a_preset_value_out_of_range_names_the_flag(data, message, tmp_path):
    spec, _ = parse_args(["--preset", _preset(tmp_path, {"dataset": "digits", **data}), "--storage-path", str(tmp_path)])
    with pytest.raises(UsageError, match=message):
        preflight(spec)


def test_hardware_fitting_is_a_step_after_the_spec_is_built(tmp_path, monkeypatch):
    """build_spec merges what the user and the preset said; fit_to_machine (parse_args calls
    it) fits the preset's resources to this machine, never a flag the user gave."""
    from kdtune.search.input import hardware
    from kdtune.search.input.spec import build_spec

    monkeypatch.setattr(hardware, "local_gpus", lambda: 0)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    preset = {"dataset": "digits", "resources": {"gpus_per_trial": 1, "cpus_per_trial": 8}}
    spec = build_spec(preset, "big", {})
    assert (spec.gpus_per_trial, spec.cpus_per_trial) == (1, 8)  # as the preset said
    fitted = hardware.fit_to_machine(spec, given=set())
    assert (fitted.gpus_per_trial, fitted.cpus_per_trial) == (0, 2)
    kept = hardware.fit_to_machine(build_spec(preset, "big", {"cpus_per_trial": 4.0}), given={"cpus_per_trial"})
    assert kept.cpus_per_trial == 4.0  # the user's flag: validate refuses it if impossible
    assert hardware.fit_to_machine(dataclasses.replace(spec, address="auto"), set()).gpus_per_trial == 1


# ------------------------------------------------------------------ (b) the resume rule
@pytest.mark.parametrize("flag, value", [("--seed", "2"), ("--teacher-epochs", "3"), ("--import", "x.py"),
                                         ("--tracker", "mlflow"), ("--smoke-test", None), ("--preset", "mnist")])
def test_a_flag_that_changes_the_run_is_refused_with_resume_naming_it(flag, value, tmp_path, capsys):
    argv = ["--resume", "--name", "r", "--storage-path", str(tmp_path), flag, *([value] if value else [])]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"; {flag} would change it" in line
    assert "only --storage-path, --name, --address, --max-failures and --verbose go with --resume" in line


def test_the_resume_safe_flags_pass_and_reach_the_resumed_spec(tmp_path):
    stored, _ = parse_args(["--name", "r", "--storage-path", str(tmp_path), "--num-samples", "5", "--seed", "3"])
    Manifest.create(tmp_path / "r", stored.to_dict(), {})
    spec, args = parse_args(["--resume", "--name", "r", "--storage-path", str(tmp_path), "--address", "auto",
                             "--max-failures", "5", "--verbose"])
    resumed = resolve_resume(spec, name_given=True)
    assert (resumed.address, resumed.max_failures, resumed.verbose, resumed.resume) == ("auto", 5, True, True)
    assert (resumed.num_samples, resumed.seed) == (5, 3)  # what it computes: the run's own
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["spec"]["max_failures"] == 2


# ------------------------------------------------------------------ (c) one row, every use
TOY = Option("toy_knob", int, 5, "search.toy_knob", "a knob only this test declares", group="toy",
             minimum=2, smoke=3)


@pytest.fixture
def toy_table(monkeypatch):
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, TOY))


def test_a_new_option_is_a_flag_a_preset_key_a_smoke_cap_and_a_range_check(toy_table, tmp_path, capsys):
    storage = ["--storage-path", str(tmp_path)]
    (action,) = [a for a in build_parser()._actions if a.option_strings == ["--toy-knob"]]
    assert action.help == "a knob only this test declares" and "--toy-knob TOY_KNOB" in build_parser().format_help()
    assert parse_args(storage)[0].toy_knob == 5  # its default
    assert parse_args([*storage, "--toy-knob", "7"])[0].toy_knob == 7  # the flag
    preset = _preset(tmp_path, {"dataset": "digits", "search": {"toy_knob": 9}})
    assert parse_args([*storage, "--preset", preset])[0].toy_knob == 9  # the preset key
    assert parse_args([*storage, "--preset", preset, "--toy-knob", "4"])[0].toy_knob == 4  # flag over preset
    assert parse_args([*storage, "--preset", preset, "--smoke-test"])[0].toy_knob == 3  # the smoke cap
    assert parse_args([*storage, "--preset", preset, "--smoke-test", "--toy-knob", "8"])[0].toy_knob == 8
    with pytest.raises(SystemExit) as exit_:  # the range, when parsed
        parse_args([*storage, "--toy-knob", "1"])
    assert exit_.value.code == 2 and "--toy-knob: must be >= 2, got 1" in capsys.readouterr().err
    low, _ = parse_args([*storage, "--preset", _preset(tmp_path, {"dataset": "digits", "search": {"toy_knob": 1}})])
    with pytest.raises(UsageError, match=r"--toy-knob must be an integer >= 2, got 1"):  # a preset's value
        preflight(low)
    with pytest.raises(UsageError, match=r"--toy-knob would change it"):  # resume-unsafe by default
        parse_args([*storage, "--resume", "--name", "r", "--toy-knob", "4"])
    assert "toy_knob" not in options.by_name() or "toy_knob" in sections()["search"]


def test_the_bundled_table_knows_no_toy_option():
    """The fixture above extends the table for its test only."""
    with pytest.raises(SystemExit):
        parse_args(["--toy-knob", "4"])
    assert "toy_knob" not in sections()["search"]


def test_a_spec_pickles_by_name():
    """Ray ships specs between processes: the table-built class is found as spec.SearchSpec."""
    import pickle

    spec, _ = parse_args(["--num-samples", "4"])
    assert type(spec) is SearchSpec and pickle.loads(pickle.dumps(spec)) == spec
