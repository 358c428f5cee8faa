"""Spectral-temporal patch refinement (FAIR-ESI paper, section II.C.1-2, Eq. 1).

For every patch ``P`` of ``L`` samples (``L = 16`` in FAIR-ESI), the literal reading of
the paper is::

    [P_re, P_im] = rfft(P)                                  # L//2 + 1 bins
    P_S = irfft(softmax(P_re / tau), softmax(P_im / tau))   # spectral view, n = L
    P_T = softmax(P / tau)                                  # temporal view
    P_L = alpha * P_S + (1 - alpha) * P_T

with the softmaxes over the last axis (bins, or samples). ``irfft`` follows
``torch.fft.irfft``: the imaginary parts of the DC and Nyquist bins do not contribute.
``alpha = 1`` keeps only the spectral view and ``alpha = 0`` only the temporal view,
which is how the ablation switches of paper Table IV are expressed.

The paper's ``T(x, tau) = exp(x / tau) / sum exp(x / tau)`` names no axis for its sum and
does not say whether the softmax *replaces* the features or *weights* them. A softmax
of one patch sums to 1 whatever the patch's amplitude, so the literal reading drops the
patch mean, which carries most of a spike's energy at 500 Hz. The readings the text
admits are two switches (``docs/design.md`` § refinement readings):

* ``form``: ``'softmax'`` replaces the features by ``softmax(v / tau)`` (literal);
  ``'weights'`` uses it as importance weights, ``v * n * softmax(v / tau)`` with ``n`` the
  length of the softmax axis, so that equal weights leave ``v`` unchanged. In the spectral
  view ``v`` is the real or the imaginary part of the spectrum.
* ``axis``: over what the softmax's sum runs. ``'samples'``: within a patch (its samples,
  or its rfft bins; literal). ``'patches'``: across the ``Np`` patches of one channel, per
  sample position (or bin). ``'channels'``: across the ``C`` channels, per patch and
  sample position (or bin).

The residual ``P_L + P`` (``FairEsiConfig.refine_residual``) composes with any of them.

This pure-PyTorch function is the reference that the fused op
(:class:`FusedSpectralTemporalRefine`, ``torch.ops.fairesi.spectral_temporal_refine``, literal
reading, L = 16) must match, and the fallback when the op library is absent or the reading
is not the literal one. :func:`make_refine` picks between the two.

The op computes exactly :func:`spectral_temporal_refine_reference` (literal reading) on
patches of 16 samples: float32/float64, or float16/bfloat16 computed in float32 and
returned in the input dtype; inputs of any strides are accepted (copied to contiguous) and
the result is contiguous.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from fairesi._validate import check_option, check_positive, check_range
from fairesi.ops import _library
from fairesi.ops._library import PATCH_LEN

__all__ = [
    "REFINE_AXES",
    "REFINE_FORMS",
    "FusedSpectralTemporalRefine",
    "SpectralTemporalRefine",
    "make_refine",
    "spectral_temporal_refine_reference",
]

#: Refinement forms (see the module docstring); the first is the paper's literal reading.
REFINE_FORMS: tuple[str, ...] = ("softmax", "weights")
#: Softmax axes, by name -> dimension of a (B, C, Np, L) patch tensor.
REFINE_AXES: dict[str, int] = {"samples": -1, "patches": -2, "channels": -3}


def _check_reading(tau: float, form: str, axis: str) -> None:
    check_positive("tau", tau)
    check_option("refine form", form, REFINE_FORMS)
    check_option("refine axis", axis, REFINE_AXES)


def _axis_dim(axis: str) -> int:
    # Written out (not a dict lookup) so that TorchScript compiles it.
    if axis == "samples":
        return -1
    if axis == "patches":
        return -2
    if axis == "channels":
        return -3
    raise ValueError("refine axis must be 'samples', 'patches' or 'channels', got " + axis)


def _refine_view(values: Tensor, tau: float, form: str, dim: int) -> Tensor:
    """One view's refinement of ``values`` along ``dim``: softmax, or softmax-weighted."""
    weights = torch.softmax(values / tau, dim=dim)
    if form == "softmax":
        return weights
    if form == "weights":
        return values * weights * float(values.shape[dim])
    raise ValueError("refine form must be 'softmax' or 'weights', got " + form)


def spectral_temporal_refine_reference(
    patches: Tensor, tau: float, alpha: float, form: str = "softmax", axis: str = "samples"
) -> Tensor:
    """Refine patches in the spectral and temporal views and mix them.

    Parameters
    ----------
    patches : Tensor, shape (..., L); (..., Np, L) for ``axis='patches'``, (..., C, Np, L)
        for ``axis='channels'``
        Patches along the last axis; float32/float64, or float16/bfloat16 (computed in
        float32 and cast back). Values are in the units of the (normalised) input.
    tau : float
        Softmax temperature, > 0 (FAIR-ESI: 0.1), in the input's units.
    alpha : float
        Weight of the spectral view in [0, 1] (FAIR-ESI default: 0.5).
    form : str
        ``'softmax'`` (literal) or ``'weights'``; see the module docstring.
    axis : str
        ``'samples'`` (literal), ``'patches'`` or ``'channels'``; see the module docstring.

    Returns
    -------
    refined : Tensor, same shape and dtype as ``patches``.
    """
    if not tau > 0:
        raise ValueError("tau must be > 0, got " + str(tau))
    dim = _axis_dim(axis)
    if patches.dim() < -dim:
        raise ValueError(
            "refine axis " + axis + " needs patches with at least " + str(-dim) + " dimensions"
        )
    x = patches if patches.dtype == torch.float64 else patches.float()
    n = x.shape[-1]
    spectrum = torch.fft.rfft(x, dim=-1)
    real = _refine_view(spectrum.real, tau, form, dim)
    imag = _refine_view(spectrum.imag, tau, form, dim)
    spectral = torch.fft.irfft(torch.complex(real, imag), n=n, dim=-1)
    temporal = _refine_view(x, tau, form, dim)
    return (alpha * spectral + (1.0 - alpha) * temporal).to(patches.dtype)


