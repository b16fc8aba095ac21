"""The budget and resource options are declared once (search/input/schema.py): the flag, the
preset section, SearchSpec's default, the smoke cap and the range check all come from it."""
import dataclasses

import pytest
import yaml

from kdtune.search.input import schema
from kdtune.search.input.cli import build_parser, parse_args
from kdtune.search.input.errors import UsageError
from kdtune.search.input.preset_loader import SECTIONS
from kdtune.search.input.spec import SMOKE, SearchSpec
from kdtune.search.input.validate import preflight


def test_every_declared_option_is_a_flag_a_preset_key_and_a_spec_default():
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions}
    defaults = {f.name: f.default for f in dataclasses.fields(SearchSpec)}
    for o in schema.OPTIONS:
        assert o.name in flags and flags[o.name].option_strings == [o.flag] and flags[o.name].help == o.help
        assert o.name in SECTIONS[o.section]
        assert defaults[o.name] == o.default
        if o.smoke is not None:
            assert SMOKE[o.name] == o.smoke


@pytest.mark.parametrize("name, text, message", [
    ("reduction_factor", "1", "--reduction-factor: must be >= 2, got 1"),
    ("cpus_per_trial", "0", "--cpus-per-trial: must be > 0, got 0.0"),
    ("max_concurrent", "two", "--max-concurrent: expected a whole number, got 'two'"),
])
def test_a_flag_out_of_its_declared_range_is_one_usage_line(name, text, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args([schema.BY_NAME[name].flag, text])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_preset_value_out_of_range_names_the_flag(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"dataset": "digits", "search": {"reduction_factor": 1}}))
    spec, _ = parse_args(["--preset", str(preset), "--storage-path", str(tmp_path)])
    with pytest.raises(UsageError, match=r"--reduction-factor must be an integer >= 2, got 1"):
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
