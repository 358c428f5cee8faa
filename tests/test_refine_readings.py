"""The readings of FAIR-ESI's Eq. 1 and temporal view (fairesi.ops.refine) and the
block options (LayerNorm extent, conv layout), each against a float64 reference written
from its definition with numpy loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fairesi.models import FairEsiConfig
from fairesi.models.fair_esi import FairEsi, PatchwiseRefinement
from fairesi.ops import (
    REFINE_AXES,
    SpectralTemporalRefine,
    make_refine,
    spectral_temporal_refine_reference,
)

TAU, ALPHA = 0.3, 0.4


def _softmax(v: np.ndarray, tau: float) -> np.ndarray:
    e = np.exp(v / tau - np.max(v / tau))
    return e / e.sum()


def _view(v: np.ndarray, tau: float, form: str) -> np.ndarray:
    """Refinement of one 1-D vector along its only axis, by definition."""
    w = _softmax(v, tau)
    return w if form == "softmax" else v * len(v) * w


def definition(patches: np.ndarray, tau: float, alpha: float, form: str, axis: str):
    """Eq. 1 and the temporal view, one softmax vector at a time, in float64.

    ``patches`` is (C, Np, L). The spectral view takes each patch's rfft, refines the
    real and imaginary parts along ``axis`` (bins within a patch, or the same bin across
    patches / channels) and inverts; the temporal view refines the samples likewise.
    """
    n_ch, n_p, n_l = patches.shape
    spectrum = np.fft.rfft(patches, axis=-1)  # (C, Np, K)
    refined = {}
    for name, values in (("re", spectrum.real), ("im", spectrum.imag), ("t", patches)):
        out = np.empty_like(values)
        for index in np.ndindex(*values.shape):
            c, j, k = index
            if axis == "samples":
                if k == 0:
                    out[c, j, :] = _view(values[c, j, :], tau, form)
            elif axis == "patches":
                if j == 0:
                    out[c, :, k] = _view(values[c, :, k], tau, form)
            elif c == 0:
                out[:, j, k] = _view(values[:, j, k], tau, form)
        refined[name] = out
    spectral = np.fft.irfft(refined["re"] + 1j * refined["im"], n=n_l, axis=-1)
    return alpha * spectral + (1 - alpha) * refined["t"]


@pytest.mark.parametrize(
    ("form", "axis"), list(itertools.product(("softmax", "weights"), REFINE_AXES))
)
def test_each_reading_matches_its_definition(form: str, axis: str) -> None:
    rng = np.random.default_rng(3)
    patches = rng.normal(size=(2, 3, 5, 16))
    ours = spectral_temporal_refine_reference(torch.from_numpy(patches), TAU, ALPHA, form, axis)
    for b in range(2):
        expected = definition(patches[b], TAU, ALPHA, form, axis)
        np.testing.assert_allclose(ours[b].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_literal_reading_is_the_default_and_drops_the_patch_mean() -> None:
    patches = torch.randn(4, 16, dtype=torch.float64)
    shifted = patches + 5.0
    literal = spectral_temporal_refine_reference(patches, 0.1, 0.0)
    torch.testing.assert_close(
        literal, spectral_temporal_refine_reference(patches, 0.1, 0.0, "softmax", "samples")
    )
    # A softmax cannot see a constant added to its inputs: the temporal view of the
    # literal reading is blind to the patch mean; the weights reading is not.
    torch.testing.assert_close(spectral_temporal_refine_reference(shifted, 0.1, 0.0), literal)
    weighted = spectral_temporal_refine_reference(shifted, 0.1, 0.0, "weights")
    assert not torch.allclose(
        weighted, spectral_temporal_refine_reference(patches, 0.1, 0.0, "weights")
    )


def test_weights_with_equal_weights_are_the_identity() -> None:
    # tau -> infinity makes every softmax uniform: the weights reading returns its input.
    patches = torch.randn(2, 3, 4, 16, dtype=torch.float64)
    for axis in REFINE_AXES:
        out = spectral_temporal_refine_reference(patches, 1e12, 0.5, "weights", axis)
        torch.testing.assert_close(out, patches)


def test_bad_readings_are_refused() -> None:
    with pytest.raises(ValueError, match="refine form"):
        SpectralTemporalRefine(form="nope")
    with pytest.raises(ValueError, match="refine axis"):
        make_refine(axis="time")
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        spectral_temporal_refine_reference(torch.randn(4, 16), 0.1, 0.5, axis="channels")
    for field, value in [
        ("refine_form", "x"),
        ("refine_axis", "x"),
        ("norm", "x"),
        ("conv_layout", "x"),
    ]:
        with pytest.raises(ValueError, match=field):
            FairEsiConfig(n_channels=4, n_regions=5, n_times=10, **{field: value})


def test_make_refine_uses_the_reference_for_other_readings() -> None:
    module = make_refine(form="weights", axis="patches")
    assert type(module) is SpectralTemporalRefine
    with pytest.raises(ValueError, match="literal reading"):
        make_refine(fused=True, form="weights")


def _model(**overrides) -> FairEsi:
    torch.manual_seed(0)
    return FairEsi(
        FairEsiConfig.preset("tiny", n_channels=12, n_regions=20, n_times=40, **overrides)
    )


@pytest.mark.parametrize(
    ("form", "axis"), [("weights", "samples"), ("softmax", "patches"), ("weights", "channels")]
)
def test_network_uses_the_configured_reading(form: str, axis: str) -> None:
    model = _model(refine_form=form, refine_axis=axis, fused_refine=False).eval()
    x = torch.randn(2, 12, 40)
    with torch.no_grad():
        patches = model.patching(x)
        torch.testing.assert_close(
            model.refine(patches), spectral_temporal_refine_reference(patches, 0.1, 0.5, form, axis)
        )
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_sample_layer_norm_by_definition() -> None:
    block = PatchwiseRefinement(16, 8, 4, 3, attention=True, norm="all").double()
    y = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        block.conv.norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        block.conv.norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    out = block.conv.norm(y)
    a = y.numpy()
    for b in range(2):
        z = (a[b] - a[b].mean()) / np.sqrt(a[b].var() + 1e-5)
        expected = (
            z * np.array([1, 2, 3, 4.0])[:, None, None] + np.array([0, 1, -1, 0.5])[:, None, None]
        )
        np.testing.assert_allclose(out[b].detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_sensors_as_conv_channels() -> None:
    model = _model(conv_layout="sensors", norm="all")
    block = model.blocks[0]
    assert block.conv.conv.in_channels == 12 and block.deconv.conv.out_channels == 12
    x = torch.randn(3, 12, 40)
    out = model(x)
    assert out.shape == (3, 20, 40)
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    scripted = torch.jit.script(model.eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    # d = 4 without attention: a linear map takes the features back to L = 16.
    narrow = _model(conv_layout="sensors", patchwise=False, embed_dim=4)
    assert narrow.blocks[0].to_patch.in_features == 4
    assert narrow(x).shape == (3, 20, 40)