class SpectralTemporalRefine(nn.Module):
    """Module form of :func:`spectral_temporal_refine_reference` (pure PyTorch)."""

    def __init__(
        self, tau: float = 0.1, alpha: float = 0.5, form: str = "softmax", axis: str = "samples"
    ) -> None:
        super().__init__()
        _check_reading(tau, form, axis)
        check_range("alpha", alpha, 0.0, 1.0)
        self.tau = float(tau)
        self.alpha = float(alpha)
        self.form = form
        self.axis = axis

    def forward(self, patches: Tensor) -> Tensor:
        """(..., L) -> (..., L); see the module docstring."""
        return spectral_temporal_refine_reference(
            patches, self.tau, self.alpha, self.form, self.axis
        )


class FusedSpectralTemporalRefine(SpectralTemporalRefine):
    """:class:`SpectralTemporalRefine` (literal reading) computed by the fused op.

    Parameters
    ----------
    tau : float
        Softmax temperature, > 0.
    alpha : float
        Weight of the spectral view in [0, 1].

    Raises
    ------
    RuntimeError
        If the op library is not loaded (see :func:`fairesi.ops.available`).
    """

    def __init__(self, tau: float = 0.1, alpha: float = 0.5) -> None:
        if not _library.available():
            raise RuntimeError(
                f"the fused op library is not loaded: {_library.unavailable_reason()}"
            )
        super().__init__(tau, alpha)

    def forward(self, patches: Tensor) -> Tensor:
        """(..., 16) -> (..., 16), same dtype; see the module docstring."""
        return torch.ops.fairesi.spectral_temporal_refine(patches, self.tau, self.alpha)


#: Whether make_refine has warned that it falls back to the reference (once per process).
_warned_fallback = False


def _warn_fallback_once() -> None:
    global _warned_fallback
    if _warned_fallback:
        return
    _warned_fallback = True
    remedy = (
        f"unset {_library.NO_OPS_ENV} to use the op"
        if _library.disabled()
        else "build the package (CMake) to get the op"
    )
    warnings.warn(
        f"the fused refinement op is not loaded ({_library.unavailable_reason()}), so the "
        f"slower pure-PyTorch reference refinement is used; {remedy}, or pass fused=False "
        "(FairEsiConfig.fused_refine=False) to choose the reference explicitly",
        stacklevel=3,
    )


def make_refine(
    tau: float = 0.1,
    alpha: float = 0.5,
    fused: bool | None = None,
    patch_len: int = 16,
    form: str = "softmax",
    axis: str = "samples",
) -> nn.Module:
    """Return the refinement module: the fused op when available, else the reference.

    Parameters
    ----------
    tau, alpha, form, axis
        See :func:`spectral_temporal_refine_reference`.
    fused : bool | None
        True: require the fused op library; False: use the PyTorch reference;
        None (default): use the fused op when its library is loaded and supports
        ``patch_len`` and the reading.
    patch_len : int
        Length L of the patches the module will get; the fused op handles L = 16 only.

    Warns
    -----
    UserWarning
        Once per process, when ``fused=None`` would take the fused op (``patch_len`` 16,
        literal reading) but its library is not loaded (not built, or ``FAIRESI_NO_OPS=1``).

    Raises
    ------
    RuntimeError
        ``fused=True`` and the op library is not loaded.
    ValueError
        ``fused=True`` and ``patch_len`` is not 16 or the reading is not the literal one.
    """
    _check_reading(tau, form, axis)
    if fused is False:
        return SpectralTemporalRefine(tau, alpha, form, axis)
    if fused:
        if patch_len != PATCH_LEN:
            raise ValueError(f"the fused op needs patch_len {PATCH_LEN}, got {patch_len}")
        if form != "softmax" or axis != "samples":
            raise ValueError(
                "the fused op needs the literal reading (form 'softmax', axis 'samples'), "
                f"got form {form!r}, axis {axis!r}"
            )
        # Raises RuntimeError naming the reason when the library is absent.
        return FusedSpectralTemporalRefine(tau, alpha)
    if patch_len != PATCH_LEN or form != "softmax" or axis != "samples":
        return SpectralTemporalRefine(tau, alpha, form, axis)
    if _library.available():
        return FusedSpectralTemporalRefine(tau, alpha)
    _warn_fallback_once()
    return SpectralTemporalRefine(tau, alpha, form, axis)
