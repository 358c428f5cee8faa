"""Source-imaging networks: FAIR-ESI and the learned baselines (all TorchScript-able).

Every model maps sensor data ``x (B, C, T)`` to source activity ``(B, R, T)`` (regions x
times, like ``mne.SourceEstimate``) and has a ``from_head_model(head_model, modality,
n_times, **hyper)`` constructor; :func:`build_model` picks one by its registry name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fairesi.models.convdip import ConvDip
from fairesi.models.deepsif import DeepSif
from fairesi.models.fair_esi import FairEsi, FairEsiConfig

__all__ = ["MODELS", "ConvDip", "DeepSif", "FairEsi", "FairEsiConfig", "build_model"]

#: Registry name -> model class (each has ``from_head_model``).
MODELS: dict[str, type] = {
    "fair_esi": FairEsi,
    "deepsif": DeepSif,
    "convdip": ConvDip,
}


def build_model(name: str, head_model: Any, modality: str, n_times: int, **hyper: Any) -> nn.Module:
    """Build a registered model sized for a head model.

    Parameters
    ----------
    name : str
        Registry name, a key of :data:`MODELS` (e.g. ``'fair_esi'``).
    head_model : fairesi.headmodel.HeadModel
        Supplies the region count and the channel count of ``modality``.
    modality : str
        ``'eeg'`` or ``'meg'``.
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
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name].from_head_model(head_model, modality, n_times, **hyper)
