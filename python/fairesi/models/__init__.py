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
  squeeze-and-excitation; takes the 'eeg+meg' modality (EEG channels first).
* :mod:`~fairesi.models.fusion`: the squeeze-and-excitation module and
  :class:`FairEsiFusion`, what ``'fair_esi'`` builds for the 'eeg+meg' modality.
* :mod:`~fairesi.models.base`, :mod:`~fairesi.models.config`: what the three share.

Layering
--------
Imported by the layers above: :mod:`fairesi.train`, :mod:`fairesi.evaluate`,
:mod:`fairesi.export`, :mod:`fairesi.benchmark` and :mod:`fairesi.cli`. It imports torch,
numpy/scipy (ConvDip's sensor maps), :mod:`fairesi.ops` (the spectral-temporal refinement,
reference and fused op) and fairesi's leaf utilities (:mod:`fairesi._validate`);
:mod:`fairesi.headmodel` only for typing (a model needs a head model's sizes and sensor
positions to be built, never at run time). Nothing below it (``ops``, ``headmodel``,
``simulate``, ``data``) imports it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fairesi._validate import check_option
from fairesi.models.base import SourceModel
from fairesi.models.convdip import ConvDip
from fairesi.models.deepsif import DeepSif
from fairesi.models.fair_esi import FairEsi, FairEsiConfig
from fairesi.models.fusion import FairEsiFusion
from fairesi.models.mmdf_esi import MmdfEsi, MmdfEsiConfig

__all__ = [
    "MODELS",
    "ConvDip",
    "DeepSif",
    "FairEsi",
    "FairEsiConfig",
    "FairEsiFusion",
    "MmdfEsi",
    "MmdfEsiConfig",
    "SourceModel",
    "build_model",
]

#: Registry name -> model class (each has ``from_head_model``).
MODELS: dict[str, type[SourceModel]] = {
    "fair_esi": FairEsi,
    "deepsif": DeepSif,
    "convdip": ConvDip,
    "mmdf_esi": MmdfEsi,
}


#: Registry name -> the class that the name builds for a fused ('eeg+meg') modality, where
#: it differs (the others take the concatenated channels as one input).
FUSED_VARIANTS: dict[str, type[SourceModel]] = {"fair_esi": FairEsiFusion}


def build_model(name: str, head_model: Any, modality: str, n_times: int, **hyper: Any) -> nn.Module:
    """Build a registered model sized for a head model.

    Parameters
    ----------
    name : str
        Registry name, a key of :data:`MODELS` (e.g. ``'fair_esi'``).
    head_model : fairesi.headmodel.HeadModel
        Supplies the region count and the channel count of ``modality``.
    modality : str
        ``'eeg'``, ``'meg'`` or ``'eeg+meg'`` (both, EEG channels first; MMDF-ESI needs it).
    n_times : int
        Samples per input window.
    **hyper
        Model hyper-parameters, passed to ``from_head_model`` (for FAIR-ESI: ``preset`` and
        any :class:`FairEsiConfig` field).

    Returns
    -------
    nn.Module
        The model, in training mode, mapping (B, C, T) to (B, R, T).
    """
    check_option("model", name, sorted(MODELS))
    cls = MODELS[name]
    if len(head_model.lead_field(modality).channel_groups) > 1:
        cls = FUSED_VARIANTS.get(name, cls)
    return cls.from_head_model(head_model, modality, n_times, **hyper)
