"""Fake (meta) kernels of the fused ops, for ``torch.compile`` and ``torch.library.opcheck``.

The op library defines the schemas and the CPU/CUDA/autograd kernels in C++; the fake
kernels of the refinement and of the BiGRU, which compute only the outputs' shapes and
dtypes, are registered here, in Python.
:mod:`fairesi.ops._library` imports this module right after loading the library (the
registrations need the ops to exist); importing it before the library is loaded registers
nothing. It is the module to name in a C++ ``m.set_python_module(...)`` call, should
``cpp/ops/refine_op.cpp`` declare one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairesi.ops._library import PATCH_LEN

__all__: list[str] = []


def _refine_fake(patches: Tensor, tau: float, alpha: float) -> Tensor:
    torch._check(
        patches.dim() >= 1 and patches.shape[-1] == PATCH_LEN,
        lambda: f"patches must have a last dimension of {PATCH_LEN}, got {tuple(patches.shape)}",
    )
    return patches.new_empty(patches.shape)


def _refine_backward_fake(grad: Tensor, patches: Tensor, tau: float, alpha: float) -> Tensor:
    torch._check(
        grad.shape == patches.shape,
        lambda: f"grad shape {tuple(grad.shape)} != patches shape {tuple(patches.shape)}",
    )
    return patches.new_empty(patches.shape)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The BiGRU op's saved states' dtype: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bigru_forward_fake(
    x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    torch._check(x.dim() == 3 and w_hh.dim() == 3, lambda: "x and w_hh must be 3-d")
    n_batch, n_times, hidden = x.shape[0], x.shape[1], w_hh.shape[2]
    acc = _acc_dtype(x.dtype)
    return (
        x.new_empty(n_batch, n_times, 2 * hidden),
        x.new_empty(2, n_times + 1, n_batch, hidden, dtype=acc),
        x.new_empty(2, n_times, n_batch, 4 * hidden, dtype=acc),
    )


def _bigru_fake(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    return _bigru_forward_fake(x, w_ih, w_hh, b_ih, b_hh)[0]


def _bigru_backward_fake(
    grad: Tensor, x: Tensor, w_ih: Tensor, w_hh: Tensor, hs: Tensor, gates: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    three_h = w_hh.shape[1]  # the gate rows, 3H
    return (
        x.new_empty(x.shape),
        w_ih.new_empty(w_ih.shape),
        w_hh.new_empty(w_hh.shape),
        w_hh.new_empty(2, three_h),
        w_hh.new_empty(2, three_h),
    )


# Registered at import, from this module (torch records the registering module).
if hasattr(torch.ops.fairesi, "spectral_temporal_refine"):
    torch.library.register_fake("fairesi::spectral_temporal_refine", _refine_fake)
    torch.library.register_fake("fairesi::spectral_temporal_refine_backward", _refine_backward_fake)
if hasattr(torch.ops.fairesi, "bigru"):
    torch.library.register_fake("fairesi::bigru", _bigru_fake)
    torch.library.register_fake("fairesi::bigru_forward", _bigru_forward_fake)
    torch.library.register_fake("fairesi::bigru_backward", _bigru_backward_fake)
