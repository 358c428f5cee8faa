"""EEG + MEG fusion: SimEEGMEG joint samples, the SE module, MMDF-ESI, the fused pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairesi.data import SimConfig, Synthesizer, normalise_input, stack_modalities
from fairesi.headmodel import HeadModel
from fairesi.models import MmdfEsi, build_model
from fairesi.models.fusion import SqueezeExcitation
from fairesi.models.mmdf_esi import _grid_side
from fairesi.simulate.bank import WaveformBank

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def joint(toy_head_model) -> Synthesizer:
    config = SimConfig.preset("SimEEGMEG", n_times=64, n_samples=240)
    bank = WaveformBank.synthetic(toy_head_model.n_regions)
    return Synthesizer(toy_head_model, bank, config, seed=2)


def test_fused_lead_field_stacks_eeg_then_meg(toy_head_model) -> None:
    fused = toy_head_model.lead_field("eeg+meg")
    eeg, meg = toy_head_model.lead_field("eeg"), toy_head_model.lead_field("meg")
    assert fused.channel_groups == (eeg.n_channels, meg.n_channels) == (32, 48)
    np.testing.assert_array_equal(fused.gain, np.concatenate([eeg.gain, meg.gain]))
    assert fused.ch_names == eeg.ch_names + meg.ch_names
    # Picking re-references the EEG rows only.
    picked = fused.pick(eeg.ch_names[:10] + meg.ch_names[:5])
    scale = np.abs(picked.gain[:10]).max()
    np.testing.assert_allclose(picked.gain[:10].mean(axis=0) / scale, 0.0, atol=1e-6)
    np.testing.assert_array_equal(picked.gain[10:], meg.gain[:5])


def test_joint_samples_share_their_sources(joint, toy_head_model) -> None:
    """With noise off (the clean data), each modality's sensor data equal its lead field
    times the shared sources; the noise is independent per modality at the set SNR."""
    raw = joint.raw("train", torch.arange(32))
    eeg = torch.as_tensor(toy_head_model.lead_field("eeg").gain)
    meg = torch.as_tensor(toy_head_model.lead_field("meg").gain)
    clean_eeg, clean_meg = raw.sensor_clean.split([32, 48], dim=1)
    for gain, clean in ((eeg, clean_eeg), (meg, clean_meg)):
        expected = gain.double() @ raw.sources.double()
        scale = expected.abs().max()
        torch.testing.assert_close(clean.double() / scale, expected / scale, atol=1e-5, rtol=0)
    noise_eeg, noise_meg = raw.noise.split([32, 48], dim=1)
    for clean, noise in ((clean_eeg, noise_eeg), (clean_meg, noise_meg)):
        snr = 10 * math.log10(float(clean.double().square().sum() / noise.double().square().sum()))
        assert snr == pytest.approx(5.0, abs=0.3)
    # Seeds reproduce; each modality block is normalised on its own.
    again = joint.batch("train", torch.arange(4))
    torch.testing.assert_close(again.x, joint.batch("train", torch.arange(4)).x, rtol=0, atol=0)
    for block in again.x.split([32, 48], dim=1):
        torch.testing.assert_close(block.abs().amax(dim=(1, 2)), torch.ones(4))
    raw4 = joint.raw("train", torch.arange(4))
    y = raw4.sensor_clean + raw4.noise
    expected = torch.cat([normalise_input(b) for b in y.split([32, 48], dim=1)], dim=1)
    torch.testing.assert_close(again.x, expected, rtol=0, atol=0)


def test_source_snr_weighs_both_modalities(joint) -> None:
    """The source SNR rule divides each channel by its modality's background power, so the
    EEG volts do not drown the MEG teslas: both modalities' weights average to one over
    their own background."""
    weight = joint._snr_channel_weight.double()
    power = joint._projected_background.double().square().mean(0)
    for block_w, block_p in zip(weight.split([32, 48]), power.split([32, 48]), strict=True):
        assert float((block_w * block_p).mean()) == pytest.approx(1.0, rel=1e-5)


def test_squeeze_excitation_by_hand() -> None:
    se = SqueezeExcitation(4, 2).double()
    with torch.no_grad():
        se.squeeze_to_hidden.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, -1.0]]))
        se.squeeze_to_hidden.bias.zero_()
        se.hidden_to_weights.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [0, 0]]))
        se.hidden_to_weights.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 2.0]))
    features = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    features[0, 0] = 2.0  # mean 2
    features[0, 1] = torch.tensor([[1.0, 3.0], [5.0, 7.0]])  # mean 4
    features[0, 3] = -1.0  # mean -1
    # squeeze = (2, 4, 0, -1); hidden = relu(2, 1) = (2, 1); w = sigmoid(2, 1, 3, 2)
    weights = se.weights(features)
    expected = torch.sigmoid(torch.tensor([[2.0, 1.0, 3.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(se(features), features * expected[:, :, None, None])


def test_mmdf_esi_shapes_errors_and_script(toy_head_model) -> None:
    torch.manual_seed(0)
    model = build_model("mmdf_esi", toy_head_model, "eeg+meg", 64, preset="tiny").eval()
    assert isinstance(model, MmdfEsi) and model.channel_groups == [32, 48]
    for n_times in (64, 17):
        x = torch.randn(3, 80, n_times)
        assert model(x).shape == (3, 50, n_times)
    x = torch.randn(2, 80, 20)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))
    with pytest.raises(ValueError, match="the EEG channels are missing"):
        model(torch.randn(2, 48, 20))
    with pytest.raises(ValueError, match="the MEG channels are missing"):
        model(torch.randn(2, 32, 20))
    with pytest.raises(ValueError, match="same time samples: EEG has 20, MEG 21"):
        stack_modalities(torch.randn(1, 32, 20), torch.randn(1, 48, 21))
    assert stack_modalities(torch.randn(2, 32, 20), torch.randn(2, 48, 20)).shape == (2, 80, 20)
    # It starts at the all-zero estimate, with feature maps free of a constant offset
    # (default biases killed every hidden unit on SimEEGMEG: mmdf_esi's docstring).
    fresh = build_model("mmdf_esi", toy_head_model, "eeg+meg", 64, preset="tiny")
    with torch.no_grad():
        assert torch.equal(fresh(torch.randn(2, 80, 8)), torch.zeros(2, 50, 8))
        for encoder, n_channels in zip(fresh.encoders, (32, 48), strict=True):
            features = encoder(torch.zeros(3, n_channels))
            assert features.shape[:2] == (3, 4) and not features.any()
    # Every parameter learns: the first step reaches the output layer, the second all.
    fresh.train()
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1)
    target = torch.randn(2, 50, 16)
    for _ in range(2):
        optimizer.zero_grad()
        (fresh(torch.randn(2, 80, 16)) - target).square().mean().backward()
        optimizer.step()
    for name, p in fresh.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mmdf_esi_on_one_modality_is_the_fused_network_less_one_encoder(toy_head_model):
    """The single-modality ablation: one encoder, SE over its F maps, the same decoder
    width; by default on the fused network's grid, so its encoder has the fused one's
    shape; a grid size given is kept."""
    fused = build_model("mmdf_esi", toy_head_model, "eeg+meg", 64, preset="tiny")
    grid = fused.encoders[0].grid.grid_size
    own = {m: _grid_side(toy_head_model.lead_field(m)) for m in ("eeg", "meg")}
    assert own["eeg"] != own["meg"] and grid == max(own.values())  # the default matters
    assert build_model("mmdf_esi", toy_head_model, "meg", 64, preset="tiny",
                       grid_size=5).encoders[0].grid.grid_size == 5  # fmt: skip
    for modality, n_channels, k in (("eeg", 32, 0), ("meg", 48, 1)):
        single = build_model("mmdf_esi", toy_head_model, modality, 64, preset="tiny").eval()
        assert single.encoders[0].grid.grid_size == grid
        assert isinstance(single, MmdfEsi) and single.channel_groups == [n_channels]
        assert len(single.encoders) == 1
        assert single.fusion.squeeze_to_hidden.in_features == 4  # F = 4 maps ('tiny')
        for name, parameter in single.encoders[0].named_parameters():
            assert parameter.shape == dict(fused.encoders[k].named_parameters())[name].shape
        assert single.hidden.in_features == fused.hidden.in_features // 2
        x = torch.randn(2, n_channels, 9)
        assert single(x).shape == (2, 50, 9)
        with torch.no_grad():
            assert torch.equal(single(x), torch.zeros(2, 50, 9))  # starts at all-zero
            torch.testing.assert_close(torch.jit.script(single)(x), single(x))
        with pytest.raises(ValueError, match=f"expects input of shape \\(batch, {n_channels}"):
            single(torch.randn(2, 80, 9))


def test_fused_training_evaluation_and_export(tmp_path) -> None:
    """SimEEGMEG through the whole pipeline: train, evaluate, export, run the export."""
    from fairesi.evaluate import evaluate_checkpoint
    from fairesi.export import export_checkpoint, load_exported, read_metadata
    from fairesi.train import TrainConfig, load_checkpoint, train

    config = TrainConfig.from_sources(
        preset="tiny",
        overrides={
            "model": "mmdf_esi",
            "dataset": "SimEEGMEG",
            "n_train_samples": 16,
            "n_val_samples": 8,
            "batch_size": 8,
            "max_steps": 2,
            "threads": 1,
            "progress": False,
            "out_dir": str(tmp_path / "run"),
        },
    )
    assert config.data.modality == "eeg+meg" and config.data.n_times == 64
    train(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert isinstance(checkpoint.model, MmdfEsi)
    assert len(checkpoint.config["head_model"]["ch_names"]) == 80
    result = evaluate_checkpoint(tmp_path / "run" / "last.pt", n=8, progress=False)
    assert result.per_sample["precision"].shape == (8,)
    path = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "fused.pt", fused_op=False)
    meta = read_metadata(path)
    assert meta["modality"] == "eeg+meg" and meta["ch_types"][:32] == ["eeg"] * 32
    epoch = torch.randn(80, 64)
    with torch.no_grad():
        expected = checkpoint.model(
            torch.cat([normalise_input(b[None]) for b in epoch.split([32, 48])], dim=1)
        )[0]
    torch.testing.assert_close(load_exported(path)(epoch), expected, rtol=0, atol=1e-5)


def test_head_model_without_both_lead_fields_is_refused() -> None:
    head = HeadModel.toy()
    only_meg = head.__class__(**{**head.__dict__, "lead_fields": {"meg": head.lead_field("meg")}})
    with pytest.raises(ValueError, match="no 'eeg' lead field"):
        only_meg.lead_field("eeg+meg")


def test_fused_fair_esi(toy_head_model) -> None:
    """'fair_esi' on 'eeg+meg' is FAIR-ESI with squeeze-and-excitation early fusion: one
    branch per modality (its own patch-wise blocks and Eq. 5 terms), a shared decoder."""
    from fairesi.models import FairEsi, FairEsiFusion

    torch.manual_seed(0)
    model = build_model("fair_esi", toy_head_model, "eeg+meg", 40, preset="tiny")
    assert isinstance(model, FairEsiFusion) and model.channel_groups == [32, 48]
    assert isinstance(build_model("fair_esi", toy_head_model, "eeg", 40, preset="tiny"), FairEsi)
    # Each branch's blocks see only its modality's channels.
    assert model.branches[0].front.residual.in_features == 32
    assert model.branches[1].front.residual.in_features == 48
    x = torch.randn(2, 80, 40)
    assert model(x).shape == (2, 50, 40)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))

        # The EEG branch's output depends only on the EEG channels (until the fusion).
        def eeg_branch(data):
            own = model.patching(data)[:, :32]
            return model.branches[0](model.refine(own) + own, data[:, :32], own)

        eeg_latent = eeg_branch(x)
        other = x.clone()
        other[:, 32:] = torch.randn(2, 48, 40)
        torch.testing.assert_close(eeg_branch(other), eeg_latent)
    with pytest.raises(ValueError, match="FairEsiFusion fuses EEG and MEG.*EEG channels are"):
        model(torch.randn(2, 48, 40))
    # key_energy='input' reaches every branch: with no view to reorder the energies it
    # picks the same key patches, so the same output.
    torch.manual_seed(1)
    plain = build_model(
        "fair_esi", toy_head_model, "eeg+meg", 40, preset="tiny", spectral=False, temporal=False
    ).eval()
    keyed = build_model(
        "fair_esi", toy_head_model, "eeg+meg", 40, preset="tiny", spectral=False,
        temporal=False, key_energy="input",
    ).eval()  # fmt: skip
    keyed.load_state_dict(plain.state_dict())
    assert [b.key_from_input for b in keyed.branches] == [True, True]
    with torch.no_grad():
        torch.testing.assert_close(keyed(x), plain(x))
        torch.testing.assert_close(torch.jit.script(keyed)(x), plain(x))


def test_squeeze_excitation_over_time() -> None:
    """The same module on (B, K, T) features squeezes over time."""
    se = SqueezeExcitation(6, 2)
    features = torch.randn(3, 6, 11)
    weights = se.weights(features)
    expected = torch.sigmoid(
        se.hidden_to_weights(torch.relu(se.squeeze_to_hidden(features.mean(-1))))
    )
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(se(features), features * expected[:, :, None])


@pytest.mark.filterwarnings("ignore:using the analytic stand-in")
def test_fusion_study_script_dry_run(tmp_path) -> None:
    """bench/fusion_train.sh at toy size: four mixture-trained networks and MMDF-ESI's
    two single-modality ablations (ABLATION=1), then the fusion benchmark scores every row
    with them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "fusion_train.sh"
    out = tmp_path / "fusion"
    env = {**os.environ, "OUT": str(out), "PRESET": "tiny", "MINUTES": "0.02", "N": "2",
           "ROWS": "5/1/1,-5/1/0", "PYTHON": sys.executable, "ABLATION": "1"}  # fmt: skip
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for method in ("mmdf_esi", "fair_esi", "fair_esi_eeg", "fair_esi_meg", "mmdf_esi_eeg",
                   "mmdf_esi_meg"):  # fmt: skip
        assert (out / method / "last.pt").is_file()
    from fairesi.train import load_checkpoint, read_checkpoint

    # The ablations keep the fused network's grid, so their encoders match its encoders.
    encoders = {
        method: load_checkpoint(out / method / "last.pt").model.encoders
        for method in ("mmdf_esi", "mmdf_esi_eeg", "mmdf_esi_meg")
    }
    for k, method in enumerate(("mmdf_esi_eeg", "mmdf_esi_meg")):
        assert len(encoders[method]) == 1
        assert encoders[method][0].conv.weight.shape == encoders["mmdf_esi"][k].conv.weight.shape
        assert encoders[method][0].grid.grid_size == encoders["mmdf_esi"][k].grid.grid_size

    instants = {
        method: read_checkpoint(out / method / "last.pt")["config"]["train"]["train_instants"]
        for method in ("mmdf_esi", "fair_esi")
    }
    assert instants == {"mmdf_esi": 32, "fair_esi": None}  # MMDF-ESI learns from instants
    table = (out / "benchmark" / "benchmark.md").read_text()
    assert "SimEEGMEG" in table and "FAIR-ESI (EEG only)" in table and "MMDF-ESI" in table
    assert table.count("| Precision (%) |") >= 2  # both rows
    summary = (out / "summary.md").read_text()
    assert "| MMDF-ESI | " in summary and "| FAIR-ESI MEG | " in summary  # budgets
    rows = [r for r in summary.splitlines() if r.startswith("| 5 dB, 1 ring(s) | MMDF-ESI |")]
    # Paired: target, recall/nMSE, then the same two against the MMDF-ESI ablations.
    assert len(rows) == 4 and rows[0].endswith(" met |") and rows[2].endswith(" met |")
    assert "target met in" in summary
    assert "| MMDF-ESI MEG | " in summary and "The fusion ablation" in summary
    assert (out / "summary.png").stat().st_size > 10_000


