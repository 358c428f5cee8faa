"""Tensor operations under the networks: the spectral-temporal refinement of FAIR-ESI.

What lives here
---------------
* :mod:`fairesi.ops.refine`: the refinement of paper Eq. 1 as a pure-PyTorch reference
  (:func:`spectral_temporal_refine_reference`, :class:`SpectralTemporalRefine`, all the
  readings of :data:`REFINE_FORMS` x :data:`REFINE_AXES`), the same computed by the fused op
  (:class:`FusedSpectralTemporalRefine`), and :func:`make_refine`, which picks one.
* :mod:`fairesi.ops._library`: finds and loads the op library ``libfairesi_ops.so`` (built
  from ``cpp/ops`` by the package's CMake into ``fairesi/lib/``) on import, unless
  ``FAIRESI_NO_OPS=1`` is set: :func:`library_path`, :func:`available`.
* :mod:`fairesi.ops._fake`: the op's fake kernels for ``torch.compile``, registered when the
  library is loaded.

The library registers, in the ``fairesi`` namespace::

    spectral_temporal_refine(Tensor patches, float tau, float alpha) -> Tensor
    spectral_temporal_refine_backward(Tensor grad, Tensor patches, float tau, float alpha) -> Tensor

with CPU (and, in CUDA builds, CUDA) kernels and autograd, for patches of
:data:`PATCH_LEN` = 16 samples; ``alpha = 1`` / ``alpha = 0`` are the spectral-only /
temporal-only ablation variants. TorchScript archives store calls to the op by name, so a
program that loads such an archive must load the library first (Python: import this
package; C++: ``dlopen`` the library, as ``fairesi-infer`` does).

Layering
--------
This package is a layer below :mod:`fairesi.models`: it imports only torch, the light
top-level ``fairesi`` package (for ``fairesi.__path__``) and fairesi's leaf utilities
(:mod:`fairesi._validate`), never the networks (nor scipy), so importing it costs little
more than importing torch. It may be imported by :mod:`fairesi.models`,
:mod:`fairesi.export` and the benchmarks (``bench/``).
"""

from fairesi.ops._library import PATCH_LEN, available, library_path
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
    "library_path",
    "make_refine",
    "spectral_temporal_refine_reference",
]
