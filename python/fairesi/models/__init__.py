"""Source-imaging networks: FAIR-ESI and the learned baselines (all TorchScript-able).

What lives here
---------------
Every model maps sensor data ``x (B, C, T)`` to source activity ``(B, R, T)`` (regions x
times, like ``mne.SourceEstimate``), subclasses :class:`~fairesi.models.base.SourceModel`
(``from_head_model(head_model, modality, n_times, preset=..., **hyper)`` and the input
check) and is sized by a frozen config dataclass with named presets
(:class:`~fairesi.models.config.PresetConfig`); :func:`build_model` picks one by its
registry name in :data:`MODELS`.

* :mod:`~fairesi.models.fair_esi`: FAIR-ESI (:class:`FairEsi`, :class:`FairEsiConfig`).
* :mod:`~fairesi.models.deepsif`, :mod:`~fairesi.models.convdip`: the DeepSIF and ConvDip
  baselines.
* :mod:`~fairesi.models.mmdf_esi`: MMDF-ESI (:class:`MmdfEsi`), EEG + MEG fused early by
  squeeze-and-excitation; takes the 'eeg+meg' modality (EEG channels first), or one
  modality as its fusion ablation.
* :mod:`~fairesi.models.fusion`: the squeeze-and-excitation module and
  :class:`FairEsiFusion`, what ``'fair_esi'`` builds for the 'eeg+meg' modality.
* :mod:`~fairesi.models.base`, :mod:`~fairesi.models.config`: what the networks share.
* :mod:`~fairesi.models.pretrained`: the networks that ship trained (:func:`pretrained`)
  and rebuilding a network from stored weights.

Layering
--------
Imported by the layers above: :mod:`fairesi.train`, :mod:`fairesi.evaluate`,
:mod:`fairesi.export`, :mod:`fairesi.benchmark` and :mod:`fairesi.cli`. It imports torch,
numpy/scipy (ConvDip's sensor maps), :mod:`fairesi.ops` (the spectral-temporal refinement,
reference and fused op) and fairesi's leaf utilities (:mod:`fairesi._validate`);
:mod:`fairesi.headmodel` for the sizes and sensor positions a network is built for (and
the head model of a pretrained one), never in ``forward``. Nothing below it (``ops``, ``headmodel``,
``simulate``, ``data``) imports it.
"""

from __future__ import annotations

from fairesi.models.base import SourceModel
from fairesi.models.convdip import ConvDip
from fairesi.models.deepsif import DeepSif
from fairesi.models.fair_esi import FairEsi, FairEsiConfig
from fairesi.models.fusion import FairEsiFusion
from fairesi.models.mmdf_esi import MmdfEsi, MmdfEsiConfig
from fairesi.models.pretrained import Pretrained, available_pretrained, pretrained
from fairesi.models.registry import (
    FUSED_VARIANTS,
    MODELS,
    build_model,
    resolved_hyper,
    stored_hyper,
)

__all__ = [
    "FUSED_VARIANTS",
    "MODELS",
    "ConvDip",
    "DeepSif",
    "FairEsi",
    "FairEsiConfig",
    "FairEsiFusion",
    "MmdfEsi",
    "MmdfEsiConfig",
    "Pretrained",
    "SourceModel",
    "available_pretrained",
    "build_model",
    "pretrained",
    "resolved_hyper",
    "stored_hyper",
]
