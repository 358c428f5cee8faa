"""Spike detection rules, the waveform bank file, and the resumable bank build."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import fairesi.simulate.bank as bank_module
from fairesi.cli import main as cli_main
from fairesi.simulate import Connectome, WaveformBank, build_bank, detect_spikes
from fairesi.simulate.spikes import select_spikes


def _bump(n: int, at: int, height: float, width: float = 5.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((np.arange(n) - at) / width) ** 2)


def test_detect_spikes_threshold_and_local_max():
    x = np.zeros((3, 1000))
    x[0] += _bump(1000, 300, 8.5)
    x[1] += _bump(1000, 300, 7.9)  # below 8 mV: no spike
    x[2, 100:200] = 12.0  # plateau: no strict rise into a local maximum after the first sample
    x[2] += _bump(1000, 700, 9.0)
    regions, peaks = detect_spikes(x)
    assert regions.tolist() == [2, 0, 2]  # sorted by time
    assert peaks.tolist() == [100, 300, 700]
    regions, _ = detect_spikes(x, threshold_mv=9.5)
    assert regions.tolist() == [2]


def test_detect_spikes_merges_close_peaks_keeping_the_tallest():
    x = _bump(1000, 400, 9.0)[None] + _bump(1000, 460, 11.0)[None] + _bump(1000, 700, 10.0)[None]
    _, peaks = detect_spikes(x, min_separation=100)
    assert peaks.tolist() == [460, 700]  # 400 merged into 460 (taller); 700 is 240 away
    _, peaks = detect_spikes(x, min_separation=50)
    assert peaks.tolist() == [400, 460, 700]


def test_select_spikes_rules():
    n, L = 3000, 500
    x = np.full((4, n), 1.0)  # resting level 1 mV
    x[0] += _bump(n, 1000, 10.0)  # kept
    x[0] += _bump(n, 100, 10.0)  # too close to the start for a centred segment
    x[1] += _bump(n, 1500, 10.0)  # region 1 not excitable
    x[2] += _bump(n, 2000, 10.0)  # rejected: its neighbour 3 spikes inside the segment
    x[3] += _bump(n, 2100, 10.0)
    x[0, 2600:] += np.linspace(0.0, 30.0, n - 2600)  # rising edge: not the segment maximum
    x[0, 2500] += 9.0
    excitable = np.array([True, False, True, False])
    near = np.eye(4, dtype=bool)
    near[2, 3] = near[3, 2] = True
    segs, regions, peaks = select_spikes(x, excitable, near, segment_len=L)
    assert regions.tolist() == [0] and peaks.tolist() == [1000]
    assert segs.shape == (1, L) and segs.dtype == np.float32
    assert np.argmax(segs[0]) == L // 2
    assert segs[0, L // 2] == pytest.approx(10.0, rel=1e-6)  # baseline (median) removed
    assert segs[0, 0] == pytest.approx(0.0, abs=1e-6)
    # Without the neighbour relation, region 2's spike is kept.
    _, regions, _ = select_spikes(x, excitable, np.eye(4, dtype=bool), segment_len=L)
    assert regions.tolist() == [0, 2]


def test_bank_roundtrip_and_synthetic(tmp_path):
    bank = WaveformBank.synthetic(n_regions=20, n_spikes=64, segment_len=500, seed=3)
    assert bank.spikes.shape == (64, 500) and bank.background.shape == (20, 5000)
    assert np.all(np.argmax(bank.spikes, axis=1) == 250)
    assert np.all(bank.spikes_per_region() >= 3)
    np.testing.assert_allclose(bank.background.mean(axis=1), 0.0, atol=1e-5)
    path = tmp_path / "bank.h5"
    bank.save(path)
    loaded = WaveformBank.load(path)
    np.testing.assert_array_equal(loaded.spikes, bank.spikes)
    np.testing.assert_array_equal(loaded.spike_regions, bank.spike_regions)
    np.testing.assert_array_equal(loaded.background, bank.background)
    assert loaded.metadata == bank.metadata and loaded.sfreq == 500.0
    with h5py.File(path) as f:
        assert f.attrs["seed"] == 3
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a fairesi waveform bank"):
        WaveformBank.load(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError):
        WaveformBank.load(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="spike_regions"):
        WaveformBank(np.zeros((2, 500)), np.zeros(3), np.zeros((4, 10)))


@pytest.fixture(scope="module")
def small_connectome() -> Connectome:
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(30, 3))
    return Connectome.from_geometry(70.0 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True))


BUILD = dict(
    run_duration_s=8.0,
    background_s=3.0,
    settings=((0.083, 1.5),),
    min_spikes=1,
    max_rounds=2,
    seed=11,
    n_threads=2,
)


def test_build_bank_groups_and_spikes(small_connectome):
    bank = build_bank(small_connectome, **BUILD)
    assert bank.background.shape == (30, 1500)
    assert bank.spikes.shape[0] > 0 and bank.segment_len == 500
    peaks = bank.spikes[:, 250]
    assert np.all(peaks == bank.spikes.max(axis=1))  # the peak is the segment's maximum
    assert np.all(peaks > 8.0 - 3.0)  # > 8 mV before removing a resting level of ~1-2 mV
    assert bank.metadata["seed"] == 11 and bank.metadata["recipe"] == "grouped"
    # Groups: excitable regions of one run are >= min_hops apart on the connectome.
    from scipy.sparse.csgraph import shortest_path

    hops = shortest_path(small_connectome.weights, unweighted=True, directed=False)
    groups = bank_module._balanced_groups(hops < 3, np.arange(30), np.random.default_rng(0))
    assert sorted(r for g in groups for r in g) == list(range(30))
    for g in groups:
        sub = hops[np.ix_(g, g)]
        assert np.all(sub[~np.eye(len(g), dtype=bool)] >= 3)
    assert len(groups) < 30  # several regions per run


def test_build_bank_resumes_without_redoing_shards(small_connectome, tmp_path, monkeypatch):
    reference = build_bank(small_connectome, **BUILD)
    calls = []
    real = bank_module.simulate_network

    def counting(*args, **kwargs):
        calls.append(kwargs["run_offset"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bank_module, "simulate_network", counting)

    def interrupt_after_4(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_bank(small_connectome, shard_dir=tmp_path, progress=interrupt_after_4, **BUILD)
    finished = len(list(tmp_path.glob("*/*.npz")))
    assert finished >= 4
    calls.clear()
    resumed = build_bank(small_connectome, shard_dir=tmp_path, **BUILD)
    n_runs = resumed.metadata["n_runs"]
    assert len(calls) == n_runs - finished  # finished shards are not simulated again
    assert len(set(calls)) == len(calls)
    np.testing.assert_array_equal(resumed.spikes, reference.spikes)
    np.testing.assert_array_equal(resumed.spike_regions, reference.spike_regions)
    np.testing.assert_array_equal(resumed.background, reference.background)


def test_cli_bank(small_connectome, tmp_path):
    w = small_connectome.weights.toarray()
    np.savez(
        tmp_path / "conn.npz", weights=w, tract_lengths=small_connectome.tract_lengths_mm.toarray()
    )
    out = tmp_path / "bank.h5"
    argv = [
        "simulate",
        "bank",
        "--connectome",
        str(tmp_path / "conn.npz"),
        "--out",
        str(out),
        "--quick",
        "--duration",
        "6",
        "--background",
        "3",
        "--seed",
        "4",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    bank = WaveformBank.load(out)
    assert bank.n_regions == 30 and bank.metadata["seed"] == 4
    # Options given explicitly win over --quick's values (it used to reset them silently).
    assert bank.background.shape[1] / bank.sfreq == pytest.approx(3.0)
    assert bank.metadata["max_rounds"] == 1
    assert not (tmp_path / "bank.h5.shards").exists()
    assert (
        cli_main(
            [
                "simulate",
                "bank",
                "--connectome",
                str(tmp_path / "nope.npz"),
                "--out",
                str(tmp_path / "x.h5"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.h5").exists()


def test_deepsif_recipe_one_run_per_source_region(small_connectome, monkeypatch):
    excitable_sets = []
    real = bank_module.simulate_network

    def spy(*args, **kwargs):
        excitable_sets.append(tuple(np.nonzero(kwargs["region_A"] > 3.25)[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(bank_module, "simulate_network", spy)
    bank = build_bank(
        small_connectome,
        recipe="deepsif",
        regions=[4, 9],
        run_duration_s=8.0,
        background_s=2.0,
        settings=((0.083, 1.5), (0.08, 1.7)),
        n_threads=2,
    )
    # Background (nobody excitable) + one run per (source region, setting).
    assert sorted(excitable_sets) == [(), (4,), (4,), (9,), (9,)]
    assert set(bank.spike_regions.tolist()) <= {4, 9}
    assert bank.metadata["recipe"] == "deepsif" and bank.metadata["n_runs"] == 5


def test_a_bank_with_nan_or_missing_data_is_refused(tmp_path):
    """NaN/Inf in a bank used to flow into an all-NaN dataset (issue 18, case 4)."""
    import h5py

    bank = WaveformBank.synthetic(12, n_spikes=12)
    path = tmp_path / "bank.h5"
    bank.save(path)
    with h5py.File(path, "r+") as f:
        data = f["background"][()]
        data[3, 7] = np.nan
        del f["background"]
        f["background"] = data
    with pytest.raises(
        ValueError, match=r"background holds 1 NaN/Inf values \(first at index \[3, 7\]\)"
    ):
        WaveformBank.load(path)
    with h5py.File(path, "r+") as f:
        del f["spikes"]
    with pytest.raises(ValueError, match=r"lacks the dataset\(s\) \['spikes'\]"):
        WaveformBank.load(path)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--duration", "-1", "run_duration_s must be a positive number"),
        ("--background", "0", "background_s must be a positive number"),
        ("--min-spikes", "0", "min_spikes must be >= 1"),
        ("--threads", "0", "--threads must be >= 1, got 0"),
        ("--max-rounds", "0", "max_rounds must be >= 1"),
    ],
)
def test_bad_bank_flags_leave_nothing_behind(tmp_path, capsys, flag, value, message):
    """Refused with one line before anything is written (issue 18, case 14)."""
    out = tmp_path / "bank.h5"
    argv = ["simulate", "bank", "--n-regions", "20", "--out", str(out), "--no-progress"]
    assert cli_main([*argv, flag, value]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