def _write_per_sample(folder, methods, le):
    """A per_sample.csv of one configuration (5 dB, 1 source, 1 ring) with these LEs."""
    import csv

    folder.mkdir(parents=True)
    with open(folder / "per_sample.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "snr_db", "n_sources", "n_rings", "method", "sample",
                         "precision", "recall", "le_mm", "sd_mm", "nmse"])  # fmt: skip
        for method in methods:
            for i, value in enumerate(le[method]):
                precision = "" if value != value else 0.5  # NaN: left out, as DeepSIF
                empty = value != value
                writer.writerow(["SimEEGMEG", 5.0, 1, 1, method, i, precision, 1.0,
                                 "" if empty else value, 1.0,
                                 "" if empty else value * 1e-4])  # fmt: skip


def test_fusion_summary_merges_benchmarks_split_by_method(tmp_path, bench_script, capsys):
    """bench/fusion_summary.py --benchmark A --benchmark B: one table from two benchmark
    runs on the same samples, the paired differences on the samples both define, and the
    count of left-out (empty) samples."""
    summary = bench_script("fusion_summary")
    nan = float("nan")
    le = {
        "mmdf_esi": [1.0, 2.0, nan, 4.0],
        "fair_esi": [2.0, 2.0, 2.0, 2.0],
        "fair_esi@eeg": [3.0, 4.0, 5.0, 8.0],
        "fair_esi@meg": [2.0, 3.0, 4.0, 6.0],
    }
    _write_per_sample(tmp_path / "a", ["mmdf_esi", "fair_esi"], le)
    _write_per_sample(tmp_path / "b", ["fair_esi@eeg", "fair_esi@meg"], le)
    assert summary.main([str(tmp_path), "--benchmark", str(tmp_path / "a"),
                         "--benchmark", str(tmp_path / "b")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    # MMDF-ESI - EEG on samples 0, 1, 3: (-2, -2, -4) -> -2.67 ± s.e. 0.67.
    assert "| 5 dB, 1 ring(s) | MMDF-ESI | -2.67 ± 0.67 | -1.33 ± 0.33 |" in text
    # Recall and nMSE (here nMSE = LE x 1e-4, so its paired differences are LE's).
    assert "| MMDF-ESI | +0.00 ± 0.00 | +0.00 ± 0.00 | -2.67 ± 0.67 | -1.33 ± 0.33 |" in text
    assert "| 5 dB, 1 ring(s) | 1 | 0 | 0 | 0 |" in text  # one MMDF-ESI sample left out
    assert "| 5 dB, 1 ring(s) | 2.33 ± 1.25 | 2.00 ± 0.00 |" in text  # mean ± std, defined
    # The same method in two parts is refused.
    with pytest.raises(SystemExit):
        summary.main([str(tmp_path), "--benchmark", str(tmp_path / "a"),
                      "--benchmark", str(tmp_path / "a")])  # fmt: skip
    assert "in two benchmark runs" in capsys.readouterr().err


def test_fusion_summary_adds_the_mmdf_esi_ablation_when_benchmarked(tmp_path, bench_script, capsys):
    """With mmdf_esi@eeg and mmdf_esi@meg in the benchmark, the summary pairs MMDF-ESI with
    them too (the same network less one encoder) and counts the rows it beats both."""
    summary = bench_script("fusion_summary")
    le = {
        "mmdf_esi": [1.0, 2.0, 3.0, 4.0],
        "fair_esi": [2.0, 2.0, 2.0, 2.0],
        "fair_esi@eeg": [3.0, 4.0, 5.0, 8.0],
        "fair_esi@meg": [2.0, 3.0, 4.0, 6.0],
        "mmdf_esi@eeg": [2.0, 2.0, 5.0, 7.0],
        "mmdf_esi@meg": [1.0, 3.0, 3.0, 5.0],
    }
    _write_per_sample(tmp_path / "a", list(le), le)
    assert summary.main([str(tmp_path), "--benchmark", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "| configuration | MMDF-ESI | FAIR-ESI fused | FAIR-ESI EEG | FAIR-ESI MEG | " \
           "MMDF-ESI EEG | MMDF-ESI MEG |" in text  # fmt: skip
    ablation = text[text.index("The fusion ablation") :]
    # MMDF-ESI - EEG alone: (-1, 0, -2, -3) -> -1.50 ± 0.65; - MEG alone: (0, -1, 0, -1)
    # -> -0.50 ± 0.29. Precision is the same constant for all (0.5), so not 'better'.
    assert "| 5 dB, 1 ring(s) | MMDF-ESI | -1.50 ± 0.65 | -0.50 ± 0.29 | +0.00 ± 0.00 |" in ablation
    assert "| not met |" in ablation
    assert "alone in 0 of 1 configurations" in ablation
    # Without the ablation's methods there is no ablation section.
    _write_per_sample(tmp_path / "b", ["mmdf_esi", "fair_esi@eeg", "fair_esi@meg"], le)
    summary.main([str(tmp_path), "--benchmark", str(tmp_path / "b")])
    assert "The fusion ablation" not in capsys.readouterr().out
