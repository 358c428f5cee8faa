"""bench/step_cost.py (where a training step's time goes): a short run and its checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("step_cost")


def test_step_time_takes_optimizer_steps(script):
    layer = nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    seconds = script.step_time(layer, torch.ones(4, 3), repeat=2)
    assert seconds > 0 and not (layer.weight == before).any()  # 4 Adam steps moved it
    assert script.step_time(layer, torch.ones(4, 3), repeat=1, bf16=True) > 0


def test_fused_row_is_the_same_layer(script):
    fused = script.FusedBiGru(3, 4)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(fused(x), fused.gru(x)[0])


def test_short_run_prints_every_row_against_deepsif(script, capsys):
    assert script.main(["--threads", "1", "--repeat", "1", "--n-times", "16"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(script.rows(16, 16))  # header + one per row
    assert table[0].count("|") == 6  # what, then float32 and bfloat16 with their ratios
    assert table[1].startswith("| DeepSIF 'wide-matched' |") and "| 1.00 |" in table[1]
    assert any(row.startswith("| BiGRU 128 -> 2 x 256 (FAIR-ESI 'wide'), fused") for row in table)
    with pytest.raises(SystemExit):
        script.main(["--repeat", "0"])
