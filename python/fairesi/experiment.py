"""The one place that builds a run's inputs: head model -> waveform bank -> synthesizer.

Training, evaluation, the benchmark and export all need the same chain, from a training
configuration or from a checkpoint's stored configuration; they call :func:`synthesizer`
or :func:`synthesizer_for_checkpoint` here instead of building it by hand. Specs are the
strings a configuration stores: a head model is 'default', 'toy' or a file; a bank is
'default', 'synthetic' or a file.

Layering: this module imports :mod:`fairesi.headmodel`, :mod:`fairesi.simulate` and
:mod:`fairesi.data`; :mod:`fairesi.train`, :mod:`fairesi.evaluate`,
:mod:`fairesi.benchmark`, :mod:`fairesi.export` and the CLI import it, never the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fairesi.data import SimConfig, Synthesizer
from fairesi.headmodel import HeadModel

__all__ = [
    "check_head_model",
    "head_model_signature",
    "load_bank",
    "load_head_model",
    "synthesizer",
    "synthesizer_for_checkpoint",
]

logger = logging.getLogger(__name__)


def load_head_model(spec: str) -> HeadModel:
    """Return the head model named by ``spec``: 'default', 'toy', or a file path.

    Parameters
    ----------
    spec : str
        'default' (embedded fsaverage5 / 994-region model), 'toy' (``HeadModel.toy()``, for
        tests) or the path of a file written by ``HeadModel.save``.

    Returns
    -------
    head_model : fairesi.headmodel.HeadModel
    """
    if spec == "default":
        return HeadModel.default()
    if spec == "toy":
        return HeadModel.toy()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"head model {spec!r} is neither 'default', 'toy' nor an existing file"
        )
    return HeadModel.load(path)


def load_bank(spec: str, head_model: HeadModel, seed: int = 0):
    """Return the waveform bank named by ``spec``: 'default', 'synthetic', or a file path.

    Parameters
    ----------
    spec : str
        'default' (the file at ``fairesi.simulate.default_bank_path()``), 'synthetic' (the
        analytic stand-in of ``WaveformBank.synthetic``, for tests and demos only) or the path
        of a bank file.
    head_model : fairesi.headmodel.HeadModel
        The bank must cover its regions.
    seed : int
        Seed of the synthetic bank.

    Returns
    -------
    bank : fairesi.simulate.bank.WaveformBank
    """
    from fairesi.simulate import default_bank_path
    from fairesi.simulate.bank import WaveformBank

    if spec == "synthetic":
        logger.warning(
            "using the analytic stand-in waveform bank ('synthetic'): fine for tests and "
            "demos, but results are not comparable with the paper's Jansen-Rit data"
        )
        return WaveformBank.synthetic(head_model.n_regions, seed=seed)
    path = Path(default_bank_path() if spec == "default" else spec)
    if not path.is_file():
        hint = " (build it first with `fairesi simulate bank`)" if spec == "default" else ""
        raise FileNotFoundError(f"waveform bank {path} does not exist{hint}")
    return WaveformBank.load(path)


def synthesizer(
    data: SimConfig,
    *,
    head_model: str | HeadModel = "default",
    bank: str = "default",
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Synthesizer:
    """The paired-sample synthesizer of one data configuration.

    Parameters
    ----------
    data : fairesi.data.SimConfig
        The data configuration.
    head_model : str or HeadModel
        A head-model spec (see :func:`load_head_model`) or the model itself.
    bank : str
        A bank spec (see :func:`load_bank`).
    seed : int
        Seed of the samples (and of a synthetic bank).
    device : str or torch.device
        Where the synthesis runs.

    Returns
    -------
    synth : fairesi.data.Synthesizer
    """
    if isinstance(head_model, str):
        head_model = load_head_model(head_model)
    return Synthesizer(
        head_model, load_bank(bank, head_model, seed=seed), data, seed=seed, device=device
    )


def synthesizer_for_checkpoint(
    config: Mapping[str, Any],
    *,
    head_model: HeadModel | None = None,
    bank: str | None = None,
    device: str | torch.device = "cpu",
    protocol: str | None = None,
) -> Synthesizer:
    """The synthesizer of the data a checkpoint was trained on.

    Parameters
    ----------
    config : mapping
        A checkpoint's ``config`` (``{"data", "train", "head_model", ...}``).
    head_model : HeadModel or None
        The head model to use (checked by the caller, e.g. ``load_checkpoint``); None
        resolves the checkpoint's own head-model spec.
    bank : str or None
        A bank spec; None uses the checkpoint's.
    device : str or torch.device
        Where the synthesis runs.
    protocol : {'strict', 'paper'} or None
        The data under another protocol (:meth:`SimConfig.with_protocol`); None: the
        checkpoint's own.

    Returns
    -------
    synth : fairesi.data.Synthesizer
        Same seed and data configuration as the training run: split ``i`` is the sample
        the run saw (train), validated on (val) or never saw (test).
    """
    train = config["train"]
    data = SimConfig.from_dict(dict(config["data"]))
    return synthesizer(
        data if protocol is None else data.with_protocol(protocol),
        head_model=train["head_model"] if head_model is None else head_model,
        bank=train["bank"] if bank is None else bank,
        seed=int(train["seed"]),
        device=device,
    )


def head_model_signature(head_model: HeadModel, modality: str) -> dict[str, Any]:
    """What a checkpoint records about its head model, to refuse a mismatched one later.

    Returns
    -------
    signature : dict
        ``name``, ``n_regions``, ``modality`` and the lead field's ``ch_names``.
    """
    lead_field = head_model.lead_field(modality)
    return {
        "name": head_model.name,
        "n_regions": int(head_model.n_regions),
        "modality": modality,
        "ch_names": list(lead_field.ch_names),
    }


def check_head_model(
    config: Mapping[str, Any], head_model: HeadModel, source: str = "checkpoint"
) -> None:
    """Raise ``ValueError`` if ``head_model`` differs from the one a checkpoint was trained on.

    Parameters
    ----------
    config : mapping
        The checkpoint's ``config`` (its ``head_model`` entry is compared).
    head_model : fairesi.headmodel.HeadModel
        The head model the caller wants to use.
    source : str
        Names the checkpoint in the message.
    """
    saved = config["head_model"]
    modality = saved["modality"]
    if int(head_model.n_regions) != int(saved["n_regions"]):
        raise ValueError(
            f"{source} was trained on head model {saved['name']!r} with {saved['n_regions']} "
            f"regions, but head model {head_model.name!r} has {head_model.n_regions} regions"
        )
    ch_names = list(head_model.lead_field(modality).ch_names)
    if ch_names != list(saved["ch_names"]):
        detail = (
            f"{len(saved['ch_names'])} {modality} channels, but head model "
            f"{head_model.name!r} has {len(ch_names)}"
            if len(ch_names) != len(saved["ch_names"])
            else "different channel names or order"
        )
        raise ValueError(f"{source} was trained on {detail}")
