"""Tests of the FAIR-ESI network (fairesi.models.fair_esi) and the model registry."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from fairesi.models import MODELS, FairEsi, FairEsiConfig, build_model
from fairesi.models.fair_esi import Patching, n_patches, select_key_patches
from fairesi.ops import spectral_temporal_refine_reference


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these small models on one thread: on a shared 2-core box, intra-op threads
    spin-wait for each other and make tiny ops up to 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(n_channels: int = 12, n_regions: int = 20, n_times: int = 40, **overrides) -> FairEsi:
    torch.manual_seed(0)
    config = FairEsiConfig.preset(
        "tiny", n_channels=n_channels, n_regions=n_regions, n_times=n_times, **overrides
    )
    return FairEsi(config)


@pytest.mark.parametrize(("modality", "n_times"), [("meg", 50), ("eeg", 26), ("meg", 9)])
def test_output_shape_for_head_model(toy_head_model, modality: str, n_times: int) -> None:
    model = build_model("fair_esi", toy_head_model, modality, n_times, preset="tiny")
    assert isinstance(model, FairEsi)
    n_channels = toy_head_model.lead_field(modality).n_channels
    out = model(torch.randn(3, n_channels, n_times))
    assert out.shape == (3, toy_head_model.n_regions, n_times)
    assert torch.isfinite(out).all()


def test_registry_and_presets(toy_head_model) -> None:
    assert MODELS["fair_esi"] is FairEsi
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", toy_head_model, "meg", 50)
    with pytest.raises(ValueError, match="unknown FAIR-ESI preset 'huge'"):
        FairEsi.from_head_model(toy_head_model, "meg", 50, preset="huge")
    with pytest.raises(TypeError, match="bogus"):
        FairEsi.from_head_model(toy_head_model, "meg", 50, preset="tiny", bogus=1)
    model = FairEsi.from_head_model(toy_head_model, "eeg", 26, preset="cpu", latent=64)
    config = model.config
    assert (config.n_channels, config.n_regions, config.n_times) == (32, 50, 26)
    assert config.latent == 64 and config.embed_dim == FairEsiConfig.PRESETS["cpu"]["embed_dim"]
    assert FairEsiConfig(**config.to_dict()) == config
    # The field defaults are the 'cpu' preset.
    assert FairEsiConfig.preset("cpu", n_channels=4, n_regions=5, n_times=9) == FairEsiConfig(
        n_channels=4, n_regions=5, n_times=9
    )
    paper = FairEsiConfig.preset("paper", n_channels=306, n_regions=994, n_times=500)
    assert paper.latent_width == 994


@pytest.mark.parametrize(
    ("field", "value"),
    [("alpha", 1.5), ("tau", 0.0), ("stride", 17), ("conv_kernel", 4), ("n_blocks", 0)],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        FairEsiConfig.preset("tiny", n_channels=4, n_regions=5, n_times=10, **{field: value})


def test_wrong_channel_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="12 channels"):
        tiny()(torch.randn(2, 11, 40))


def test_output_rank_is_capped_by_the_bigru() -> None:
    # The head is linear in the BiGRU's 2 * gru_hidden features: every output map, minus
    # the head's bias, lies in the span of its weight (the cap bench/rank_probe.py scores).
    x = torch.randn(8, 12, 32, generator=torch.Generator().manual_seed(0))
    for gru_hidden, rank in ((3, 6), (24, 40)):  # rank min(2 * gru_hidden, n_regions)
        model = tiny(n_regions=40, n_times=32, gru_hidden=gru_hidden).eval()
        with torch.no_grad():
            out = model(x) - model.reconstruction.head.bias[:, None]  # (B, R, T)
        maps = out.transpose(0, 1).reshape(40, -1).double()  # (R, B * T)
        assert torch.linalg.matrix_rank(maps, rtol=1e-5) == rank


def test_patching_covers_every_sample() -> None:
    # T = 20, L = 16, S = 8: patches start at 0 and 8; the second one runs to sample 23,
    # so samples 20..23 are zero padding.
    x = torch.arange(1.0, 21.0).reshape(1, 1, 20)
    patches = Patching(16, 8)(x)
    assert patches.shape == (1, 1, 2, 16)
    assert patches[0, 0, 0].tolist() == list(range(1, 17))
    assert patches[0, 0, 1].tolist() == list(range(9, 21)) + [0, 0, 0, 0]
    for n_times, expected in [(16, 1), (17, 2), (24, 2), (25, 3), (500, 62), (5, 1)]:
        assert n_patches(n_times, 16, 8) == expected
        x = torch.arange(1.0, n_times + 1.0).reshape(1, 1, n_times)
        patches = Patching(16, 8)(x)
        assert patches.shape[2] == expected
        assert set(patches.flatten().tolist()) - {0.0} == set(range(1, n_times + 1))


def test_key_patch_is_the_max_energy_patch() -> None:
    patches = torch.zeros(1, 2, 3, 4)
    patches[0, 0, 0] = torch.tensor([3.0, 0, 0, 0])  # energy 9
    patches[0, 0, 1] = torch.tensor([2.0, 2, 2, 0])  # energy 12 <- key of channel 0
    patches[0, 0, 2] = torch.tensor([-3.0, 1, 1, 0])  # energy 11
    patches[0, 1, 0] = torch.tensor([0.0, 0, 1, 0])  # energy 1
    patches[0, 1, 2] = torch.tensor([0.0, -2, 0, 0])  # energy 4 <- key of channel 1
    keys = select_key_patches(patches)
    assert torch.equal(keys[0, 0], patches[0, 0, 1])
    assert torch.equal(keys[0, 1], patches[0, 1, 2])


def test_key_patch_by_the_energy_of_other_patches() -> None:
    """energy_of picks the index; the key patch is still taken from ``patches``."""
    patches = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    energy_of = torch.zeros(1, 2, 3, 4)
    energy_of[0, 0, 0, 0] = -5.0  # channel 0: patch 0 (patches alone pick patch 2)
    energy_of[0, 1, 1, 3] = 2.0  # channel 1: patch 1
    keys = select_key_patches(patches, energy_of)
    assert torch.equal(keys[0, 0], patches[0, 0, 0])
    assert torch.equal(keys[0, 1], patches[0, 1, 1])
    assert torch.equal(select_key_patches(patches)[0, 0], patches[0, 0, 2])


def test_key_energy_input_picks_key_patches_before_the_refinement() -> None:
    x = torch.randn(2, 12, 40, generator=torch.Generator().manual_seed(0))
    model = tiny(fused_refine=False).eval()  # 'input' is the default
    assert model.key_from_input and not tiny(key_energy="refined").key_from_input
    with torch.no_grad():
        patches = model.patching(x)
        refined = spectral_temporal_refine_reference(patches, 0.1, 0.5) + patches
        for block in model.blocks:
            refined = block(refined, patches)
        expected = model.reconstruction(refined, x)
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        paper = tiny(key_energy="refined", fused_refine=False).eval()
        paper.load_state_dict(model.state_dict())
        assert not torch.allclose(paper(x), expected)  # the refined energies pick others
    with pytest.raises(ValueError, match="key_energy"):
        tiny(key_energy="raw")


def test_refinement_ablation_switches() -> None:
    patches = torch.randn(2, 3, 5, 16)
    both_off = tiny(spectral=False, temporal=False)
    assert isinstance(both_off.refine, nn.Identity)
    assert torch.equal(both_off.refine(patches), patches)
    expected = {
        (True, True): spectral_temporal_refine_reference(patches, 0.1, 0.5),
        (True, False): spectral_temporal_refine_reference(patches, 0.1, 1.0),
        (False, True): spectral_temporal_refine_reference(patches, 0.1, 0.0),
    }
    for (spectral, temporal), reference in expected.items():
        model = tiny(spectral=spectral, temporal=temporal, fused_refine=False)
        torch.testing.assert_close(model.refine(patches), reference)


def test_refine_residual_adds_the_input_patches() -> None:
    x = torch.randn(2, 12, 40)
    model = tiny(refine_residual=True, key_energy="refined", fused_refine=False).eval()
    with torch.no_grad():
        patches = model.patching(x)
        refined = spectral_temporal_refine_reference(patches, 0.1, 0.5) + patches
        for block in model.blocks:
            refined = block(refined)
        expected = model.reconstruction(refined, x)
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        # The default is the residual reading; the literal one gives another output.
        assert tiny().refine_residual
        plain = tiny(refine_residual=False, key_energy="refined", fused_refine=False).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(x), expected)
    # Nothing to add to when both views are off.
    assert not tiny(refine_residual=True, spectral=False, temporal=False).refine_residual


def test_ablations_change_the_output() -> None:
    x = torch.randn(2, 12, 40)
    outputs = {
        flags: tiny(spectral=flags[0], temporal=flags[1], patchwise=flags[2])(x)
        for flags in [(True, True, True), (False, False, True), (True, True, False)]
    }
    full = outputs[(True, True, True)]
    assert not torch.allclose(full, outputs[(False, False, True)])
    assert not torch.allclose(full, outputs[(True, True, False)])
    # Without the patch-wise view the conv block sees only the d patch features.
    no_attention = tiny(patchwise=False)
    assert no_attention.blocks[0].conv.conv.in_channels == no_attention.config.embed_dim
    assert tiny().blocks[0].conv.conv.in_channels == 2 * tiny().config.embed_dim


@pytest.mark.parametrize("patchwise", [True, False])
def test_gradients_reach_every_parameter(patchwise: bool) -> None:
    # Also with the attention ablated: no parameter may go unused (DDP would fail).
    model = tiny(n_blocks=2, patchwise=patchwise)
    out = model(torch.randn(3, 12, 40))
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_deterministic_given_a_seed() -> None:
    x = torch.randn(2, 12, 40)
    a, b = tiny(), tiny()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("flags", [(True, True, True), (False, False, False)])
def test_torchscript_round_trip(flags: tuple[bool, bool, bool]) -> None:
    spectral, temporal, patchwise = flags
    model = tiny(spectral=spectral, temporal=temporal, patchwise=patchwise).eval()
    x = torch.randn(2, 12, 33)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(loaded(torch.randn(1, 12, 70)).shape, (1, 20, 70))


def test_tiny_model_overfits_a_fixed_batch() -> None:
    torch.manual_seed(1)
    model = tiny(n_channels=16, n_regions=24, n_times=48)
    gain = torch.randn(16, 24)
    spike = torch.exp(-0.5 * ((torch.arange(48.0) - 24) / 3) ** 2)
    target = torch.zeros(4, 24, 48)
    for b, region in enumerate([2, 9, 15, 21]):
        target[b, region - 1 : region + 2] = spike
    x = gain @ target
    x = x / x.abs().amax(dim=(1, 2), keepdim=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Fits the batch: the error is a small fraction of the target's energy (what an
    # all-zero output would score) and of the initial loss.
    assert losses[-1] < 0.02 * target.square().mean().item(), losses[-1]
    assert losses[-1] < 0.01 * losses[0], (losses[0], losses[-1])


def test_the_default_reading_runs_on_the_fused_op() -> None:
    """The default (residual) reading with the fused op: the same outputs and gradients
    as with the pure-PyTorch refinement (the residual is one addition after the op)."""
    from fairesi import ops

    if not ops.available():
        pytest.fail("the fairesi op library is not loaded (build the package)")
    torch.manual_seed(0)
    fused = tiny(fused_refine=True).double()
    plain = tiny(fused_refine=False).double()
    plain.load_state_dict(fused.state_dict())
    assert fused.refine_residual and plain.refine_residual
    x = torch.randn(2, 12, 40, dtype=torch.float64, requires_grad=True)
    out_fused, out_plain = fused(x), plain(x)
    torch.testing.assert_close(out_fused, out_plain)
    (g_fused,) = torch.autograd.grad(out_fused.square().sum(), x)
    (g_plain,) = torch.autograd.grad(out_plain.square().sum(), x)
    torch.testing.assert_close(g_fused, g_plain)


def test_checkpoints_that_predate_key_energy_rebuild_as_trained() -> None:
    """A resolved record without key_energy (written before it existed) rebuilds with the
    paper's choice whatever today's default, and a recorded value wins."""
    from fairesi.models.registry import stored_hyper

    old = {"name": "fair_esi", "hyper": {"preset": "cpu"}, "resolved": {"tau": 0.1}}
    assert stored_hyper(old)["key_energy"] == "refined"
    assert stored_hyper({"name": "fair_esi", "hyper": {}})["key_energy"] == "refined"
    new = {**old, "resolved": {"tau": 0.1, "key_energy": "input"}}
    assert stored_hyper(new)["key_energy"] == "input"
    assert "key_energy" not in stored_hyper({"name": "deepsif", "hyper": {}, "resolved": {}})
