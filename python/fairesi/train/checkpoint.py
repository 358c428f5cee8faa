"""Checkpoint files: one ``.pt`` of plain containers, written atomically, read with
``torch.load(weights_only=True)``::

    format        "fairesi-checkpoint"
    version       2 (version 1, whose config["train"] was flat, is still read)
    state_dict    model parameters and buffers
    config        {"model": {"name", "hyper", "resolved"}, "data": SimConfig fields,
                   "head_model": {"name", "n_regions", "modality", "ch_names"},
                   "train": TrainConfig.to_dict() (everything but the data)}
    metrics       {"epoch", "step", "train_loss", "val_loss", "val_loss_zero", "best_val_loss", ...}
    optimizer, scheduler, scaler   their ``state_dict()``
    rng           {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    progress      {"epoch", "batch", "step", "epoch_loss_sum", "epoch_samples",
                   "best_val_loss", "bad_epochs", "finished"}

``config["model"]["hyper"]`` is what the run was given (a size preset and overrides);
``resolved`` (written since the refinement default changed) records every hyper-parameter
of the built network, so the network is rebuilt exactly whatever the defaults are later
(:func:`fairesi.models.stored_hyper`; checkpoints without it take the defaults of their
time, :data:`fairesi.models.registry.LEGACY_DEFAULTS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairesi.experiment import check_head_model, load_head_model
from fairesi.io import atomic_path, load_weights_only
from fairesi.train.config import TrainConfig

__all__ = [
    "init_source",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "fairesi-checkpoint"
CHECKPOINT_VERSION = 2


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model in eval mode, on ``map_location``.
    config : dict
        ``{"model", "data", "head_model", "train"}`` as described in the module docstring.
    metrics : dict
        Training metrics at the time of writing.
    path : pathlib.Path
        The file it came from.
    head_model : fairesi.headmodel.HeadModel
        The head model the model was built for (checked against the checkpoint).
    state : dict
        The whole payload (optimizer, scheduler, scaler, RNG, progress) for resuming.
    """

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]
    path: Path
    head_model: Any
    state: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of the run that wrote this checkpoint."""
        return train_config_of(self.config)


def train_config_of(config: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint's ``config`` (any format version)."""
    return TrainConfig.from_dict(config["train"], config["data"])


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file's payload with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`fairesi.train.train`.
    map_location : str or torch.device
        Where tensors are placed.

    Returns
    -------
    payload : dict
        The plain-container payload described in the module docstring.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; give its best.pt or last.pt")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); the file is truncated")
    device = torch.device(map_location)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(map_location)!r} requested but CUDA is not available here (this "
            f"torch {torch.__version__} has no usable GPU); use --device cpu"
        )
    payload = load_weights_only(path, "checkpoint", map_location=map_location)
    missing = {"format", "state_dict", "config", "metrics"} - (
        set(payload) if isinstance(payload, dict) else set()
    )
    if missing or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a fairesi checkpoint (missing {sorted(missing) or ['format']})"
        )
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {payload['version']}; this fairesi reads "
            f"up to version {CHECKPOINT_VERSION}"
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    head_model=None,
) -> Checkpoint:
    """Load a checkpoint and rebuild its model.

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`fairesi.train.train` (``last.pt`` or ``best.pt``).
    map_location : str or torch.device
        Device of the returned model and tensors.
    head_model : HeadModel or None
        Head model to build the model for. It must have the checkpoint's number of regions
        and the same channel names (else ``ValueError``). None resolves the checkpoint's own
        head-model spec ('default', 'toy' or its file path).

    Returns
    -------
    checkpoint : Checkpoint
        With ``.model`` in eval mode.
    """
    from fairesi.models.pretrained import model_from_config

    payload = read_checkpoint(path, map_location)
    config = payload["config"]
    try:
        if head_model is None:
            head_model = load_head_model(config["train"]["head_model"])
        check_head_model(config, head_model, source=f"checkpoint {path}")
        model = model_from_config(config, payload["state_dict"], head_model, f"checkpoint {path}")
    except ValueError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        # A damaged file that still unpickles: its configuration lacks or garbles a field.
        raise ValueError(
            f"checkpoint {path} is damaged: its configuration cannot be used "
            f"({type(err).__name__}: {err}); use another checkpoint"
        ) from None
    model.to(map_location).eval()
    return Checkpoint(
        model=model,
        config=config,
        metrics=dict(payload["metrics"]),
        path=Path(path),
        head_model=head_model,
        state=payload,
    )


def init_source(spec: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The configuration and weights a fine-tuning run starts from (``init_from``).

    Parameters
    ----------
    spec : str
        A checkpoint file (``best.pt`` / ``last.pt``) or ``'pretrained:NAME'`` for a model
        that ships with fairesi.

    Returns
    -------
    config : dict
        The stored configuration (``model``, ``data``, ``head_model``, ``train``).
    state_dict : dict of str to torch.Tensor
        The weights, as stored (float16 for shipped models; ``load_state_dict`` casts).
    """
    if spec.startswith("pretrained:"):
        from fairesi.models.pretrained import available_pretrained, read_pretrained

        name = spec.partition(":")[2]
        try:
            payload = read_pretrained(name)
        except FileNotFoundError:
            have = ", ".join(available_pretrained()) or "none"
            raise FileNotFoundError(
                f"--init-from {spec}: no shipped model {name!r} (available: {have})"
            ) from None
    else:
        payload = read_checkpoint(spec)
    return dict(payload["config"]), dict(payload["state_dict"])


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint payload atomically (a reader never sees a partial file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random state a resume restores: torch's CPU generator, and CUDA's on CUDA."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
