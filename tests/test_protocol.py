"""The paper's protocol (SimConfig.protocol='paper'), each item against a hand-checkable
definition: DeepSIF's noise power, its partial patch growth, the free peak position, the
shared centres; the strict default is unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairesi.data import SimConfig, Synthesizer
from fairesi.headmodel import HeadModel
from fairesi.simulate.bank import WaveformBank


@pytest.fixture(scope="module")
def head_model() -> HeadModel:
    return HeadModel.toy(n_regions=120)


def _synth(head_model, **overrides) -> Synthesizer:
    config = SimConfig.preset("SimMEG", n_times=64, n_samples=1200, **overrides)
    return Synthesizer(head_model, WaveformBank.synthetic(head_model.n_regions), config, seed=5)


def test_paper_preset_defaults_and_validation() -> None:
    paper = SimConfig.preset("SimMEG", protocol="paper")
    assert paper.disjoint_centres is False and paper.peak_position == (0.0, 1.0)
    assert SimConfig.preset("SimMEG").protocol == "strict"
    # Explicit values still win over the protocol's defaults.
    assert SimConfig.preset("SimMEG", protocol="paper", disjoint_centres=True).disjoint_centres
    with pytest.raises(ValueError, match="protocol"):
        SimConfig.preset("SimMEG", protocol="deepsif")
    # Configurations stored before the field existed read as the strict protocol.
    old = SimConfig.preset("SimMEG").to_dict()
    del old["protocol"]
    assert SimConfig.from_dict(old).protocol == "strict"
    # The paper protocol grows DeepSIF's candidates; records from before the field had
    # the random growth and keep it; the strict protocol keeps full rings.
    assert (
        paper.patch_growth == "candidates" and paper.with_protocol("strict").patch_growth == "rings"
    )
    before = paper.to_dict()
    del before["patch_growth"]
    assert SimConfig.from_dict(before).patch_growth == "random"
    # Converting keeps a record's own protocol as it is, and gives another its defaults.
    old_paper = SimConfig.from_dict(before)
    assert old_paper.with_protocol("paper") is old_paper
    assert old_paper.with_protocol("strict").with_protocol("paper") == paper
    assert SimConfig.from_dict(paper.to_dict()) == paper
    with pytest.raises(ValueError, match="patch_growth must be one of"):
        SimConfig.preset("SimMEG", patch_growth="grown")
    with pytest.raises(ValueError, match="at most 3 rings"):
        SimConfig.preset("SimMEG", protocol="paper", n_rings=4)
    assert SimConfig.preset("SimMEG", protocol="paper", n_rings=4, patch_growth="random")


def _measured_snr_db(synth: Synthesizer) -> float:
    raw = synth.raw("train", torch.arange(64))
    clean = raw.sensor_clean.double().square().mean(-1)  # (B, C) mean power per channel
    noise = raw.noise.double().square().mean(-1)
    return float(10 * torch.log10(clean.sum() / noise.sum()))


def test_noise_power_definitions(head_model) -> None:
    """Ours: noise power = signal power * 10^(-r/10) per channel, so the measured SNR is r.
    DeepSIF's (add_white_noise, line 73) halves it: its nominal r dB measures r + 3.01 dB."""
    # One ring (no partial growth) and the strict centres and peaks: only the noise differs.
    same = dict(snr_db=5.0, n_rings=1, disjoint_centres=True, peak_position=(0.3, 0.7))
    strict = _measured_snr_db(_synth(head_model, **same))
    paper = _measured_snr_db(_synth(head_model, protocol="paper", **same))
    assert strict == pytest.approx(5.0, abs=0.1)  # sampling error of 64 samples' noise
    # Same samples and noise draws, only the noise power differs: exactly 3.01 dB.
    assert paper - strict == pytest.approx(10 * math.log10(2), abs=1e-6)


def test_random_growth_keeps_partial_connected_rings(head_model) -> None:
    synth = _synth(head_model, n_rings=3, protocol="paper", patch_growth="random")
    strict = _synth(head_model, n_rings=3)
    hop = head_model.hop_distance
    batch = synth.batch("train", torch.arange(200))
    full = strict.batch("train", torch.arange(200))
    kept_outer, total_outer = 0, 0
    for b in range(200):
        centre = int(batch.centres[b, 0])
        members = set(np.flatnonzero(batch.source_mask[b].numpy()).tolist())
        rings = {k: set(np.flatnonzero(hop[centre] == k).tolist()) for k in range(4)}
        assert rings[0] | rings[1] <= members  # the centre and ring 1 whole
        assert members <= rings[0] | rings[1] | rings[2] | rings[3]
        for k in (2, 3):  # every outer region touches a kept region of the ring inside
            for region in members & rings[k]:
                assert any(hop[region, r] == 1 for r in members & rings[k - 1])
        kept_outer += len(members & rings[2])
        total_outer += len(rings[2])
        # The strict protocol keeps whole rings (around its own centre).
        strict_members = set(np.flatnonzero(full.source_mask[b].numpy()).tolist())
        strict_centre = int(full.centres[b, 0])
        assert strict_members == set(
            np.flatnonzero((hop[strict_centre] >= 0) & (hop[strict_centre] <= 3)).tolist()
        )
    assert 0.4 < kept_outer / total_outer < 0.6  # ring 2: kept with probability 1/2
    # The target is zero outside the kept patch regions.
    outside = ~batch.source_mask[:, :, None].expand_as(batch.target)
    assert torch.count_nonzero(batch.target[outside]) == 0


def test_paper_peaks_fall_anywhere_and_centres_are_shared(head_model) -> None:
    synth = _synth(head_model, protocol="paper")
    peaks = synth.raw("train", torch.arange(400)).peak_sample
    assert int(peaks.min()) < 0.1 * 64 and int(peaks.max()) > 0.9 * 64
    strict_peaks = _synth(head_model).raw("train", torch.arange(400)).peak_sample
    assert int(strict_peaks.min()) >= int(0.3 * 64) and int(strict_peaks.max()) <= int(0.7 * 64)
    assert all(len(pool) == head_model.n_regions for pool in synth.centre_pools.values())
