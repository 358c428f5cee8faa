"""The model registry: :data:`MODELS` and :func:`build_model`."""

from __future__ import annotations

from typing import Any

from torch import nn

from fairesi._validate import check_option
from fairesi.models.base import SourceModel
from fairesi.models.convdip import ConvDip
from fairesi.models.deepsif import DeepSif
from fairesi.models.fair_esi import FairEsi
from fairesi.models.fusion import FairEsiFusion
from fairesi.models.mmdf_esi import MmdfEsi

__all__ = ["FUSED_VARIANTS", "MODELS", "build_model"]

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
