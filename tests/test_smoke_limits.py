"""--smoke-test caps the budget of the preset, never a flag the user gave: `--smoke-test
--num-samples 6` runs 6 trials (it silently ran 2 before)."""
from kdtune.search.input.cli import parse_args
from kdtune.search.input.options import smoke_limits

SMOKE = {**smoke_limits()}  # the declared caps (search/input/options/)


def test_smoke_limits_cap_the_preset_but_a_given_flag_wins(tmp_path):
    spec, _ = parse_args(["--smoke-test", "--num-samples", "6", "--max-epochs", "5", "--teacher-epochs", "3",
                          "--subset", "512", "--storage-path", str(tmp_path)])
    assert spec.num_samples == 6 and spec.max_epochs == 5 and spec.subset == 512
    assert spec.teacher["epochs"] == 3
    # What the user did not give stays at the smoke limits.
    assert spec.baseline_samples == SMOKE["baseline_samples"] and spec.final_seeds == SMOKE["final_seeds"]
    assert spec.grace_period == SMOKE["grace_period"]


def test_smoke_test_alone_keeps_every_limit(tmp_path):
    spec, _ = parse_args(["--smoke-test", "--storage-path", str(tmp_path)])
    assert (spec.num_samples, spec.max_epochs, spec.subset, spec.teacher["epochs"]) == (
        SMOKE["num_samples"], SMOKE["max_epochs"], SMOKE["subset"], SMOKE["teacher_epochs"])
