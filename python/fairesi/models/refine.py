"""Spectral-temporal patch refinement (FAIR-ESI paper, section II.C.1-2).

For every patch ``P`` of ``L`` samples (``L = 16`` in FAIR-ESI)::

    [P_re, P_im] = rfft(P)                                  # L//2 + 1 bins
    P_S = irfft(softmax(P_re / tau), softmax(P_im / tau))   # spectral view, n = L
    P_T = softmax(P / tau)                                  # temporal view
    P_L = alpha * P_S + (1 - alpha) * P_T

Softmaxes run over the last axis (bins, or samples). ``irfft`` follows
``torch.fft.irfft``: the imaginary parts of the DC and Nyquist bins do not contribute.
``alpha = 1`` keeps only the spectral view and ``alpha = 0`` only the temporal view,
which is how the ablation switches of paper Table IV are expressed.

This pure-PyTorch function is the reference that the fused op library
(``fairesi.ops``) must match, and the fallback when that library is absent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def spectral_temporal_refine_reference(patches: Tensor, tau: float, alpha: float) -> Tensor:
    """Refine patches in the spectral and temporal views and mix them.

    Parameters
    ----------
    patches : Tensor, shape (..., L)
        Patches along the last axis; float32/float64, or float16/bfloat16 (computed in
        float32 and cast back).
    tau : float
        Softmax temperature, > 0 (FAIR-ESI: 0.1).
    alpha : float
        Weight of the spectral view in [0, 1] (FAIR-ESI default: 0.5).

    Returns
    -------
    refined : Tensor, shape (..., L), same dtype as ``patches``.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    x = patches if patches.dtype == torch.float64 else patches.float()
    n = x.shape[-1]
    spectrum = torch.fft.rfft(x, dim=-1)
    real = torch.softmax(spectrum.real / tau, dim=-1)
    imag = torch.softmax(spectrum.imag / tau, dim=-1)
    spectral = torch.fft.irfft(torch.complex(real, imag), n=n, dim=-1)
    temporal = torch.softmax(x / tau, dim=-1)
    return (alpha * spectral + (1.0 - alpha) * temporal).to(patches.dtype)


class SpectralTemporalRefine(nn.Module):
    """Module form of :func:`spectral_temporal_refine_reference` (pure PyTorch)."""

    def __init__(self, tau: float = 0.1, alpha: float = 0.5) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.tau = float(tau)
        self.alpha = float(alpha)

    def forward(self, patches: Tensor) -> Tensor:
        """(..., L) -> (..., L); see the module docstring."""
        return spectral_temporal_refine_reference(patches, self.tau, self.alpha)


def make_refine(
    tau: float = 0.1, alpha: float = 0.5, fused: bool | None = None, patch_len: int = 16
) -> nn.Module:
    """Return the refinement module: the fused op when available, else the reference.

    Parameters
    ----------
    tau, alpha : float
        See :func:`spectral_temporal_refine_reference`.
    fused : bool | None
        True: require the fused op library; False: use the PyTorch reference;
        None (default): use the fused op when its library is loaded and supports
        ``patch_len``.
    patch_len : int
        Length L of the patches the module will get; the fused op handles L = 16 only.

    Raises
    ------
    RuntimeError
        ``fused=True`` and the op library is not loaded.
    ValueError
        ``fused=True`` and ``patch_len`` is not 16.
    """
    if fused is False:
        return SpectralTemporalRefine(tau, alpha)
    from fairesi import ops  # imported here: fairesi.ops builds on this module

    if patch_len != ops.PATCH_LEN:
        if fused:
            raise ValueError(f"the fused op needs patch_len {ops.PATCH_LEN}, got {patch_len}")
        return SpectralTemporalRefine(tau, alpha)
    if fused or ops.available():
        # Raises RuntimeError naming the reason when fused=True and the library is absent.
        return ops.FusedSpectralTemporalRefine(tau, alpha)
    return SpectralTemporalRefine(tau, alpha)
