"""Fake (meta) kernels of the fused op, for ``torch.compile`` and ``torch.library.opcheck``.

The op library defines the schemas and the CPU/CUDA/autograd kernels in C++; the fake
kernels, which compute only the output's shape and dtype, are registered here, in Python.
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


# Registered at import, from this module (torch records the registering module).
if hasattr(torch.ops.fairesi, "spectral_temporal_refine"):
    torch.library.register_fake("fairesi::spectral_temporal_refine", _refine_fake)
    torch.library.register_fake("fairesi::spectral_temporal_refine_backward", _refine_backward_fake)
