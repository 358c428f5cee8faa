"""Paired-sample synthesis (fairesi.data): composition, SNRs, patches, splits,
determinism, the torch data interface, HDF5 round trip and bad input."""

import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch

import fairesi.data.h5
from fairesi.cli import main
from fairesi.cli._simulate_dataset import CONFIGS
from fairesi.cli._simulate_dataset import SPLITS as CLI_SPLITS
from fairesi.data import (
    PRESETS,
    SPLITS,
    Batch,
    DatasetFile,
    SimConfig,
    SynthDataset,
    Synthesizer,
    collate_batch,
    epoch_order,
    iter_batches,
    merge_datasets,
    normalise_input,
    write_dataset,
)
from fairesi.data.rng import normal_nb, normal_torch
from fairesi.headmodel import HeadModel
from fairesi.simulate import WaveformBank


@pytest.fixture(scope="module")
def bank(toy_head_model):
    return WaveformBank.synthetic(toy_head_model.n_regions, n_spikes=64, segment_len=500, seed=0)


def make_synth(head_model, bank, name="SimEEG", seed=0, **overrides):
    overrides.setdefault("n_samples", 1200)
    return Synthesizer(head_model, bank, SimConfig.preset(name, **overrides), seed=seed)


@pytest.fixture(scope="module")
def head_model_160():
    # Two non-touching patches in every split's centre pool need more than 50 regions.
    return HeadModel.toy(n_regions=160)


@pytest.fixture(scope="module")
def synth(head_model_160):
    bank = WaveformBank.synthetic(160, n_spikes=64, segment_len=500, seed=0)
    return make_synth(head_model_160, bank, n_sources=2, n_rings=1)


