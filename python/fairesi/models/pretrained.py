"""Trained networks that ship in the package, and rebuilding a network from stored weights.

A pretrained model is a training checkpoint's plain-container payload (the weights, the
configuration of :mod:`fairesi.train.checkpoint`, without optimizer state; weights may be
float16) plus a model card, stored as ``fairesi/resources/pretrained/NAME.pt`` and read
with ``torch.load(weights_only=True)``. :func:`pretrained` returns it ready to use;
:func:`model_from_config` is the one place that rebuilds a network from a stored
configuration and weights (checkpoints use it too).

Layering: part of :mod:`fairesi.models`; it imports :mod:`fairesi.headmodel` for the head
model a network was trained on, nothing above.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairesi.io import load_weights_only

__all__ = [
    "PRETRAINED_DIR",
    "Pretrained",
    "available_pretrained",
    "model_from_config",
    "pretrained",
    "read_pretrained",
]

#: Where the shipped models live (one ``NAME.pt`` each).
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "resources" / "pretrained"


def model_from_config(
    config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], head_model: Any, source: str
) -> nn.Module:
    """Rebuild a stored network: ``config["model"]`` on ``head_model``, then its weights.

    Parameters
    ----------
    config : mapping
        A checkpoint's ``config`` (``model``, ``head_model``, ``data``).
    state_dict : mapping
        Its weights (float16 weights are cast to the parameters' dtype).
    head_model : fairesi.headmodel.HeadModel
        The head model to build for (the caller checks it matches).
    source : str
        Names the file in error messages.

    Returns
    -------
    model : nn.Module
        In eval mode, on the CPU.
    """
    from fairesi.models.registry import build_model, stored_hyper

    model = build_model(
        config["model"]["name"],
        head_model,
        config["head_model"]["modality"],
        int(config["data"]["n_times"]),
        **stored_hyper(config["model"]),
    )
    try:
        model.load_state_dict(dict(state_dict))
    except RuntimeError as err:
        raise ValueError(
            f"{source} does not fit the {config['model']['name']!r} model it names "
            f"(written by another fairesi version?): {str(err).splitlines()[0]}"
        ) from None
    return model.eval()


@dataclass
class Pretrained:
    """A shipped model, ready to localize with.

    Attributes
    ----------
    name : str
        ``'meg'``, ``'eeg'``, ...
    model : nn.Module
        In eval mode: normalised sensor data (B, C, T) -> (B, R, T).
    head_model : fairesi.headmodel.HeadModel
        The head model it was trained on (its channels are the model's inputs).
    config : dict
        The training configuration (``model``, ``data``, ``head_model``, ``train``).
    card : dict
        The model card: training data, protocol, time and hardware, metrics, limits.
    """

    name: str
    model: nn.Module
    head_model: Any
    config: dict[str, Any]
    card: dict[str, Any]


def _root(directory: str | os.PathLike | None) -> Path:
    """``directory``, or :data:`PRETRAINED_DIR` when it is None."""
    return Path(directory) if directory is not None else PRETRAINED_DIR


def available_pretrained(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the pretrained models that ship (``NAME.pt`` in ``directory``)."""
    root = _root(directory)
    return sorted(p.stem for p in root.glob("*.pt")) if root.is_dir() else []


def read_pretrained(name: str, directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The stored payload of a shipped model: ``config``, ``state_dict`` (as stored, float16
    allowed) and ``card``, read with ``torch.load(weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        No such model ships (the message lists those that do).
    ValueError
        The file is corrupt or not a pretrained model.
    """
    path = _root(directory) / f"{name}.pt"
    if not path.is_file():
        have = available_pretrained(directory)
        raise FileNotFoundError(
            f"no pretrained model {name!r} ships with this fairesi "
            f"({'available: ' + ', '.join(have) if have else 'none does yet'}); train one "
            "with `fairesi train` and export it (docs/own-montage.md)"
        )
    payload = load_weights_only(path, "pretrained model file", hint="; reinstall fairesi")
    missing = {"config", "state_dict", "card"} - (
        set(payload) if isinstance(payload, dict) else set()
    )
    if missing:
        raise ValueError(f"{path} is not a pretrained model (missing {sorted(missing)})")
    return payload


def pretrained(
    name: str, *, head_model: Any = None, directory: str | os.PathLike | None = None
) -> Pretrained:
    """Load a pretrained model that ships in the package.

    Parameters
    ----------
    name : str
        ``'meg'`` (Neuromag-306) or ``'eeg'`` (GSN-HydroCel-256), or another shipped name
        (:func:`available_pretrained`).
    head_model : HeadModel or None
        None: the head model it names ('default', the embedded fsaverage5 model).
    directory : path-like or None
        Where to look (default :data:`PRETRAINED_DIR`).

    Returns
    -------
    Pretrained

    Raises
    ------
    FileNotFoundError
        No such model ships (the message lists those that do).
    ValueError
        The file is corrupt or not a pretrained model.
    """
    from fairesi.headmodel import HeadModel

    payload = read_pretrained(name, directory)
    config = payload["config"]
    if head_model is None:
        spec = config["train"]["head_model"]
        head_model = HeadModel.toy() if spec == "toy" else HeadModel.default()
    path = _root(directory) / f"{name}.pt"
    model = model_from_config(config, payload["state_dict"], head_model, f"pretrained model {path}")
    return Pretrained(
        name=name, model=model, head_model=head_model, config=config, card=dict(payload["card"])
    )
