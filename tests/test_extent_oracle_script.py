"""bench/extent_oracle.py: the growth oracle is the target where the growth is known, and
the membership frequency of the paper protocol's random outer rings otherwise."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from fairesi.data import SimConfig
from fairesi.experiment import synthesizer

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("extent_oracle")


def toy_synth(protocol, growth=None):
    data = SimConfig(modality="meg", n_times=64, n_sources=1, n_rings=2, n_samples=96,
                     protocol=protocol, patch_growth=growth)  # fmt: skip
    return synthesizer(data, head_model="toy", bank="synthetic", seed=3)


def test_strict_full_rings_make_the_oracle_the_target(script):
    synth = toy_synth("strict")
    index = torch.arange(6)
    batch = synth.batch("test", index)
    oracle = script.growth_oracle(synth, index, batch.target, batch.centres, draws=4)
    torch.testing.assert_close(oracle, batch.target.double(), rtol=1e-6, atol=1e-7)


def test_candidates_are_replaced_by_their_frequency(script):
    synth = toy_synth("paper")
    index = torch.arange(6)
    batch = synth.batch("test", index)
    p = script.membership_probability(synth, batch.centres, draws=1)
    # By hand: the fraction of the centre's candidates holding each table entry.
    for k in range(6):
        centre = int(batch.centres[k, 0])
        count = int(synth._candidate_count[centre])
        expected = synth._candidates[centre, :count].double().mean(0)
        torch.testing.assert_close(p[k, 0], expected)
    assert (p[..., 0] == 1).all() and ((p > 0) & (p < 1)).any()


def test_random_growth_is_replaced_by_its_frequency(script):
    synth = toy_synth("paper", "random")
    index = torch.arange(6)
    batch = synth.batch("test", index)
    p = script.membership_probability(synth, batch.centres, draws=400)
    ring, valid = synth._patch_ring[batch.centres], synth._patch_valid[batch.centres]
    # Centre and ring 1 always; every ring-2 region touches ring 1 and is kept with
    # probability 1/2; padding never.
    assert (p[valid & (ring <= 1)] == 1).all() and (p[~valid] == 0).all()
    assert p[valid & (ring == 2)].sub(0.5).abs().max() < 0.1
    oracle = script.growth_oracle(synth, index, batch.target, batch.centres, draws=400)
    # Where the sample has a region, the oracle has it scaled by its frequency; the centre
    # (frequency 1) is the target itself; no region outside the whole patch is active.
    regions = torch.where(valid, synth._patch_regions[batch.centres], 0)
    target, b = batch.target.double(), torch.arange(6)[:, None, None]
    kept = batch.source_mask[b, regions] & valid
    expected = target[b, regions] * p[..., None]
    torch.testing.assert_close(oracle[b, regions][kept], expected[kept], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(oracle[torch.arange(6), batch.centres[:, 0]],
                               target[torch.arange(6), batch.centres[:, 0]])  # fmt: skip
    whole = torch.zeros(batch.source_mask.shape, dtype=torch.bool)
    whole[b.expand_as(regions)[valid], regions[valid]] = True
    assert (oracle[~whole] == 0).all() and (oracle[whole & ~batch.source_mask].abs() > 0).any()


def test_dry_run_prints_truth_oracle_and_network(script, tiny_run, capsys):
    script.main(["--checkpoint", str(tiny_run / "last.pt"), "--rows", "5/1/2", "--n", "4",
                 "--draws", "8", "--protocol", "paper"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    body = [line for line in lines if line.startswith("| 5/1/2 |")]
    names = [line.split("|")[3].strip() for line in body]
    oracles = list(script.SENSOR_ORACLES)
    assert names == [
        "truth", "growth oracle", "network", *oracles,
        "network − growth oracle (mean ± s.e.)",
        *(f"network − {o} (mean ± s.e.)" for o in oracles),
        *(f"{o}: most probable candidate is the sample's own" for o in oracles),
    ]  # fmt: skip
    assert "| 100.00 ± 0.00 | 100.00 ± 0.00 | 0.00 ± 0.00 |" in body[0]


def test_a_bad_row_is_one_clear_error(script, tiny_run, capsys):
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", str(tiny_run / "last.pt"), "--rows", "5/1"])
    assert "--rows:" in capsys.readouterr().err


def test_sensor_oracle_reads_the_candidate_when_the_noise_is_low(script):
    synth = toy_synth("paper")
    loud = synthesizer(dataclasses.replace(synth.config, snr_db=40.0), head_model="toy",
                       bank="synthetic", seed=3)  # fmt: skip
    index = torch.arange(6)
    for s in (synth, loud):
        batch = s.batch("test", index)
        oracles = script.sensor_oracle(s, index, chunk=4)
        assert set(oracles) == set(script.SENSOR_ORACLES)
        rows, centres = torch.arange(6), batch.centres[:, 0]
        for estimate, _ in oracles.values():
            # Every candidate holds the centre at weight 1, so its normalised time course
            # is the same whichever candidate the posterior favours.
            torch.testing.assert_close(
                estimate[rows, centres], batch.target.double()[rows, centres]
            )
    # At 40 dB the candidate is plain: both oracles name it and the estimate is the target.
    for estimate, identified in oracles.values():
        assert identified.all()
        torch.testing.assert_close(estimate, batch.target.double(), rtol=1e-5, atol=1e-6)


def test_sensor_oracle_needs_candidates_and_one_source(script):
    with pytest.raises(ValueError, match="candidates"):
        script.sensor_oracle(toy_synth("paper", "random"), torch.arange(2))


def test_growth_readout_flips_one_outer_region_at_a_time(script):
    synth = toy_synth("paper", "random")
    loud = synthesizer(dataclasses.replace(synth.config, snr_db=40.0), head_model="toy",
                       bank="synthetic", seed=3)  # fmt: skip
    index = torch.arange(6)
    batch = loud.batch("test", index)
    read, outer = script.growth_readout(loud, index, chunk=4)
    ring, valid = loud._patch_ring[batch.centres], loud._patch_valid[batch.centres]
    assert torch.equal(outer, (valid & (ring >= 2))[:, 0]) and outer.any()
    # At 40 dB every single region's membership is plain to the oracle that knows the
    # background; the others take the background for noise, which 40 dB does not shrink.
    assert read.shape == (3, *outer.shape) and not read[:, ~outer].any()
    assert read[0, outer].all() and (read[1:, outer].double().mean(1) > 0.9).all()
    # Composing the sample's own growth through the same forcing gives its own likelihood.
    own = loud._compose("test", index)
    forced = copy.copy(loud)
    member = own.params["patch_regions"] >= 0
    forced._grow_partial_rings = lambda keys, c, first: member
    y = (own.sensor_clean + own.noise).double()
    torch.testing.assert_close(script.log_likelihoods(loud, y, forced._compose("test", index)),
                               script.log_likelihoods(loud, y, own))  # fmt: skip
    with pytest.raises(ValueError, match="random"):
        script.growth_readout(toy_synth("paper"), index)


def test_dry_run_with_random_growth_prints_the_flip_test(script, tiny_run, capsys):
    script.main(["--checkpoint", str(tiny_run / "last.pt"), "--rows", "5/1/2", "--n", "3",
                 "--draws", "4", "--protocol", "paper", "--patch-growth", "random"])  # fmt: skip
    body = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 5/1/2 |")]
    flips = [line for line in body if "flip test" in line]
    assert len(flips) == 3 and all("% of " in line for line in flips)
    assert not any("sensor oracle |" in line for line in body)
