"""Fused spectral-temporal refinement op (``torch.ops.fairesi.spectral_temporal_refine``).

The op library ``fairesi/lib/libfairesi_ops.so`` (built from ``cpp/ops`` by the package's
CMake) is loaded on import when it is present, unless the environment variable
``FAIRESI_NO_OPS=1`` is set. It registers, in the ``fairesi`` namespace::

    spectral_temporal_refine(Tensor patches, float tau, float alpha) -> Tensor
    spectral_temporal_refine_backward(Tensor grad, Tensor patches, float tau, float alpha) -> Tensor

with CPU (and, in CUDA builds, CUDA) kernels and autograd; this module adds the fake
kernels that ``torch.compile`` needs. The op computes exactly
:func:`fairesi.models.refine.spectral_temporal_refine_reference` on patches of 16 samples:
float32/float64, or float16/bfloat16 computed in float32 and returned in the input dtype;
inputs of any strides are accepted (copied to contiguous) and the result is contiguous.
``alpha = 1`` / ``alpha = 0`` are the spectral-only / temporal-only ablation variants.

TorchScript archives store calls to the op by name, so a program that loads such an
archive must load the library first (Python: import this module; C++: ``dlopen`` the
library, as ``fairesi-infer`` does).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from fairesi.models.refine import SpectralTemporalRefine

__all__ = ["PATCH_LEN", "FusedSpectralTemporalRefine", "available", "library_path"]

PATCH_LEN = 16
_LIBRARY_FILE = "libfairesi_ops.so"


def library_path() -> Path | None:
    """Path of the op library inside the package, or None when it was not built."""
    path = Path(__file__).resolve().parent / "lib" / _LIBRARY_FILE
    return path if path.is_file() else None


def _load() -> bool:
    if os.environ.get("FAIRESI_NO_OPS") == "1":
        return False
    path = library_path()
    if path is None:
        return False
    torch.ops.load_library(str(path))
    return True


_LOADED = _load()


def available() -> bool:
    """Whether ``torch.ops.fairesi.spectral_temporal_refine`` is loaded in this process."""
    return _LOADED


if _LOADED:

    @torch.library.register_fake("fairesi::spectral_temporal_refine")
    def _refine_fake(patches: Tensor, tau: float, alpha: float) -> Tensor:
        torch._check(
            patches.dim() >= 1 and patches.shape[-1] == PATCH_LEN,
            lambda: (
                f"patches must have a last dimension of {PATCH_LEN}, got {tuple(patches.shape)}"
            ),
        )
        return patches.new_empty(patches.shape)

    @torch.library.register_fake("fairesi::spectral_temporal_refine_backward")
    def _refine_backward_fake(grad: Tensor, patches: Tensor, tau: float, alpha: float) -> Tensor:
        torch._check(
            grad.shape == patches.shape,
            lambda: f"grad shape {tuple(grad.shape)} != patches shape {tuple(patches.shape)}",
        )
        return patches.new_empty(patches.shape)


class FusedSpectralTemporalRefine(SpectralTemporalRefine):
    """:class:`~fairesi.models.refine.SpectralTemporalRefine` computed by the fused op.

    Parameters
    ----------
    tau : float
        Softmax temperature, > 0.
    alpha : float
        Weight of the spectral view in [0, 1].

    Raises
    ------
    RuntimeError
        If the op library is not loaded (see :func:`available`).
    """

    def __init__(self, tau: float = 0.1, alpha: float = 0.5) -> None:
        if not available():
            raise RuntimeError(
                "the fused op library is not loaded: "
                + (
                    "FAIRESI_NO_OPS=1 is set"
                    if os.environ.get("FAIRESI_NO_OPS") == "1"
                    else f"{_LIBRARY_FILE} was not built into {Path(__file__).parent / 'lib'}"
                )
            )
        super().__init__(tau, alpha)

    def forward(self, patches: Tensor) -> Tensor:
        """(..., 16) -> (..., 16), same dtype; see :mod:`fairesi.models.refine`."""
        return torch.ops.fairesi.spectral_temporal_refine(patches, self.tau, self.alpha)
