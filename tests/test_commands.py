"""The `kdtune` console command (search/commands.py): it lists every command, hands the rest
of the command line to the chosen script's main, and the entry point is declared."""
import configparser
from pathlib import Path

import pytest

from kdtune.search import commands

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("search", "best", "report", "export", "tradeoffs", "importance", "curves"):
        assert f"\n  {name} " in out, name


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["train"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_subcommands_run_the_scripts_with_their_own_flags(small_search, tmp_path, capsys):
    assert commands.main(["best", str(small_search), "--top", "2", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "best_trials.md").read_text()
    assert "## distill" in table and "# Best trials" in table
    with pytest.raises(SystemExit) as exit_info:  # a flag only run_kd_search.py knows
        commands.main(["search", "--help"])
    assert exit_info.value.code == 0
    assert "--reduction-factor" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # the script's own bad-input path: one line, 2
        commands.main(["export", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "no such experiment folder" in capsys.readouterr().err


def test_every_command_module_has_a_main_and_the_entry_point_is_declared():
    import importlib

    for module, _summary in commands.COMMANDS.values():
        assert callable(importlib.import_module(module).main), module
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].strip() == "kdtune = kdtune.search.commands:main"