def test_sensor_data_is_lead_field_times_sources_plus_noise(synth):
    bank = synth.bank
    index = torch.arange(8)
    raw = synth.raw("train", index)
    gain = torch.as_tensor(synth.lead_field.gain, dtype=torch.float64)
    projected = torch.einsum("cr,brt->bct", gain, raw.sources.double())
    scale = projected.abs().amax()
    torch.testing.assert_close(
        raw.sensor_clean.double() / scale, projected / scale, atol=2e-6, rtol=0
    )
    # DeepSIF's input normalisation, in numpy, of lead field x sources + noise.
    y = projected.numpy() + raw.noise.double().numpy()
    y = y - y.mean(axis=2, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    y = y / np.abs(y).max(axis=(1, 2), keepdims=True)
    batch = synth.batch("train", index)
    np.testing.assert_allclose(batch.x.numpy(), y, atol=2e-5, rtol=0)
    torch.testing.assert_close(batch.x, normalise_input(raw.sensor_clean + raw.noise))

    # The sources, rebuilt independently from the drawn parameters with numpy.
    n_t = synth.config.n_times
    spikes = bank.spikes / bank.spikes.max(axis=1, keepdims=True)
    half = bank.spikes.shape[1] // 2
    for b in range(len(index)):
        start = int(raw.background_start[b])
        expected = bank.background[:, start : start + n_t].copy()
        for k in range(synth.config.n_sources):
            seg = np.clip(
                half - int(raw.peak_sample[b, k]) + np.arange(n_t), 0, spikes.shape[1] - 1
            )
            waveform = spikes[int(raw.spike_index[b, k]), seg]
            # A source uses one of its centre's own spikes whenever the bank has one.
            centre = int(raw.centres[b, k])
            if centre in bank.spike_regions:
                assert bank.spike_regions[int(raw.spike_index[b, k])] == centre
            for region, w in zip(raw.patch_regions[b, k], raw.patch_weights[b, k], strict=True):
                if region >= 0:
                    expected[int(region)] = float(raw.source_scale[b, k]) * float(w) * waveform
        np.testing.assert_allclose(raw.sources[b].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_normalisation_follows_deepsif(synth):
    batch = synth.batch("val", torch.arange(6))
    x = batch.x.double()
    torch.testing.assert_close(x.abs().amax(dim=(1, 2)), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(
        x.mean(dim=2), torch.zeros(x.shape[:2], dtype=x.dtype), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        x.mean(dim=1), torch.zeros(6, x.shape[2], dtype=x.dtype), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(batch.target.abs().amax(dim=(1, 2)), torch.ones(6))
    outside = ~batch.source_mask[..., None].expand_as(batch.target)
    assert torch.all(batch.target[outside] == 0)
    assert torch.all(batch.target.abs().amax(dim=2)[batch.source_mask] > 0)


@pytest.mark.parametrize("snr_db", [-5.0, 5.0, 15.0])
def test_achieved_sensor_snr_matches_request(toy_head_model, bank, snr_db):
    synth = make_synth(toy_head_model, bank, snr_db=snr_db)
    raw = synth.raw("train", torch.arange(32))
    signal = raw.sensor_clean.double().square().sum(dim=(1, 2))
    noise = raw.noise.double().square().sum(dim=(1, 2))
    achieved = 10 * torch.log10(signal / noise)
    assert abs(achieved.mean().item() - snr_db) < 0.1
    # Per channel too (DeepSIF sets the noise power channel by channel): one channel of one
    # sample has T noise values, so its SNR scatters by ~sqrt(2 / T) * 4.34 dB = 0.38 dB;
    # the mean over 32 samples by 0.07 dB.
    per_channel = 10 * torch.log10(
        raw.sensor_clean.double().square().sum(2) / raw.noise.double().square().sum(2)
    ).mean(0)
    assert torch.all((per_channel - snr_db).abs() < 0.3)


def test_source_snr_is_deepsif_find_alpha(synth):
    """Patch vs background power at the sensors, de-meaned, +-100 ms around the peak."""
    raw = synth.raw("train", torch.arange(6))
    gain = synth.lead_field.gain.astype(np.float64)
    half_window = round(0.1 * 500.0)
    t = np.arange(synth.config.n_times)
    for b in range(6):
        sources = raw.sources[b].numpy().astype(np.float64)
        in_patch = np.zeros(synth.n_regions, bool)
        in_patch[raw.patch_regions[b][raw.patch_regions[b] >= 0].numpy()] = True
        background = gain[:, ~in_patch] @ sources[~in_patch]
        background -= background.mean(axis=1, keepdims=True)
        for k in range(synth.config.n_sources):
            regions = raw.patch_regions[b, k][raw.patch_regions[b, k] >= 0].numpy()
            signal = gain[:, regions] @ sources[regions]
            signal -= signal.mean(axis=1, keepdims=True)
            window = np.abs(t - int(raw.peak_sample[b, k])) <= half_window
            ratio = np.square(signal[:, window]).sum() / np.square(background[:, window]).sum()
            assert 10 * np.log10(ratio) == pytest.approx(float(raw.source_snr_db[b, k]), abs=1e-3)
    lo, hi = synth.config.source_snr_db
    assert torch.all((raw.source_snr_db >= lo) & (raw.source_snr_db <= hi))


def test_patches_are_rings_with_gaussian_falloff_and_do_not_touch():
    # Two 2-ring patches that may not touch need more room than the 50-region model has.
    toy_head_model = HeadModel.toy(n_regions=240)
    bank = WaveformBank.synthetic(240, seed=1)
    synth = make_synth(toy_head_model, bank, n_sources=2, n_rings=2, n_samples=240)
    raw = synth.raw("train", torch.arange(24))
    batch = synth.batch("train", torch.arange(24))
    adjacency = toy_head_model.adjacency.toarray() != 0
    for b in range(24):
        patches = []
        for k in range(2):
            centre = int(raw.centres[b, k])
            rings = toy_head_model.rings(centre, 2)
            regions = raw.patch_regions[b, k]
            weights = raw.patch_weights[b, k]
            got = regions[regions >= 0].numpy()
            assert sorted(got.tolist()) == sorted(np.concatenate(rings).tolist())
            assert got[0] == centre and float(weights[0]) == 1.0
            ring_of = {int(r): d for d, ring in enumerate(rings) for r in ring}
            by_ring = {}
            for r, w in zip(got, weights[regions >= 0].numpy(), strict=True):
                by_ring.setdefault(ring_of[int(r)], set()).add(float(w))
            # One weight per ring, 2 ** -((ring / h) ** 2) with h in the configured range.
            assert all(len(ws) == 1 for ws in by_ring.values())
            h = 1.0 / math.sqrt(-math.log2(by_ring[1].pop()))
            lo, hi = synth.config.half_amplitude_rings
            assert lo - 1e-4 <= h <= hi + 1e-4
            assert by_ring[2].pop() == pytest.approx(2.0 ** -((2 / h) ** 2), rel=1e-5)
            patches.append(set(got.tolist()))
        assert not patches[0] & patches[1]
        a, c = sorted(patches[0]), sorted(patches[1])
        assert not adjacency[np.ix_(a, c)].any(), "patches touch"
        assert set(np.flatnonzero(batch.source_mask[b]).tolist()) == patches[0] | patches[1]


def test_spike_peak_is_jittered_and_lands_at_peak_sample(synth):
    raw = synth.raw("test", torch.arange(40))
    centre_trace = raw.sources[torch.arange(40), raw.centres[:, 0]]
    assert torch.equal(centre_trace.argmax(dim=1), raw.peak_sample[:, 0])
    assert len(set(raw.peak_sample[:, 0].tolist())) > 10


def test_splits_have_disjoint_centre_pools(synth):
    pools = synth.centre_pools
    assert sum(len(p) for p in pools.values()) == synth.n_regions
    assert set(np.concatenate(list(pools.values())).tolist()) == set(range(synth.n_regions))
    assert len(pools["train"]) > 5 * len(pools["val"]) and len(pools["val"]) >= 1
    for split in ("train", "val", "test"):
        centres = synth.batch(split, torch.arange(50)).centres
        assert set(centres.flatten().tolist()) <= set(pools[split].tolist())
    sizes = {s: synth.split_size(s) for s in ("train", "val", "test")}
    assert sizes == {"train": 1000, "val": 100, "test": 100}
    assert SimConfig.preset("SimMEG").split_sizes() == {"train": 39920, "val": 3992, "test": 3992}


def test_shared_centres_give_every_split_all_regions(synth):
    shared = make_synth(
        synth.head_model, synth.bank, n_sources=2, n_rings=1, disjoint_centres=False
    )
    assert all(np.array_equal(p, np.arange(160)) for p in shared.centre_pools.values())
    train_pool = set(synth.centre_pools["train"].tolist())
    test_centres = set(shared.batch("test", torch.arange(100)).centres.flatten().tolist())
    assert test_centres & train_pool and test_centres - train_pool
    # The splits still hold different samples.
    assert not torch.equal(
        shared.batch("val", torch.arange(4)).x, shared.batch("test", torch.arange(4)).x
    )
    assert SimConfig.from_dict(shared.config.to_dict()) == shared.config
    with pytest.raises(ValueError, match="disjoint_centres must be True or False"):
        SimConfig.preset("SimMEG", disjoint_centres="no")


def test_samples_are_pure_functions_of_seed_split_index(synth):
    again = make_synth(synth.head_model, synth.bank, n_sources=2, n_rings=1)
    a = synth.batch("train", torch.tensor([3, 7, 11, 500]))
    b = again.batch("train", torch.tensor([11, 500, 0, 3, 7]))
    for name in ("x", "target", "source_mask", "centres"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name)[[3, 4, 0, 1]], rtol=0, atol=0)
    other_split = synth.batch("val", torch.tensor([3]))
    assert not torch.equal(other_split.x, a.x[:1])
    other_seed = make_synth(synth.head_model, synth.bank, n_sources=2, n_rings=1, seed=1)
    assert not torch.equal(other_seed.batch("train", torch.tensor([3])).x, a.x[:1])


def test_draws_keep_the_source_locations_and_redraw_everything_else(synth):
    index = torch.tensor([3, 7, 11, 500])
    base = synth.raw("train", index)
    zero = synth.raw("train", index, draw=0)
    for name in ("sources", "noise", "centres", "spike_index", "source_snr_db"):
        assert torch.equal(getattr(zero, name), getattr(base, name))
    one = synth.raw("train", index, draw=1)
    assert torch.equal(one.centres, base.centres)
    assert torch.equal(one.patch_regions, base.patch_regions)
    # Every other random choice is new: continuous ones for every source, discrete ones
    # (which may repeat by chance) somewhere in the batch.
    assert (one.source_snr_db != base.source_snr_db).all()
    assert (one.patch_weights[:, :, 1] != base.patch_weights[:, :, 1]).all()
    for name in ("spike_index", "peak_sample", "background_start"):
        assert not torch.equal(getattr(one, name), getattr(base, name)), name
    corr = torch.corrcoef(torch.stack([one.noise.flatten(), base.noise.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.01
    # A draw is a pure function of (seed, split, index, draw).
    again = make_synth(synth.head_model, synth.bank, n_sources=2, n_rings=1)
    a = synth.batch("train", index, draw=5)
    b = again.batch("train", index.flip(0), draw=5)
    assert torch.equal(a.x, b.x.flip(0)) and torch.equal(a.target, b.target.flip(0))
    assert not torch.equal(a.x, synth.batch("train", index, draw=6).x)
    # Draws of other samples are not shifted copies of each other.
    assert not torch.equal(synth.raw("train", index[1:], draw=1).noise, base.noise[:-1])
    with pytest.raises(ValueError, match="draw must be"):
        synth.batch("train", index, draw=-1)
    with pytest.raises(ValueError, match="draw must be"):
        synth.batch("train", index, draw=2**32)


def test_fused_cpu_noise_equals_device_independent_torch_noise():
    keys = torch.tensor([0, 1, 2**32 - 1, 123456789], dtype=torch.int64)
    fused = np.empty((4, 5, 7), np.float32)
    normal_nb(keys.numpy().astype(np.uint64), fused)
    torch.testing.assert_close(
        torch.from_numpy(fused), normal_torch(keys, 5, 7), atol=2e-5, rtol=1e-5
    )
    z = normal_torch(torch.arange(8), 64, 500).double()
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    corr = torch.corrcoef(z.reshape(8, -1))
    assert (corr - torch.eye(8, dtype=z.dtype)).abs().max() < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(synth):  # pragma: no cover
    on_gpu = Synthesizer(synth.head_model, synth.bank, synth.config, seed=0, device="cuda")
    index = torch.arange(16)
    a, b = synth.batch("train", index), on_gpu.batch("train", index).to("cpu")
    torch.testing.assert_close(b.x, a.x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.target, a.target, atol=1e-5, rtol=1e-5)
    assert torch.equal(b.centres, a.centres)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_gives_identical_batches_for_any_worker_count(synth, num_workers):
    dataset = SynthDataset(synth, "train")
    assert len(dataset) == 1000
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(4))[:15]
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=5,
        sampler=order.tolist(),
        num_workers=num_workers,
        collate_fn=collate_batch,
    )
    batches = list(loader)
    assert all(isinstance(b, Batch) and len(b) == 5 for b in batches)
    expected = synth.batch("train", order)
    got = Batch(
        *(
            torch.cat([getattr(b, n) for b in batches])
            for n in ("x", "target", "source_mask", "centres")
        )
    )
    torch.testing.assert_close(got.x, expected.x, rtol=0, atol=0)
    torch.testing.assert_close(got.target, expected.target, rtol=0, atol=0)
    single = dataset[int(order[0])]
    torch.testing.assert_close(single["x"], expected.x[0], rtol=0, atol=0)
    assert torch.equal(
        collate_batch([dataset[1], dataset[2]]).centres,
        synth.batch("train", torch.tensor([1, 2])).centres,
    )


def test_iter_batches_shuffles_by_epoch_and_resumes_exactly(toy_head_model, bank):
    synth = make_synth(toy_head_model, bank, n_samples=120)  # 100 train samples
    order0 = epoch_order(synth, "train", shuffle=True, epoch=0)
    assert sorted(order0.tolist()) == list(range(100))
    assert not torch.equal(order0, epoch_order(synth, "train", shuffle=True, epoch=1))
    assert torch.equal(epoch_order(synth, "train", shuffle=False, epoch=3), torch.arange(100))
    full = list(iter_batches(synth, "train", 32, shuffle=True, epoch=0))
    assert [len(b) for b in full] == [32, 32, 32, 4]
    resumed = list(iter_batches(synth, "train", 32, shuffle=True, epoch=0, start_batch=2))
    for a, b in zip(full[2:], resumed, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.centres, b.centres)
    assert torch.equal(full[0].x, synth.batch("train", order0[:32]).x)
    assert len(list(iter_batches(synth, "train", 32, shuffle=False, epoch=0, drop_last=True))) == 3
    redrawn = list(iter_batches(synth, "train", 32, shuffle=True, epoch=2, redraw=True))
    order2 = epoch_order(synth, "train", shuffle=True, epoch=2)
    assert torch.equal(redrawn[1].x, synth.batch("train", order2[32:64], draw=2).x)
    assert not torch.equal(redrawn[1].x, synth.batch("train", order2[32:64]).x)
    assert torch.equal(redrawn[1].centres, synth.batch("train", order2[32:64]).centres)


def _run_batches_copy(synth, split, epoch, start_batch, config, n_train, n_val, rank, world):
    """A copy of ``train._Run.batches`` (fairesi 0705772), which iter_batches replaces."""
    n = n_train if split == "train" else n_val
    batch_size = config["batch_size"]
    order = epoch_order(synth, split, shuffle=split == "train", epoch=epoch)
    draw = epoch if split == "train" and config["redraw"] else 0
    for b in range(start_batch, max(1, n // batch_size)):
        index = order[b * batch_size : (b + 1) * batch_size]
        yield synth.batch(split, index[rank::world], draw=draw)


@pytest.mark.parametrize(
    ("split", "epoch", "start", "batch_size", "n_limit", "redraw", "rank", "world"),
    [
        ("train", 0, 0, 16, 100, False, 0, 1),  # whole split, last partial batch dropped
        ("train", 3, 2, 16, 50, True, 1, 2),  # limited, resumed, redrawn, DDP rank 1 of 2
        ("train", 2, 0, 32, 100, True, 2, 4),
        ("train", 1, 3, 32, 100, False, 0, 1),  # resume at the end of the epoch: nothing
        ("val", 5, 0, 16, 10, True, 3, 4),  # fewer than a batch: one batch; val: draw 0
        ("val", 0, 1, 4, 8, False, 0, 2),
    ],
)
def test_iter_batches_equals_the_training_loop_batches(
    toy_head_model, bank, split, epoch, start, batch_size, n_limit, redraw, rank, world
):
    synth = make_synth(toy_head_model, bank, n_samples=120)  # 100 train, 10 val samples
    config = {"batch_size": batch_size, "redraw": redraw}
    n_train, n_val = (n_limit, 10) if split == "train" else (100, n_limit)
    expected = list(
        _run_batches_copy(synth, split, epoch, start, config, n_train, n_val, rank, world)
    )
    train = split == "train"
    common = dict(
        shuffle=train, epoch=epoch, start_batch=start, n=n_limit, rank=rank, world_size=world
    )
    by_draw = iter_batches(
        synth, split, batch_size, draw=epoch if train and redraw else 0, **common
    )
    by_redraw = iter_batches(synth, split, batch_size, redraw=train and redraw, **common)
    for got in (list(by_draw), list(by_redraw)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            for f in dataclasses.fields(a):
                assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name
    if split == "val" and n_limit < batch_size:
        assert len(expected) == 1 and len(expected[0]) == len(range(rank, 10, world))


def test_iter_batches_rejects_bad_limits_ranks_and_draws(toy_head_model, bank):
    synth = make_synth(toy_head_model, bank, n_samples=120)
    for kwargs, match in (
        ({"n": 0}, "n must be in"),
        ({"n": 101}, "n must be in"),
        ({"n": 40, "start_batch": 3}, "start_batch must be in"),
        ({"rank": 2, "world_size": 2}, "rank must be in"),
        ({"redraw": True, "draw": 1}, "not both"),
    ):
        with pytest.raises(ValueError, match=match):
            next(iter_batches(synth, "train", 16, shuffle=True, epoch=1, **kwargs))


def test_hdf5_round_trip_is_identical(synth, tmp_path):
    path = tmp_path / "test.h5"
    write_dataset(path, synth, "test", 7, batch_size=3, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["test.h5"]
    stored = DatasetFile(path)
    assert len(stored) == 7 and stored.split == "test" and stored.seed == 0
    assert stored.config == synth.config
    expected = synth.batch("test", torch.arange(7))
    got = stored.batch([6, 0, 3, 3, 1, 2, 4, 5][:7])
    order = torch.tensor([6, 0, 3, 3, 1, 2, 4])
    for name in ("x", "target", "source_mask", "centres"):
        assert torch.equal(getattr(got, name), getattr(expected, name)[order]), name
    assert torch.equal(stored[5]["x"], expected.x[5])
    # The file is open in this process already; forked workers must reopen it.
    loader = torch.utils.data.DataLoader(
        stored, batch_size=4, num_workers=2, collate_fn=collate_batch
    )
    assert torch.equal(torch.cat([b.target for b in loader]), expected.target)


def test_interrupted_hdf5_write_resumes_from_finished_shards(synth, tmp_path, monkeypatch):
    monkeypatch.setattr(fairesi.data.h5, "_SHARD_SAMPLES", 3)
    path = tmp_path / "train.h5"
    compose = Synthesizer._compose
    calls = []

    def interrupted(self, split, index):
        calls.append(index.tolist())
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compose(self, split, index)

    monkeypatch.setattr(Synthesizer, "_compose", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, synth, "train", 7, start=10, batch_size=3, progress=False)
    assert not path.exists()
    shard_dir = tmp_path / "train.h5.shards"
    assert sorted(p.name for p in shard_dir.iterdir()) == ["000000010-3.h5", "000000013-3.h5"]

    def counted(self, split, index, draw=0):
        calls.append(index.tolist())
        return compose(self, split, index, draw)

    calls.clear()
    monkeypatch.setattr(Synthesizer, "_compose", counted)
    write_dataset(path, synth, "train", 7, start=10, batch_size=3, progress=False)
    assert calls == [[16]]  # the last shard holds one sample: its chunks differ
    assert [p.name for p in tmp_path.iterdir()] == ["train.h5"]
    stored = DatasetFile(path)
    expected = synth.batch("train", torch.arange(10, 17))
    got = stored.batch(range(7))
    for name in ("x", "target", "source_mask", "centres"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert stored.attrs["first_sample"] == 10 and len(stored) == 7


def test_bad_input_raises_clear_errors(toy_head_model, bank):
    with pytest.raises(ValueError, match="unknown configuration 'SimXYZ'"):
        SimConfig.preset("SimXYZ")
    for snr in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="snr_db must be a finite"):
            SimConfig.preset("SimMEG", snr_db=snr)
    with pytest.raises(ValueError, match="n_sources=40 is too large for the train split"):
        make_synth(toy_head_model, bank, n_sources=40, n_rings=1)
    eeg_only = dataclasses.replace(
        toy_head_model, lead_fields={"eeg": toy_head_model.lead_field("eeg")}
    )
    with pytest.raises(ValueError, match="has no 'meg' lead field"):
        make_synth(eeg_only, bank, name="SimMEG")
    small_bank = WaveformBank.synthetic(toy_head_model.n_regions - 1, seed=0)
    with pytest.raises(ValueError, match=f"background for {toy_head_model.n_regions - 1} regions"):
        make_synth(toy_head_model, small_bank)
    synth = make_synth(toy_head_model, bank)
    with pytest.raises(ValueError, match="unknown split 'training'"):
        synth.batch("training", torch.arange(2))
    with pytest.raises(ValueError, match=r"must lie in \[0, 100\) for the val split"):
        synth.batch("val", torch.tensor([0, 100]))


def test_cli_writes_the_dataset_of_the_synthesizer(toy_head_model, bank, tmp_path, capsys):
    head_path, bank_path, out = tmp_path / "toy.npz", tmp_path / "bank.h5", tmp_path / "d.h5"
    toy_head_model.save(head_path)
    bank.save(bank_path)
    argv = ["simulate", "dataset", "--config", "SimEEG", "--snr", "15", "--n-rings", "1"]
    argv += ["--split", "val", "--start", "2", "--n", "5", "--n-samples", "1200", "--seed", "3"]
    argv += ["--bank", str(bank_path), "--head-model", str(head_path), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    stored = DatasetFile(out)
    config = SimConfig.preset("SimEEG", snr_db=15.0, n_rings=1, n_samples=1200)
    assert stored.config == config and stored.seed == 3 and len(stored) == 5
    expected = Synthesizer(toy_head_model, bank, config, seed=3).batch("val", torch.arange(2, 7))
    got = stored.batch(range(5))
    assert torch.equal(got.x, expected.x) and torch.equal(got.target, expected.target)


def test_merged_parts_equal_one_write(synth, tmp_path, capsys):
    whole = write_dataset(tmp_path / "whole.h5", synth, "train", 9, start=4, progress=False)
    parts = [
        write_dataset(tmp_path / f"part{start}.h5", synth, "train", n, start=start, progress=False)
        for start, n in ((9, 4), (4, 5))  # written out of order, as workers finish
    ]
    out = tmp_path / "merged.h5"
    assert main(["simulate", "merge", *map(str, parts), "--out", str(out)]) == 0
    assert "samples 4..12 from 2 part(s)" in capsys.readouterr().out
    with h5py.File(whole, "r") as a, h5py.File(out, "r") as b:
        assert dict(a.attrs) == dict(b.attrs)
        assert sorted(a) == sorted(b)
        for name in a:
            assert np.array_equal(a[name][()], b[name][()]), name
            assert (a[name].chunks, a[name].compression) == (b[name].chunks, b[name].compression)

    gap = write_dataset(tmp_path / "gap.h5", synth, "train", 2, start=14, progress=False)
    with pytest.raises(ValueError, match="leave a gap"):
        merge_datasets([parts[1], gap], tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="overlap"):
        merge_datasets([whole, parts[0]], tmp_path / "bad.h5")
    other = write_dataset(tmp_path / "val.h5", synth, "val", 2, start=13, progress=False)
    with pytest.raises(ValueError, match=r"\['split'\] differ"):
        merge_datasets([parts[0], other], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_merge_refuses_corrupt_or_foreign_parts(synth, tmp_path, capsys):
    """Merging copies compressed chunks as they are, so every part is decoded first: a
    corrupted chunk or a non-HDF5 file is refused with one line and no output (issue 18,
    cases 5 and 6)."""
    parts = [
        write_dataset(tmp_path / f"p{start}.h5", synth, "train", 3, start=start, progress=False)
        for start in (0, 3)
    ]
    with h5py.File(parts[1], "r") as f:
        info = f["x"].id.get_chunk_info(0)
    data = bytearray(parts[1].read_bytes())
    middle = info.byte_offset + info.size // 2
    data[middle : middle + 16] = bytes(16)  # zeros inside the gzip stream
    parts[1].write_bytes(bytes(data))
    out = tmp_path / "merged.h5"
    with pytest.raises(ValueError, match=r"p3.h5 is corrupt: x rows 0..2 cannot be decoded"):
        merge_datasets(parts, out)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    assert main(["simulate", "merge", str(parts[0]), str(text), "--out", str(out)]) == 2
    assert "notes.h5 is not an HDF5 file" in capsys.readouterr().err
    assert not out.exists()


def test_cli_explains_a_missing_bank_and_bad_values(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAIRESI_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "d.h5"
    assert main(["simulate", "dataset", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "waveform_bank.h5 does not exist" in err and "fairesi simulate bank" in err
    bank_path = tmp_path / "bank.h5"
    WaveformBank.synthetic(50, seed=0).save(bank_path)
    assert (
        main(["simulate", "dataset", "--snr", "nan", "--bank", str(bank_path), "--out", str(out)])
        == 2
    )
    assert "snr_db must be a finite" in capsys.readouterr().err
    assert not out.exists()
    assert CONFIGS == tuple(sorted(PRESETS)) and CLI_SPLITS == SPLITS


@pytest.mark.parametrize("threads", [1, 2])
def test_a_sample_does_not_depend_on_its_batch(toy_head_model, bank, threads):
    """Sample i is a function of (seed, split, i, draw) alone: the same bits whatever batch
    size, companions or position it is synthesised with (issue 18, case 9: the float32
    pow of the source scale and einsum's batched matmul used to differ by ~1e-7)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        synth = make_synth(toy_head_model, bank, "SimMEG", seed=4, n_times=64)
        reference = synth.raw("train", torch.arange(48))
        order = torch.randperm(48, generator=torch.Generator().manual_seed(threads))
        for size in (1, 3, 7, 16):
            for start in range(0, 48, size):
                index = order[start : start + size]
                raw = synth.raw("train", index)
                for name in ("sensor_clean", "noise", "source_scale", "sources"):
                    assert torch.equal(getattr(raw, name), getattr(reference, name)[index]), name
    finally:
        torch.set_num_threads(previous)


def test_a_mixture_sample_is_its_rows_sample(synth):
    """Sample i of a mixture is sample i of row i % K (any batch composition), centres
    padded with -1 to the largest N_s; the mixture round-trips and refuses bad rows."""
    rows = "5/1/1,-5/2/1,15/2/0"
    mixed = make_synth(synth.head_model, synth.bank, mixture=rows)
    assert SimConfig.from_dict(mixed.config.to_dict()) == mixed.config
    index = torch.tensor([0, 4, 5, 9, 1, 300])
    batch = mixed.batch("train", index, draw=2)
    assert batch.centres.shape == (6, 2)
    for k, row in enumerate(mixed.config.rows()):
        assert (row.snr_db, row.n_sources, row.n_rings) == mixed.config.mixture[k]
        single = Synthesizer(synth.head_model, synth.bank, row, seed=0)
        pick = torch.nonzero(index % 3 == k).flatten()
        expect = single.batch("train", index[pick], draw=2)
        for name in ("x", "target", "source_mask"):
            assert torch.equal(getattr(batch, name)[pick], getattr(expect, name))
        assert torch.equal(batch.centres[pick, : row.n_sources], expect.centres)
        assert (batch.centres[pick, row.n_sources :] == -1).all()
    with pytest.raises(ValueError, match="index is empty"):
        mixed.batch("train", index[:0])
    with pytest.raises(ValueError, match="on the fly only"):
        mixed.raw("train", index)
    for bad in ("5/1", "5/1.5/2", "5/1/2,5/1/2", "5/0/2"):
        with pytest.raises(ValueError, match="mixture|n_sources"):
            SimConfig.preset("SimEEG", mixture=bad)
