"""Learned baselines DeepSIF and ConvDip: shapes, TorchScript, training, sensor maps."""

import io

import numpy as np
import pytest
import torch

from fairesi.models.convdip import (
    ConvDip,
    ConvDipConfig,
    _azimuthal_equidistant,
    sensor_grid_interpolation,
)
from fairesi.models.deepsif import DeepSif, DeepSifConfig

# torch 2.13 deprecates TorchScript, which the deployment path (fairesi export, fairesi-infer) still uses.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

MODELS = {"deepsif": DeepSif, "convdip": ConvDip}
N_TIMES = 24


def _build(cls, head_model, modality, **hyper):
    torch.manual_seed(0)
    return cls.from_head_model(head_model, modality, N_TIMES, preset="tiny", **hyper)


@pytest.mark.parametrize("modality", ["eeg", "meg"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_and_script_round_trip(toy_head_model, name, modality):
    model = _build(MODELS[name], toy_head_model, modality).eval()
    n_channels = toy_head_model.lead_field(modality).n_channels
    x = torch.randn(3, n_channels, N_TIMES)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (3, toy_head_model.n_regions, N_TIMES)
        assert torch.isfinite(y).all()
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(model), buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        torch.testing.assert_close(loaded(x), y)
        # Windows of another length work too (both models are applied per sample / step).
        assert loaded(x[:, :, :10]).shape == (3, toy_head_model.n_regions, 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_time_samples_are_independent_for_convdip_causal_for_deepsif(toy_head_model, name):
    model = _build(MODELS[name], toy_head_model, "eeg").eval()
    x = torch.randn(1, toy_head_model.lead_field("eeg").n_channels, N_TIMES)
    changed = x.clone()
    changed[:, :, 10] += 1.0
    with torch.no_grad():
        diff = (model(changed) - model(x)).abs().amax(dim=(0, 1))
    assert (diff[:10] == 0).all()  # no model looks ahead in time
    assert diff[10] > 0
    if name == "convdip":
        assert (diff[11:] == 0).all()  # per-sample CNN
    else:
        assert diff[11:].max() > 0  # the LSTM carries state forward


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_steps_reduce_loss(toy_head_model, name):
    model = _build(MODELS[name], toy_head_model, "meg")
    gain = torch.as_tensor(toy_head_model.lead_field("meg").gain, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    target = torch.zeros(4, toy_head_model.n_regions, N_TIMES)
    for b, region in enumerate([2, 11, 25, 40]):
        target[b, region] = torch.sin(torch.linspace(0, 3, N_TIMES)) * (1 + b / 4)
    x = torch.einsum("cr,brt->bct", gain, target)
    x = x / x.abs().amax(dim=(1, 2), keepdim=True)
    x = x + 0.01 * torch.randn(x.shape, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[:: len(losses) // 4]


def test_deepsif_sizes_follow_presets(toy_head_model):
    paper = DeepSif.from_head_model(toy_head_model, "eeg", N_TIMES, preset="paper")
    assert paper.temporal.lstm.num_layers == 3
    assert paper.temporal.lstm.hidden_size == toy_head_model.n_regions  # LSTM state = regions
    assert paper.spatial.head.out_features == 500
    assert isinstance(paper.temporal.to_regions, torch.nn.Identity)
    tiny = DeepSif.from_head_model(toy_head_model, "eeg", N_TIMES, preset="tiny", lstm_layers=2)
    assert tiny.temporal.lstm.num_layers == 2
    assert tiny.config.to_dict()["lstm_hidden"] == 16
    assert DeepSifConfig(**tiny.config.to_dict()) == tiny.config


@pytest.mark.parametrize("cls", [DeepSif, ConvDip])
def test_bad_hyper_and_input(toy_head_model, cls):
    with pytest.raises(ValueError, match="preset"):
        cls.from_head_model(toy_head_model, "eeg", N_TIMES, preset="huge")
    with pytest.raises(TypeError, match="hyper-parameters"):
        cls.from_head_model(toy_head_model, "eeg", N_TIMES, preset="tiny", n_heads=4)
    model = _build(cls, toy_head_model, "eeg")
    n_channels = toy_head_model.lead_field("eeg").n_channels
    with pytest.raises(ValueError, match=f"{n_channels} channels"):
        model(torch.zeros(1, n_channels + 1, N_TIMES))
    with pytest.raises(ValueError, match="must be"):
        ConvDipConfig(n_channels=4, n_regions=5, n_times=6, kernel_size=2)
    with pytest.raises(ValueError, match="must be"):
        DeepSifConfig(n_channels=4, n_regions=0, n_times=6)


@pytest.mark.parametrize("modality", ["eeg", "meg"])
def test_sensor_maps_interpolate_linearly(toy_head_model, modality):
    lead_field = toy_head_model.lead_field(modality)
    matrix, n_layers, grid = sensor_grid_interpolation(
        lead_field.ch_positions_m, list(lead_field.ch_types), grid_size=15
    )
    assert matrix.shape == (n_layers * 15 * 15, lead_field.n_channels)
    # Every pixel is a convex combination of one layer's sensors (inside the hull) or 0.
    sums = matrix.sum(axis=1)
    assert np.all(np.isclose(sums, 1.0, atol=1e-5) | (sums == 0))
    assert (matrix >= -1e-6).all() and (sums > 0).mean() > 0.5
    # Piecewise-linear interpolation reproduces a linear field of the map coordinates.
    flat = _azimuthal_equidistant(np.asarray(lead_field.ch_positions_m, dtype=np.float64))
    field = 0.3 + 2.0 * flat[:, 0] - 1.5 * flat[:, 1]
    axis_x = np.linspace(flat[:, 0].min(), flat[:, 0].max(), 15)
    axis_y = np.linspace(flat[:, 1].min(), flat[:, 1].max(), 15)
    px, py = np.meshgrid(axis_x, axis_y, indexing="xy")
    expected = (0.3 + 2.0 * px - 1.5 * py).ravel()
    images = (matrix.astype(np.float64) @ field).reshape(n_layers, -1)
    inside = matrix.reshape(n_layers, 15 * 15, -1).sum(axis=2) > 0.5
    for layer in range(n_layers):
        np.testing.assert_allclose(images[layer][inside[layer]], expected[inside[layer]], atol=1e-5)


def test_sensor_maps_projection_is_equidistant():
    """Sensors on a sphere map to their great-circle angle from the pole."""
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((40, 3))
    directions[:, 2] = np.abs(directions[:, 2]) + 0.5  # upper cap around +z
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centre = np.array([0.01, -0.02, 0.03])
    flat = _azimuthal_equidistant(centre + 0.09 * directions)
    pole = directions.mean(axis=0) / np.linalg.norm(directions.mean(axis=0))
    np.testing.assert_allclose(
        np.linalg.norm(flat, axis=1), np.arccos(directions @ pole), atol=1e-9
    )


def test_sensor_maps_separate_colocated_sensors():
    """A Neuromag-like triplet layout (mag + two grads per spot) gives three layers."""
    rng = np.random.default_rng(1)
    spots = rng.standard_normal((20, 3))
    spots[:, 2] = np.abs(spots[:, 2]) + 0.5
    spots = 0.1 * spots / np.linalg.norm(spots, axis=1, keepdims=True)
    positions = np.repeat(spots, 3, axis=0)
    types = ["mag", "grad", "grad"] * 20
    matrix, n_layers, grid = sensor_grid_interpolation(positions, types, grid_size=8)
    assert n_layers == 3 and grid == 8
    per_layer = matrix.reshape(3, 64, 60)
    for layer, first in enumerate([0, 1, 2]):
        used = np.flatnonzero(per_layer[layer].any(axis=0))
        assert set(used) <= set(range(first, 60, 3))
    with pytest.raises(ValueError, match="shape"):
        sensor_grid_interpolation(positions[:, :2], types)
    with pytest.raises(ValueError, match="at least 3"):
        sensor_grid_interpolation(positions[:6], types[:6])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_and_trained_by_the_pipeline(toy_head_model, tmp_path, name):
    from fairesi.models import MODELS as REGISTRY
    from fairesi.models import build_model
    from fairesi.train import TrainConfig, load_checkpoint, train

    assert REGISTRY[name] is MODELS[name]
    assert isinstance(
        build_model(name, toy_head_model, "eeg", N_TIMES, preset="tiny"), MODELS[name]
    )
    config = TrainConfig.from_sources(
        preset="tiny",
        overrides={
            "model": name,
            "n_train_samples": 16,
            "n_val_samples": 8,
            "batch_size": 8,
            "max_steps": 3,
            "threads": 1,
            "progress": False,
            "out_dir": str(tmp_path),
        },
    )
    train(config)
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert isinstance(checkpoint.model, MODELS[name])
    assert checkpoint.config["model"]["name"] == name
    x = torch.randn(2, len(checkpoint.config["head_model"]["ch_names"]), 64)
    with torch.no_grad():
        assert checkpoint.model(x).shape == (2, checkpoint.head_model.n_regions, 64)


@pytest.mark.parametrize(("fair", "sif"), [("cpu", "matched"), ("wide", "wide-matched")])
@pytest.mark.parametrize(("modality", "n_times"), [("meg", 500), ("eeg", 260)])
def test_matched_deepsif_preset_has_fair_esi_size(
    modality: str, n_times: int, fair: str, sif: str
) -> None:
    """DeepSIF 'matched' / 'wide-matched' and FAIR-ESI 'cpu' / 'wide' have parameter counts
    within 10% of each other on SimMEG and SimEEG of the default head model (the
    equal-size comparison)."""
    from fairesi.headmodel import HeadModel
    from fairesi.models import build_model

    head = HeadModel.default()

    def size(name: str, preset: str) -> int:
        model = build_model(name, head, modality, n_times, preset=preset)
        return sum(p.numel() for p in model.parameters())

    ratio = size("deepsif", sif) / size("fair_esi", fair)
    assert 0.9 <= ratio <= 1.1, ratio


def test_wide_rank_deepsif_has_fair_esi_wide_output_rank() -> None:
    """DeepSIF 'wide-rank' maps as many features to the regions as FAIR-ESI 'wide' (the
    equal-rank comparison): LSTM units = 2 x BiGRU units; 'wide-matched' has fewer."""
    from fairesi.models import FairEsiConfig

    sizes = dict(n_channels=306, n_regions=994, n_times=128)
    wide = FairEsiConfig.preset("wide", **sizes)
    assert DeepSifConfig.preset("wide-rank", **sizes).lstm_hidden == 2 * wide.gru_hidden == 512
    assert DeepSifConfig.preset("wide-matched", **sizes).lstm_hidden < 2 * wide.gru_hidden
    assert wide == FairEsiConfig.preset("cpu", **sizes, gru_hidden=256)
