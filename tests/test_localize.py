"""fairesi.localize: recorded MNE data -> exported model -> mne.SourceEstimate."""

from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from fairesi.cli import main
from fairesi.export import build_metadata, export_model, load_exported
from fairesi.localize import localize, localize_regions, save_estimate, window_starts
from fairesi.models import build_model

N_TIMES = 32
SFREQ = 500.0


@pytest.fixture(scope="module")
def exported(toy_head_model, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("fair_esi", toy_head_model, "meg", N_TIMES, preset="tiny").eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    metadata = build_metadata(toy_head_model, "meg", N_TIMES, sfreq=SFREQ)
    export_model(model, path, metadata, fused_op=False)
    return path


def _evoked(head_model, n_samples, *, rename=None, sfreq=SFREQ, seed=0):
    lead_field = head_model.lead_field("meg")
    names = [rename(n) if rename else n for n in lead_field.ch_names]
    info = mne.create_info(names, sfreq, lead_field.ch_types)
    data = np.random.default_rng(seed).standard_normal((len(names), n_samples)) * 1e-12
    return mne.EvokedArray(data, info, tmin=-0.1, verbose="error")


def test_window_starts_cover_every_sample():
    assert window_starts(32, 32).tolist() == [0]
    assert window_starts(64, 32).tolist() == [0, 32]
    assert window_starts(70, 32).tolist() == [0, 32, 38]


def test_localize_matches_the_model_window_by_window(exported, toy_head_model):
    # Channels shuffled and renamed with spaces: picked back by name, in the model's order.
    evoked = _evoked(toy_head_model, 75, rename=lambda n: n.replace("MEG", "MEG "))
    evoked.reorder_channels(evoked.ch_names[::-1])
    stc = localize(exported, evoked, head_model=toy_head_model)

    model = load_exported(exported)
    data = evoked.data[::-1]  # back in the model's channel order
    x = torch.from_numpy(data.astype(np.float32))
    expected = np.zeros((toy_head_model.n_regions, 75), np.float32)
    for start in (0, 32, 43):
        expected[:, start : start + N_TIMES] = model(x[:, start : start + N_TIMES]).numpy()
    np.testing.assert_allclose(localize_regions(model, data), expected, atol=1e-6)

    assert stc.data.shape == (sum(len(v) for v in toy_head_model.vertno), 75)
    region = toy_head_model.vertex_region
    np.testing.assert_allclose(stc.data[region >= 0], expected[region[region >= 0]], atol=1e-6)
    assert np.all(stc.data[region < 0] == 0)
    assert stc.tmin == pytest.approx(-0.1)
    assert stc.tstep == pytest.approx(1 / SFREQ)


@pytest.mark.parametrize(
    ("kwargs", "n_samples", "message"),
    [
        ({"sfreq": 1000.0}, 64, "1000 Hz but the model expects 500 Hz"),
        ({"rename": lambda n: "X" + n}, 64, "lacks 48 of the model's 48 channels"),
        ({}, 20, "needs at least 32"),
    ],
)
def test_bad_recordings(exported, toy_head_model, kwargs, n_samples, message):
    evoked = _evoked(toy_head_model, n_samples, **kwargs)
    with pytest.raises(ValueError, match=message):
        localize(exported, evoked, head_model=toy_head_model)


def test_nan_recording(exported, toy_head_model):
    evoked = _evoked(toy_head_model, 64)
    evoked.data[3, 10] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        localize(exported, evoked, head_model=toy_head_model)


def test_wrong_head_model(exported, toy_head_model):
    from fairesi.headmodel import HeadModel

    with pytest.raises(ValueError, match="trained on head model"):
        localize(exported, _evoked(toy_head_model, 64), head_model=HeadModel.toy(n_regions=40))


@pytest.mark.parametrize("suffix", ["", ".h5"])
def test_save_estimate_round_trip(exported, toy_head_model, tmp_path, suffix):
    stc = localize(exported, _evoked(toy_head_model, 64), head_model=toy_head_model)
    written = save_estimate(stc, tmp_path / f"est{suffix}")
    names = sorted(p.name for p in written)
    assert names == (["est.h5"] if suffix else ["est-lh.stc", "est-rh.stc"])  # exactly -o
    back = mne.read_source_estimate(written[0])
    np.testing.assert_allclose(back.data, stc.data, rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # A directory (existing, or named with a trailing separator) receives estimate-*.stc.
    (tmp_path / "dir").mkdir(exist_ok=True)
    for where in (tmp_path / "dir", str(tmp_path / "new") + "/"):
        written = save_estimate(stc, where)
        assert [p.name for p in written] == ["estimate-lh.stc", "estimate-rh.stc"]
        assert written[0].parent == Path(where)


def test_cli(exported, toy_head_model, tmp_path, capsys):
    head = tmp_path / "toy.npz"
    toy_head_model.save(head)
    fif = tmp_path / "rec-ave.fif"
    _evoked(toy_head_model, 64).save(fif, verbose="error")
    argv = [
        "localize",
        str(exported),
        str(fif),
        "-o",
        str(tmp_path / "est"),
        "--head-model",
        str(head),
    ]
    assert main(argv) == 0
    assert "est-lh.stc" in capsys.readouterr().out
    assert main(["localize", str(exported), str(tmp_path / "none.fif"), "-o", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # --plot needs the fsaverage5 surface, which the toy head model does not have.
    assert main([*argv, "--plot", str(tmp_path / "brain.png")]) == 2
    assert "not on it" in capsys.readouterr().err
    assert main([*argv, "--plot", str(fif)]) == 2  # never overwrites an input
    assert "rec-ave.fif" in capsys.readouterr().err and fif.stat().st_size > 1000


def test_fused_model_on_a_recording_with_eeg_and_meg(toy_head_model, tmp_path):
    """A fused (EEG+MEG) export picks both channel sets from one recording (EEG first);
    with the MEG channels absent it names them."""
    from fairesi.data import normalise_input

    torch.manual_seed(0)
    model = build_model("mmdf_esi", toy_head_model, "eeg+meg", N_TIMES, preset="tiny").eval()
    path = tmp_path / "fused.pt"
    metadata = build_metadata(toy_head_model, "eeg+meg", N_TIMES, sfreq=SFREQ)
    export_model(model, path, metadata, fused_op=False)
    lead_field = toy_head_model.lead_field("eeg+meg")
    rng = np.random.default_rng(1)
    data = rng.standard_normal((80, 40)) * np.r_[np.full(32, 1e-6), np.full(48, 1e-12)][:, None]
    # MEG channels listed first in the recording: picked back into the model's order.
    order = list(range(32, 80)) + list(range(32))
    info = mne.create_info(
        [lead_field.ch_names[i] for i in order], SFREQ, [lead_field.ch_types[i] for i in order]
    )
    evoked = mne.EvokedArray(data[order], info, verbose="error")
    stc = localize(path, evoked, head_model=toy_head_model)
    x = torch.from_numpy(data.astype(np.float32))
    expected = np.zeros((toy_head_model.n_regions, 40), np.float32)
    for start in (0, 8):
        window = x[None, :, start : start + N_TIMES]
        blocks = torch.cat([normalise_input(b) for b in window.split([32, 48], dim=1)], dim=1)
        with torch.no_grad():
            expected[:, start : start + N_TIMES] = model(blocks)[0].numpy()
    region = toy_head_model.vertex_region
    np.testing.assert_allclose(stc.data[region >= 0], expected[region[region >= 0]], atol=1e-5)
    meg_only = evoked.copy().pick([n for n in evoked.ch_names if n.startswith("MEG")])
    with pytest.raises(ValueError, match="lacks 32 of the model's 80 channels"):
        localize(path, meg_only, head_model=toy_head_model)


def test_a_head_model_with_other_contents_is_refused(exported, toy_head_model):
    """The export carries its head model's content hash: a head model with the same name
    and region count but other geometry or gains is refused (issue 17)."""
    from fairesi.headmodel import HeadModel

    meta = load_exported(exported).metadata
    assert meta["head_model_sha256"] == toy_head_model.content_hash
    other = HeadModel.toy(seed=1)  # same name and sizes, other jitter
    assert other.name == toy_head_model.name and other.n_regions == toy_head_model.n_regions
    with pytest.raises(ValueError, match="pass the head model it was trained on"):
        localize(exported, _evoked(toy_head_model, 64), head_model=other)


def test_recordings_are_told_apart_by_content(exported, toy_head_model, tmp_path, capsys):
    """Evoked, Epochs and Raw whatever their file names; Epochs give one estimate per epoch;
    a file that is not FIF is one line (issues 17 and 18)."""
    from fairesi.localize import read_recording

    evoked = _evoked(toy_head_model, 64)
    evoked.save(tmp_path / "meg_evoked.fif", verbose="error")  # no -ave suffix
    assert isinstance(read_recording(tmp_path / "meg_evoked.fif"), mne.Evoked)
    data = np.random.default_rng(2).standard_normal((3, 48, 64)) * 1e-12
    epochs = mne.EpochsArray(data, evoked.info, verbose="error")
    epochs.save(tmp_path / "recording.fif", verbose="error", overwrite=True)
    read = read_recording(tmp_path / "recording.fif")
    assert isinstance(read, mne.BaseEpochs) and len(read) == 3
    stcs = localize(exported, read, head_model=toy_head_model)
    assert len(stcs) == 3 and stcs[1].data.shape[1] == 64
    head = tmp_path / "toy.npz"
    toy_head_model.save(head)
    out = tmp_path / "est.h5"
    argv = ["localize", str(exported), str(tmp_path / "recording.fif"), "-o", str(out),
            "--head-model", str(head)]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.glob("est_epoch*")) == [
        "est_epoch000.h5", "est_epoch001.h5", "est_epoch002.h5"
    ]  # fmt: skip
    text = tmp_path / "notes.fif"
    text.write_text("not a recording")
    assert main(["localize", str(exported), str(text), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is not an MNE FIF file of Raw, Epochs or Evoked data" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_region_time_courses(exported, toy_head_model, tmp_path, suffix):
    """--regions writes regions x samples with the region names, no vertex expansion."""
    import h5py

    evoked = _evoked(toy_head_model, 70)
    evoked.save(tmp_path / "rec-ave.fif", verbose="error")
    head = tmp_path / "toy.npz"
    toy_head_model.save(head)
    out = tmp_path / f"regions{suffix}"
    argv = ["localize", str(exported), str(tmp_path / "rec-ave.fif"), "-o", str(out),
            "--regions", "--head-model", str(head), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    expected = localize_regions(load_exported(exported), evoked.data)
    names = list(toy_head_model.region_names)
    if suffix == ".h5":
        with h5py.File(out) as f:
            np.testing.assert_allclose(f["data"][()], expected, atol=1e-6)
            assert [n.decode() for n in f["region_names"][()]] == names
            np.testing.assert_allclose(f["times"][()], evoked.times, atol=1e-6)
    else:
        lines = out.read_text().splitlines()
        assert len(lines) == 1 + len(names) and lines[1].split(",")[0] == names[0]
        row = np.array(lines[1].split(",")[1:], dtype=float)
        np.testing.assert_allclose(row, expected[0], rtol=1e-5, atol=1e-6)


def _eeg_evoked(head_model, *, drop=(), bad=(), garbage=()):
    """EEG of a smooth potential (linear in the electrode position) on the toy montage."""
    lead_field = head_model.lead_field("eeg")
    info = mne.create_info(list(lead_field.ch_names), SFREQ, "eeg")
    pos = np.asarray(lead_field.ch_positions_m, float)
    for ch, p in zip(info["chs"], pos, strict=True):
        ch["loc"][:3] = p
    wave = np.sin(np.linspace(0, 3, 40))
    data = (pos @ np.array([1.0, 0.5, -0.3]))[:, None] * wave * 1e-4
    for name in garbage:
        data[lead_field.ch_names.index(name)] = 1.0  # a dead amplifier
    evoked = mne.EvokedArray(data, info, verbose="error")
    evoked.info["bads"] = list(bad)
    return evoked.drop_channels(list(drop)), data


def test_bad_and_dropped_eeg_channels_are_interpolated(toy_head_model):
    from fairesi.localize import recording_data

    names = toy_head_model.lead_field("eeg").ch_names
    meta = {"ch_names": names, "ch_types": ["eeg"] * len(names), "sfreq": SFREQ, "n_times": 16}
    clean, truth = _eeg_evoked(toy_head_model)
    assert np.array_equal(recording_data(clean, meta, head_model=toy_head_model), truth)
    evoked, _ = _eeg_evoked(toy_head_model, bad=[names[3]], garbage=[names[3]], drop=[names[7]])
    with pytest.warns(UserWarning, match=f"interpolating 2 .*{names[3]}.*{names[7]}"):
        data = recording_data(evoked, meta, head_model=toy_head_model)
    scale = np.abs(truth).max()
    for k in (3, 7):  # rebuilt from the neighbours: the smooth field, not the garbage
        assert np.abs(data[k] - truth[k]).max() < 0.3 * scale
    assert np.array_equal(data[0], truth[0])  # good channels untouched
    too_many, _ = _eeg_evoked(toy_head_model, bad=names[:4])  # 4 of 32 > 10%
    with pytest.raises(ValueError, match="4 of the model's 32 channels are marked bad"):
        recording_data(too_many, meta, head_model=toy_head_model)


def test_a_dropped_meg_channel_is_refused_with_advice(toy_head_model):
    from fairesi.localize import recording_data

    lead_field = toy_head_model.lead_field("meg")
    meta = {"ch_names": lead_field.ch_names, "ch_types": lead_field.ch_types, "sfreq": SFREQ,
            "n_times": 16}  # fmt: skip
    evoked = _evoked(toy_head_model, 40).drop_channels([lead_field.ch_names[0]])
    with pytest.raises(ValueError, match="mark them bad instead of dropping"):
        recording_data(evoked, meta, head_model=toy_head_model)


def test_streamed_stc_equals_mne_in_memory(toy_head_model, tmp_path):
    """write_stc_streamed (blocks of samples) writes what MNE's own writer writes."""
    from fairesi.localize import source_estimate, write_stc_streamed

    regions = np.random.default_rng(1).standard_normal((toy_head_model.n_regions, 37))
    regions = regions.astype(np.float32)
    stc = source_estimate(regions, toy_head_model, tmin=-0.2, tstep=0.002)
    stc.save(tmp_path / "mne", ftype="stc", verbose="error")
    paths = write_stc_streamed(
        regions, toy_head_model, tmp_path / "ours", tmin=-0.2, tstep=0.002, chunk=5
    )
    assert [p.name for p in paths] == ["ours-lh.stc", "ours-rh.stc"]
    for hemi in ("lh", "rh"):
        ours = (tmp_path / f"ours-{hemi}.stc").read_bytes()
        assert ours == (tmp_path / f"mne-{hemi}.stc").read_bytes()
    back = mne.read_source_estimate(tmp_path / "ours")
    np.testing.assert_array_equal(back.data, stc.data)
