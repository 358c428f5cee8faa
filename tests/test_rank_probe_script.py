"""bench/rank_probe.py: the rank oracle projects the true sources onto the top-k
subspace of the training targets, and a network's head bounds the rank of its output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairesi.data import SimConfig
from fairesi.experiment import synthesizer
from fairesi.models.fair_esi import FairEsi, FairEsiConfig

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("rank_probe")


def test_top_subspace_is_the_leading_eigenvectors(script):
    # By hand: diag(1, 5, 3) -> the top two eigenvectors are e2 and e3.
    basis = script.top_subspace(torch.diag(torch.tensor([1.0, 5.0, 3.0], dtype=torch.float64)), 2)
    projector = basis @ basis.T
    torch.testing.assert_close(projector, torch.diag(torch.tensor([0.0, 1.0, 1.0])).double())


def test_second_moment_sums_the_training_targets(script):
    data = SimConfig(modality="meg", n_times=32, n_samples=96, protocol="paper")
    synth = synthesizer(data, head_model="toy", bank="synthetic", seed=3)
    moment = script.second_moment(synth, 10, batch=4)
    s = synth.batch("train", torch.arange(10)).target.double()
    torch.testing.assert_close(moment, sum(t @ t.T for t in s))


def test_head_subspace_has_the_rank_of_the_bigru(script):
    config = FairEsiConfig.preset("tiny", n_channels=12, n_regions=40, n_times=32, gru_hidden=6)
    basis = script.head_subspace(FairEsi(config))
    assert basis.shape == (40, 12)  # 2 * gru_hidden directions
    torch.testing.assert_close(basis.T @ basis, torch.eye(12, dtype=torch.float64))


def test_full_rank_reproduces_the_truth_and_low_rank_loses_precision(script, capsys):
    script.main(["--head-model", "toy", "--bank", "synthetic", "--n", "8", "--n-fit", "64",
                 "--ranks", "2,1000", "--n-times", "32", "--threads", "1"])  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if "rank oracle" in line]
    assert len(lines) == 2
    low, full = (float(line.split("|")[4].split("±")[0]) for line in lines)
    assert full == pytest.approx(100.0)
    assert low < full


def test_bad_ranks_are_refused(script):
    with pytest.raises(SystemExit):
        script.main(["--ranks", "0"])


def test_a_checkpoint_is_scored_beside_its_head_subspace(script, capsys):
    ckpt = str(Path(__file__).parent / "data" / "checkpoint_v1_tiny.pt")
    base = ["--head-model", "toy", "--bank", "synthetic", "--protocol", "strict", "--n", "8",
            "--n-fit", "32", "--ranks", "4", "--threads", "1", "--checkpoint", ckpt]  # fmt: skip
    script.main([*base, "--n-times", "64"])
    out = capsys.readouterr().out
    assert "| network |" in out and "truth on the network's head (k = " in out
    with pytest.raises(SystemExit):  # the checkpoint takes 64 samples per trial
        script.main([*base, "--n-times", "32"])
