"""Jansen-Rit source simulation: connectome, network simulator, waveform bank.

- :mod:`~fairesi.simulate.connectome`: :class:`Connectome` (default from region geometry,
  or loaded from .npy/.npz/TVB zip);
- :mod:`~fairesi.simulate.jansen_rit`: :class:`JansenRitParams` and
  :func:`simulate_network` (the C++/OpenMP simulator ``fairesi._nmm``);
- :mod:`~fairesi.simulate.reference`: the numba reference of the same equations;
- :mod:`~fairesi.simulate.bank`: spike detection, :class:`WaveformBank` and
  :func:`build_bank`.
"""

from __future__ import annotations

import os
from pathlib import Path

from fairesi.simulate.bank import WaveformBank, build_bank, detect_spikes
from fairesi.simulate.connectome import Connectome
from fairesi.simulate.jansen_rit import (
    DEEPSIF_SETTINGS,
    JansenRitParams,
    SigmoidalCoupling,
    deepsif_noise_sigma,
    simulate_network,
)

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
