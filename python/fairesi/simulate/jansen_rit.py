"""Jansen-Rit neural-mass network: parameters and the simulator's Python API.

Equations (TVB ``JansenRit``; six state variables per region, time in ms, mV)::

    dy0 = y3                    dy3 = A a S(y1 - y2) - 2 a y3 - a^2 y0
    dy1 = y4                    dy4 = A a (mu + a_2 J S(a_1 J y0) + c) - 2 a y4 - a^2 y1
    dy2 = y5                    dy5 = B b a_4 J S(a_3 J y0) - 2 b y5 - b^2 y2
    S(v) = 2 nu_max / (1 + exp(r (v0 - v)))

with the long-range input of TVB's ``SigmoidalJansenRit`` coupling::

    c_i(t) = G sum_j w_ij [cmin + (cmax - cmin) / (1 + exp(r_c (midpoint - (y1_j - y2_j)(t - d_ij))))]

integrated with TVB's stochastic Heun scheme (the coupling is evaluated once per step
and held over both stages; the noise increment ``noise_sigma * sqrt(dt) * N(0, 1)`` is
added to y4 only, in the predictor and in the corrector). The EEG/MEG-generating output
is the pyramidal membrane potential ``y1 - y2``.

The network starts at rest (all states 0, constant past); the first ``transient_s`` are
integrated and dropped. Output downsampling is decimation, as in DeepSIF (which keeps
every 4th sample of TVB's raw 2 kHz monitor): sample ``k`` is ``y1 - y2`` at time
``transient_s + (k + 1) / output_sfreq``. No averaging filter is applied, so spike peaks
keep their amplitude; the JR output has little power above 100 Hz, so aliasing is small.

Noise comes from a counter-based generator (Philox4x32-10 keyed by ``seed``; counter =
(region // 4, step, global run index)) and Box-Muller, so run ``i`` is the same whether it
is simulated alone, in any batch, or with any number of threads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairesi.simulate.connectome import Connectome

__all__ = [
    "DEEPSIF_SETTINGS",
    "JansenRitParams",
    "SigmoidalCoupling",
    "deepsif_noise_sigma",
    "simulate_network",
]

#: DeepSIF's three (mu, noise scale) settings: one network run per setting and region.
DEEPSIF_SETTINGS: tuple[tuple[float, float], ...] = ((0.087, 1.0), (0.08, 1.7), (0.083, 1.5))


def deepsif_noise_sigma(noise_scale: float = 1.0, a: float = 0.1) -> float:
    """Noise amplitude on y4 used by DeepSIF's TVB script.

    DeepSIF sets TVB's additive ``nsig[y4] = (a * 3.25 * (p_max - p_min) * 0.5 * s)^2 / 2``
    with ``p_max = 0.15``, ``p_min = 0.03``; TVB's increment is ``sqrt(2 nsig) dW``, so the
    amplitude is ``a * 3.25 * 0.12 * 0.5 * s`` (0.0195 for ``s = 1``).

    Parameters
    ----------
    noise_scale : float
        DeepSIF's per-setting scale ``s`` (1, 1.7 or 1.5).
    a : float
        Excitatory rate constant in 1/ms.

    Returns
    -------
    noise_sigma : float
        Amplitude in mV / ms^(1/2) (per-step increment ``noise_sigma * sqrt(dt_ms) * N(0,1)``).
    """
    return a * 3.25 * (0.15 - 0.03) * 0.5 * noise_scale


@dataclass(frozen=True)
class JansenRitParams:
    """Jansen-Rit parameters, with TVB's names and units (mV, ms, 1/ms).

    Every field is a float or an array broadcastable to ``(n_runs, n_regions)``, so a
    parameter can be set per region (shape ``(n_regions,)``), per run (``(n_runs, 1)``) or
    per run and region.

    Attributes
    ----------
    A, B : excitatory / inhibitory synaptic gains [mV].
    a, b : excitatory / inhibitory rate constants [1/ms].
    v0 : sigmoid midpoint [mV]. nu_max : maximal firing rate [1/ms]. r : steepness [1/mV].
    J : average number of synapses. a_1..a_4 : connection probabilities.
    mu : mean input firing rate [1/ms].
    """

    A: Any = 3.25
    B: Any = 22.0
    a: Any = 0.1
    b: Any = 0.05
    v0: Any = 5.52
    nu_max: Any = 0.0025
    r: Any = 0.56
    J: Any = 135.0
    a_1: Any = 1.0
    a_2: Any = 0.8
    a_3: Any = 0.25
    a_4: Any = 0.25
    mu: Any = 0.22

    @classmethod
    def tvb(cls) -> JansenRitParams:
        """TVB's defaults (v0 = 5.52 mV, mu = 0.22)."""
        return cls()

    @classmethod
    def deepsif(cls, mu: float = DEEPSIF_SETTINGS[0][0]) -> JansenRitParams:
        """DeepSIF's values: v0 = 6 mV and ``mu`` from {0.087, 0.08, 0.083}."""
        return cls(v0=6.0, mu=mu)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JansenRitParams:
        """Build from a name -> value mapping; unknown names raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown Jansen-Rit parameter(s) {unknown}; expected names from {sorted(known)}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> JansenRitParams:
        """Copy with some parameters changed; unknown names raise ValueError."""
        return JansenRitParams.from_dict({**dataclasses.asdict(self), **changes})


@dataclass(frozen=True)
class SigmoidalCoupling:
    """TVB ``SigmoidalJansenRit`` coupling (defaults as TVB and DeepSIF: a = G = 1)."""

    cmin: float = 0.0
    cmax: float = 2.0 * 0.0025
    midpoint: float = 6.0
    r: float = 0.56
    a: float = 1.0


def _broadcast_param(name: str, value: Any, n_runs: int, n_regions: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]  # a vector is per region
    try:
        return np.broadcast_to(arr, (n_runs, n_regions))
    except ValueError:
        raise ValueError(
            f"parameter '{name}' has shape {np.shape(value)}, which does not broadcast to "
            f"(n_runs, n_regions) = ({n_runs}, {n_regions})"
        ) from None


def _steps(name: str, seconds: float, dt_ms: float) -> int:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds}")
    return int(round(seconds * 1000.0 / dt_ms))


def simulate_network(
    connectome: Connectome,
    duration_s: float,
    *,
    n_runs: int = 1,
    seed: int = 0,
    params: JansenRitParams | dict[str, Any] | None = None,
    region_A: np.ndarray | None = None,
    noise_sigma: Any = None,
    dt_ms: float = 0.5,
    output_sfreq: float = 500.0,
    transient_s: float = 0.5,
    conduction_speed_mm_per_ms: float | None = 3.0,
    coupling: SigmoidalCoupling | None = None,
    run_offset: int = 0,
    n_threads: int | None = None,
) -> np.ndarray:
    """Simulate ``n_runs`` independent Jansen-Rit networks with the C++ simulator.

    Parameters
    ----------
    connectome : Connectome
        Weights (rows = receiving regions) and optional tract lengths.
    duration_s : float
        Returned duration in s (after the transient).
    n_runs : int
        Number of independent runs (different noise; parameters may differ per run).
    seed : int
        Seed of the Philox noise stream (0 <= seed < 2^64).
    params : JansenRitParams or dict, optional
        Model parameters; default ``JansenRitParams.deepsif()``. Values broadcast to
        ``(n_runs, n_regions)``.
    region_A : np.ndarray, optional
        Excitatory gain per region ``(n_regions,)`` or per run and region; overrides
        ``params.A`` (DeepSIF: 3.5 in the source region, 3.25 elsewhere).
    noise_sigma : float or array, optional
        Noise amplitude on y4 in mV/ms^0.5, broadcast to ``(n_runs, n_regions)``; default
        ``deepsif_noise_sigma(1.0)``; 0 gives the deterministic system.
    dt_ms : float
        Integration step in ms.
    output_sfreq : float
        Output sampling rate in Hz; ``1000 / dt_ms`` must be an integer multiple of it.
    transient_s : float
        Simulated and discarded before the output starts, in s.
    conduction_speed_mm_per_ms : float or None
        Conduction speed for delays from the tract lengths; None disables delays.
    coupling : SigmoidalCoupling, optional
        Long-range coupling parameters.
    run_offset : int
        Global index of the first run in the noise stream: runs ``[run_offset,
        run_offset + n_runs)`` of a larger job give the same output however it is split.
    n_threads : int, optional
        OpenMP threads (default: all available). Runs are spread over the threads; with
        fewer runs than threads, the threads share each run's regions instead (one
        synchronisation per step, which only pays off on otherwise idle cores).

    Returns
    -------
    y : np.ndarray of float32, shape (n_runs, n_regions, n_out_samples)
        ``y1 - y2`` in mV at ``output_sfreq``; ``n_out_samples = round(duration_s *
        output_sfreq)``.
    """
    from fairesi import _nmm

    if not isinstance(connectome, Connectome):
        raise TypeError(f"connectome must be a Connectome, got {type(connectome).__name__}")
    dt_ms = float(dt_ms)
    if not (math.isfinite(dt_ms) and dt_ms > 0):
        raise ValueError(f"dt_ms must be a finite positive number of ms, got {dt_ms}")
    output_sfreq = float(output_sfreq)
    if not (math.isfinite(output_sfreq) and output_sfreq > 0):
        raise ValueError(f"output_sfreq must be a positive number of Hz, got {output_sfreq}")
    decimation = round(1000.0 / dt_ms / output_sfreq)
    if decimation < 1 or abs(decimation * output_sfreq * dt_ms - 1000.0) > 1e-6:
        raise ValueError(
            f"output_sfreq={output_sfreq} Hz must divide the integration rate "
            f"{1000.0 / dt_ms:g} Hz (dt_ms={dt_ms}) an integer number of times"
        )
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s}")
    n_out = int(round(duration_s * output_sfreq))
    n_transient = _steps("transient_s", transient_s, dt_ms)
    if int(n_runs) < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    n_runs = int(n_runs)
    if not (0 <= int(seed) < 2**64):
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")

    if params is None:
        params = JansenRitParams.deepsif()
    elif isinstance(params, dict):
        params = JansenRitParams.from_dict(params)
    elif not isinstance(params, JansenRitParams):
        raise TypeError(f"params must be JansenRitParams or dict, got {type(params).__name__}")
    values = dataclasses.asdict(params)
    if region_A is not None:
        values["A"] = region_A
    values["noise_sigma"] = deepsif_noise_sigma(1.0) if noise_sigma is None else noise_sigma
    R = connectome.n_regions
    arrays = {name: _broadcast_param(name, v, n_runs, R) for name, v in values.items()}

    w = connectome.weights
    delays = connectome.delay_steps(conduction_speed_mm_per_ms, dt_ms)
    coupling = coupling or SigmoidalCoupling()
    return _nmm.simulate(
        w.indptr.astype(np.int32, copy=False),
        w.indices.astype(np.int32, copy=False),
        w.data,
        delays,
        arrays,
        dataclasses.asdict(coupling),
        n_runs,
        dt_ms,
        n_transient,
        n_out,
        decimation,
        int(seed),
        int(run_offset),
        0 if n_threads is None else int(n_threads),
    )
