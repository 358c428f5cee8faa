"""bench/mmdf_init_check.py: the two initialisations, the dead-unit measure, a dry run."""

from __future__ import annotations

import pytest
import torch

from fairesi.models import build_model

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("mmdf_init_check")


def test_dead_units_and_the_all_zero_ratio(script, toy_head_model):
    torch.manual_seed(0)
    model = build_model("mmdf_esi", toy_head_model, "eeg+meg", 16, preset="tiny").eval()
    x, target = torch.randn(3, 80, 16), torch.randn(3, 50, 16)
    # Ours starts at the all-zero estimate: ratio exactly 1.
    ratio, dead = script.validate(model, x, target)
    assert ratio == pytest.approx(1.0) and 0.0 <= dead < 1.0
    with torch.no_grad():
        model.hidden.bias.fill_(-1e3)  # every pre-activation below zero
    assert script.validate(model, x, target)[1] == 1.0
    # PyTorch's defaults: conv biases and the output layer drawn again, not zero.
    script.pytorch_init(model)
    assert model.encoders[0].conv.bias.abs().sum() > 0
    assert model.output.weight.abs().sum() > 0
    assert script.validate(model, x, target)[0] != pytest.approx(1.0)


def test_dry_run_prints_every_row(script, capsys):
    script.main(
        ["--head-model", "toy", "--bank", "synthetic", "--preset", "tiny", "--n-times", "64",
         "--steps", "4", "--every", "2", "--pool", "16", "--n-val", "4", "--val-instants",
         "8", "--instants", "8", "--batch-size", "4", "--lrs", "1e-3"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("| pytorch | 0.001 |") == 3 and out.count("| ours | 0.001 |") == 3
    assert "| ours | 0.001 | 0 | 1.000 |" in out  # starts at the all-zero estimate
