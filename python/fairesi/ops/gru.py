"""A bidirectional ``nn.GRU`` run by the fused CPU op ``torch.ops.fairesi.bigru``.

PyTorch's CPU ``nn.GRU`` runs one matrix product per time step and direction, a dozen
element-wise kernels per step, and in its backward one weight-gradient product per step
whose inner dimension is the batch. The op (``cpp/ops/gru_op.cpp``, ``cpp/ops/cpu/
gru_cpu.cpp``) computes the same layer with one batched product per step for both
directions, one vectorised pass for the gates of a step, and each weight gradient as one
product over all ``T * B`` rows (``docs/design.md`` § fused BiGRU). It uses the module's own
parameters, so a network trained with either runs with the other, and checkpoints do not
change.

:func:`bigru` runs an ``nn.GRU`` through the op; :func:`fused_gru_applies` says whether it
can (the op covers the plain bidirectional, ``batch_first`` GRU with biases and zero initial
state, on the CPU). Under ``torch.autocast('cpu')`` the op runs in the autocast dtype
(bfloat16: about 2x faster products on CPUs with AVX512-BF16), like ``nn.GRU``'s products
under autocast. On CUDA ``nn.GRU`` already runs cuDNN's fused kernels, and TorchScript,
``torch.jit.trace`` and ``torch.compile``/``torch.export`` see ``nn.GRU`` (so exports do not
need the op library for it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fairesi.ops import _library

__all__ = ["bigru", "fused_gru_applies", "fused_gru_available", "use_fused_gru"]


def fused_gru_available() -> bool:
    """Whether ``torch.ops.fairesi.bigru`` is loaded in this process."""
    return _library.available() and hasattr(torch.ops.fairesi, "bigru")


def use_fused_gru(fused: bool | None) -> bool:
    """Resolve a ``fused_gru`` switch: whether a network should call :func:`bigru`.

    Parameters
    ----------
    fused : bool | None
        True: require the op; False: never; None: when its library is loaded.

    Returns
    -------
    bool
        Whether to use the op (where :func:`fused_gru_applies`).

    Raises
    ------
    RuntimeError
        ``fused=True`` and the op library is not loaded.
    """
    if fused is False:
        return False
    if fused and not fused_gru_available():
        raise RuntimeError(
            f"fused_gru=True, but the fused BiGRU op is not loaded: {_library.unavailable_reason()}"
        )
    return fused_gru_available()


def fused_gru_applies(gru: nn.GRU, x: Tensor) -> bool:
    """Whether :func:`bigru` can run ``gru`` on ``x`` (and ``gru(x)`` is not being traced).

    Parameters
    ----------
    gru : nn.GRU
        The layer.
    x : Tensor
        Its input, (B, T, I).

    Returns
    -------
    bool
        True when the op is loaded, ``x`` is a non-empty 3-d CPU tensor, ``gru`` is
        bidirectional, ``batch_first``, with biases, without projections, and without
        dropout between layers in training, and nothing is tracing or compiling the call.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return (
        fused_gru_available()
        and x.device.type == "cpu"
        and x.dim() == 3
        and x.shape[0] > 0
        and x.shape[1] > 0
        and gru.bidirectional
        and gru.batch_first
        and gru.bias
        and gru.proj_size == 0
        and not (gru.training and gru.dropout > 0 and gru.num_layers > 1)
    )


def _stacked(gru: nn.GRU, name: str, layer: int, dtype: torch.dtype) -> Tensor:
    """Both directions' parameter ``name`` of ``layer``, (2, ...) in ``dtype``."""
    forward = getattr(gru, f"{name}_l{layer}")
    backward = getattr(gru, f"{name}_l{layer}_reverse")
    return torch.stack((forward, backward)).to(dtype)


def bigru(gru: nn.GRU, x: Tensor) -> Tensor:
    """``gru(x)[0]`` computed by the fused op (see :func:`fused_gru_applies` for when).

    Parameters
    ----------
    gru : nn.GRU
        Bidirectional, ``batch_first`` GRU with biases; any ``num_layers``.
    x : Tensor
        (B, T, I) input on the CPU, float32/float64 (or any dtype under CPU autocast).

    Returns
    -------
    Tensor
        (B, T, 2H): the last layer's states, the forward direction's in ``[..., :H]``; in
        ``x``'s dtype, or the autocast dtype under ``torch.autocast('cpu')``.
        Differentiable with respect to ``x`` and the parameters.
    """
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    else:
        dtype = x.dtype
    out = x.to(dtype)
    for layer in range(gru.num_layers):
        out = torch.ops.fairesi.bigru(
            out,
            _stacked(gru, "weight_ih", layer, dtype),
            _stacked(gru, "weight_hh", layer, dtype),
            _stacked(gru, "bias_ih", layer, dtype),
            _stacked(gru, "bias_hh", layer, dtype),
        )
    return out
