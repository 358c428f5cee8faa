"""bench/rule_scale_probe.py: the signed rule depends on the scale, the others do not."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("rule_scale_probe")


def test_halving_the_estimate_changes_only_the_signed_rule(script):
    # One sample, 10 regions held for 10 time samples at 1, 0.8, 0.6, ..., 0: the Otsu
    # threshold of the normalised map is 0.405 at any scale, so the regions at 1, 0.8 and
    # 0.6 pass both rules at full scale; at half scale only the peak's raw 0.5 is above it
    # under the signed rule, while the scale-free rule and the signed rule at peak 1 keep 3.
    levels = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.0, 0.0, 0.0])
    estimate = np.repeat(levels[None, :, None], 10, axis=2)
    full = script.region_counts(estimate)
    half = script.region_counts(0.5 * estimate)
    assert full["peak"][0] == 1.0 and half["peak"][0] == 0.5
    assert full["signed"][0] == full["scale_free"][0] == full["signed_at_peak_1"][0] == 3
    assert half["signed"][0] == 1
    assert half["scale_free"][0] == 3 and half["signed_at_peak_1"][0] == 3


def test_dry_run_prints_one_row_per_configuration(script, tiny_run, capsys):
    script.main([str(tiny_run / "last.pt"), "--rows", "5/1/1,-5/1/1", "--n", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| checkpoint | row | peak |Ŝ|")
    assert len(lines) == 4 and "| 5/1/1 |" in lines[2] and "| -5/1/1 |" in lines[3]


def test_bad_input_is_one_clear_error(script, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        script.main([str(broken)])
    assert "cannot read checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(broken), "--rows", "5/1"])
    assert "--rows" in capsys.readouterr().err
