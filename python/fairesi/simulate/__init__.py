"""Jansen-Rit source simulation: connectome, network simulator, waveform bank.

- :mod:`~fairesi.simulate.connectome`: :class:`Connectome` (default from region geometry,
  or loaded from .npy/.npz/TVB zip);
- :mod:`~fairesi.simulate.jansen_rit`: :class:`JansenRitParams` and
  :func:`simulate_network` (the C++/OpenMP simulator ``fairesi._nmm``);
- :mod:`~fairesi.simulate.reference`: the numba reference of the same equations;
- :mod:`~fairesi.simulate.spikes`: spike detection (DeepSIF's rules);
- :mod:`~fairesi.simulate.bank`: :class:`WaveformBank` and :func:`build_bank`.

Layering: this package imports :mod:`fairesi.headmodel` (regions, geometry),
:mod:`fairesi.io` and :mod:`fairesi.cluster` (Dask tasks, ``build_bank(client=...)``);
:mod:`fairesi.data`, :mod:`fairesi.experiment` and the CLI import it,
never the reverse.
"""

from __future__ import annotations

import os
from pathlib import Path

from fairesi.simulate.bank import WaveformBank, build_bank
from fairesi.simulate.connectome import Connectome
from fairesi.simulate.jansen_rit import (
    DEEPSIF_SETTINGS,
    JansenRitParams,
    SigmoidalCoupling,
    deepsif_noise_sigma,
    simulate_network,
)
from fairesi.simulate.spikes import detect_spikes

__all__ = [
    "DEEPSIF_SETTINGS",
    "Connectome",
    "JansenRitParams",
    "SigmoidalCoupling",
    "WaveformBank",
    "build_bank",
    "deepsif_noise_sigma",
    "default_bank_path",
    "detect_spikes",
    "simulate_network",
]


def default_bank_path() -> Path:
    """Where ``fairesi simulate bank`` writes the default bank and later stages look.

    ``$FAIRESI_CACHE/waveform_bank.h5`` if the environment variable is set, else
    ``~/.cache/fairesi/waveform_bank.h5``.
    """
    root = os.environ.get("FAIRESI_CACHE") or Path.home() / ".cache" / "fairesi"
    return Path(root) / "waveform_bank.h5"
