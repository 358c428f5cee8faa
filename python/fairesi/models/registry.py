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

__all__ = [
    "FUSED_VARIANTS",
    "LEGACY_DEFAULTS",
    "MODELS",
    "build_model",
    "resolved_hyper",
    "stored_hyper",
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


#: Hyper-parameter defaults that have changed since checkpoints began to record every
#: resolved hyper-parameter (``config["model"]["resolved"]``): a checkpoint without that
#: record was written when these were the defaults, and is rebuilt with them.
#: ``refine_residual`` became True with the refinement study (docs/design.md).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"fair_esi": {"refine_residual": False}}

#: Hyper-parameters added after checkpoints began to record the resolved ones, with the
#: value that gives the network such a checkpoint was trained as (its record lacks them,
#: so today's default, which may change, must not fill them in).
ADDED_LATER: dict[str, dict[str, Any]] = {"fair_esi": {"key_energy": "refined"}}

# Sizes of the data, not hyper-parameters: from_head_model takes them from the head model.
_DATA_FIELDS = ("n_channels", "n_regions", "n_times")


def resolved_hyper(model: nn.Module) -> dict[str, Any]:
    """Every hyper-parameter a built model has (its config's fields but the data sizes),
    as a JSON-able dict: what a checkpoint records so that later changes of the defaults
    never change the network it rebuilds."""
    fields = model.config.to_dict()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()
            if k not in _DATA_FIELDS}  # fmt: skip


def stored_hyper(section: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters that rebuild a stored network exactly.

    Parameters
    ----------
    section : dict
        A checkpoint's ``config["model"]``: ``name``, ``hyper`` (what the run was given:
        ``preset`` and overrides) and, in checkpoints written since the record began,
        ``resolved`` (:func:`resolved_hyper`).

    Returns
    -------
    dict
        ``hyper`` with every resolved value, or, for older checkpoints, with the defaults
        of their time (:data:`LEGACY_DEFAULTS`) where ``hyper`` does not set them; fields
        a record predates take their :data:`ADDED_LATER` value.
    """
    hyper = dict(section.get("hyper", {}))
    added = ADDED_LATER.get(section["name"], {})
    if "resolved" in section:
        return {**added, **hyper, **section["resolved"]}
    return {**added, **LEGACY_DEFAULTS.get(section["name"], {}), **hyper}
