"""Tensor operations under the networks: FAIR-ESI's refinement and its CPU BiGRU.

What lives here
---------------
* :mod:`fairesi.ops.refine`: the refinement of paper Eq. 1 as a pure-PyTorch reference
  (:func:`spectral_temporal_refine_reference`, :class:`SpectralTemporalRefine`, all the
  readings of :data:`REFINE_FORMS` x :data:`REFINE_AXES`), the same computed by the fused op
  (:class:`FusedSpectralTemporalRefine`), and :func:`make_refine`, which picks one.
* :mod:`fairesi.ops.gru`: FAIR-ESI's bidirectional ``nn.GRU`` run on the CPU by the fused
  op (:func:`bigru`; :func:`fused_gru_applies` says where it can, :func:`use_fused_gru`
  resolves a network's switch).
* :mod:`fairesi.ops._library`: finds and loads the op library ``libfairesi_ops.so`` (built
  from ``cpp/ops`` by the package's CMake into ``fairesi/lib/``) on import, unless
  ``FAIRESI_NO_OPS=1`` is set: :func:`library_path`, :func:`available`.
* :mod:`fairesi.ops._fake`: the ops' fake kernels for ``torch.compile``, registered when the
  library is loaded.

The library registers, in the ``fairesi`` namespace::

    spectral_temporal_refine(Tensor patches, float tau, float alpha) -> Tensor
    spectral_temporal_refine_backward(Tensor grad, Tensor patches, float tau, float alpha) -> Tensor

with CPU (and, in CUDA builds, CUDA) kernels and autograd, for patches of
:data:`PATCH_LEN` = 16 samples; ``alpha = 1`` / ``alpha = 0`` are the spectral-only /
temporal-only ablation variants; and, CPU only, with autograd::

    bigru(Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor
    bigru_forward(...) -> (Tensor out, Tensor hs, Tensor gates)
    bigru_backward(Tensor grad, Tensor x, Tensor w_ih, Tensor w_hh, Tensor hs, Tensor gates)
        -> (Tensor, Tensor, Tensor, Tensor, Tensor)

(one bidirectional GRU layer, :mod:`fairesi.ops.gru`). TorchScript archives store calls to
the refinement op by name, so a program that loads such an archive must load the library
first (Python: import this package; C++: ``dlopen`` the library, as ``fairesi-infer``
does); scripted networks call ``nn.GRU``, never the BiGRU op.

Layering
--------
This package is a layer below :mod:`fairesi.models`: it imports only torch, the light
top-level ``fairesi`` package (for ``fairesi.__path__``) and fairesi's leaf utilities
(:mod:`fairesi._validate`), never the networks (nor scipy), so importing it costs little
more than importing torch. It may be imported by :mod:`fairesi.models`,
:mod:`fairesi.export` and the benchmarks (``bench/``).
"""

from fairesi.ops._library import PATCH_LEN, available, library_path
from fairesi.ops.gru import bigru, fused_gru_applies, fused_gru_available, use_fused_gru
from fairesi.ops.refine import (
    REFINE_AXES,
    REFINE_FORMS,
    FusedSpectralTemporalRefine,
    SpectralTemporalRefine,
    make_refine,
    spectral_temporal_refine_reference,
)

__all__ = [
    "PATCH_LEN",
    "REFINE_AXES",
    "REFINE_FORMS",
    "FusedSpectralTemporalRefine",
    "SpectralTemporalRefine",
    "available",
    "bigru",
    "fused_gru_applies",
    "fused_gru_available",
    "library_path",
    "make_refine",
    "spectral_temporal_refine_reference",
    "use_fused_gru",
]
