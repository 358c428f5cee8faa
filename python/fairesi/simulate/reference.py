"""Reference implementation of the Jansen-Rit network in numba.

The same equations, integration scheme, output sampling and noise stream as the C++
simulator (:mod:`fairesi.simulate.jansen_rit`), written as plainly as possible (one
region at a time, ``math.exp``) so that it can serve as an independent check in the
tests and as the baseline of ``bench/bench_nmm.py``. Noise-free trajectories agree with
the C++ ones to rounding; noisy ones use the same Philox4x32-10 / Box-Muller normals.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from fairesi.simulate.connectome import Connectome
from fairesi.simulate.jansen_rit import (
    JansenRitParams,
    SigmoidalCoupling,
    deepsif_noise_sigma,
)

__all__ = ["philox4x32", "simulate_network_reference"]

_MASK32 = 0xFFFFFFFF


@numba.njit(cache=True)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 block: 4 counter words and 2 key words, returned as 4 uint64 < 2^32."""
    m32 = np.uint64(0xFFFFFFFF)
    sh = np.uint64(32)
    c0, c1, c2, c3 = np.uint64(c0), np.uint64(c1), np.uint64(c2), np.uint64(c3)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> sh) ^ c1 ^ k0, p1 & m32, (p0 >> sh) ^ c3 ^ k1, p0 & m32
        k0 = (k0 + np.uint64(0x9E3779B9)) & m32
        k1 = (k1 + np.uint64(0xBB67AE85)) & m32
    return c0, c1, c2, c3


@numba.njit(cache=True)
def _normal(region, step, run, k0, k1):
    """Standard normal of (region, step, run) from the Philox stream and Box-Muller."""
    q = region // 4
    c = philox4x32(q & 0xFFFFFFFF, step & 0xFFFFFFFF, (step >> 32) & 0xFFFFFFFF, run, k0, k1)
    j = region % 4
    pair = j // 2
    u_r = (float(c[2 * pair]) + 0.5) * 2.0**-32
    u_t = (float(c[2 * pair + 1]) + 0.5) * 2.0**-32
    rad = math.sqrt(-2.0 * math.log(u_r))
    theta = 2.0 * math.pi * u_t
    return rad * math.cos(theta) if j % 2 == 0 else rad * math.sin(theta)


@numba.njit(cache=True)
def _sig(two_nu, r, v0, v):
    return two_nu / (1.0 + math.exp(r * (v0 - v)))


@numba.njit(cache=True)
def _run(
    indptr,
    indices,
    weights,
    delays,
    P,
    coup,
    dt,
    n_transient,
    n_out,
    decim,
    k0,
    k1,
    run_offset,
    out,
):
    # P: (n_runs, 14, R) in the order A B a b v0 nu_max r J a_1 a_2 a_3 a_4 mu noise_sigma
    n_runs, _, R = P.shape
    cmin, cmax, mid, rc, gc = coup[0], coup[1], coup[2], coup[3], coup[4]
    max_d = 0
    for e in range(delays.size):
        max_d = max(max_d, delays[e])
    S = max_d + 2
    n_steps = n_transient + n_out * decim
    for run in range(n_runs):
        y = np.zeros((6, R))
        hist = np.full((S, R), cmin + (cmax - cmin) / (1.0 + math.exp(rc * (mid - 0.0))))
        c_in = np.zeros(R)
        noisy = False
        for i in range(R):
            noisy = noisy or P[run, 13, i] != 0.0
        for n in range(n_steps):
            for i in range(R):
                acc = 0.0
                for e in range(indptr[i], indptr[i + 1]):
                    acc += weights[e] * hist[(n - delays[e]) % S, indices[e]]
                c_in[i] = gc * acc
            for i in range(R):
                A, B, a, b = P[run, 0, i], P[run, 1, i], P[run, 2, i], P[run, 3, i]
                v0, two_nu, r, J = P[run, 4, i], 2.0 * P[run, 5, i], P[run, 6, i], P[run, 7, i]
                a1, a2, a3, a4, mu = (
                    P[run, 8, i],
                    P[run, 9, i],
                    P[run, 10, i],
                    P[run, 11, i],
                    P[run, 12, i],
                )
                z = 0.0
                if noisy:
                    z = P[run, 13, i] * math.sqrt(dt) * _normal(i, n, run_offset + run, k0, k1)
                x0, x1, x2, x3, x4, x5 = y[0, i], y[1, i], y[2, i], y[3, i], y[4, i], y[5, i]
                drive = mu + c_in[i]
                d3 = A * a * _sig(two_nu, r, v0, x1 - x2) - 2.0 * a * x3 - a * a * x0
                d4 = A * a * (drive + a2 * J * _sig(two_nu, r, v0, a1 * J * x0))
                d4 += -2.0 * a * x4 - a * a * x1
                d5 = B * b * a4 * J * _sig(two_nu, r, v0, a3 * J * x0) - 2.0 * b * x5 - b * b * x2
                # Euler-Maruyama predictor, then the trapezoidal corrector (TVB's Heun).
                p0, p1, p2 = x0 + dt * x3, x1 + dt * x4, x2 + dt * x5
                p3, p4, p5 = x3 + dt * d3, x4 + dt * d4 + z, x5 + dt * d5
                e3 = A * a * _sig(two_nu, r, v0, p1 - p2) - 2.0 * a * p3 - a * a * p0
                e4 = A * a * (drive + a2 * J * _sig(two_nu, r, v0, a1 * J * p0))
                e4 += -2.0 * a * p4 - a * a * p1
                e5 = B * b * a4 * J * _sig(two_nu, r, v0, a3 * J * p0) - 2.0 * b * p5 - b * b * p2
                y[0, i] = x0 + 0.5 * dt * (x3 + p3)
                y[1, i] = x1 + 0.5 * dt * (x4 + p4)
                y[2, i] = x2 + 0.5 * dt * (x5 + p5)
                y[3, i] = x3 + 0.5 * dt * (d3 + e3)
                y[4, i] = x4 + 0.5 * dt * (d4 + e4) + z
                y[5, i] = x5 + 0.5 * dt * (d5 + e5)
                hist[(n + 1) % S, i] = cmin + (cmax - cmin) / (
                    1.0 + math.exp(rc * (mid - (y[1, i] - y[2, i])))
                )
            after = n + 1 - n_transient
            if after > 0 and after % decim == 0:
                k = after // decim - 1
                for i in range(R):
                    out[run, i, k] = y[1, i] - y[2, i]


def simulate_network_reference(
    connectome: Connectome,
    duration_s: float,
    *,
    n_runs: int = 1,
    seed: int = 0,
    params: JansenRitParams | None = None,
    region_A: np.ndarray | None = None,
    noise_sigma=None,
    dt_ms: float = 0.5,
    output_sfreq: float = 500.0,
    transient_s: float = 0.5,
    conduction_speed_mm_per_ms: float | None = 3.0,
    coupling: SigmoidalCoupling | None = None,
    run_offset: int = 0,
) -> np.ndarray:
    """numba version of :func:`fairesi.simulate.jansen_rit.simulate_network`.

    Same arguments (without ``n_threads``; the reference is single-threaded) and the
    same output: float32 ``(n_runs, n_regions, n_out_samples)``, ``y1 - y2`` in mV.
    """
    params = params or JansenRitParams.deepsif()
    values = dataclasses.asdict(params)
    if region_A is not None:
        values["A"] = region_A
    values["noise_sigma"] = deepsif_noise_sigma(1.0) if noise_sigma is None else noise_sigma
    R = connectome.n_regions
    P = np.empty((n_runs, len(values), R))
    for k, v in enumerate(values.values()):
        arr = np.asarray(v, dtype=np.float64)
        P[:, k, :] = arr[np.newaxis, :] if arr.ndim == 1 else arr
    decim = round(1000.0 / dt_ms / output_sfreq)
    n_out = int(round(duration_s * output_sfreq))
    n_transient = int(round(transient_s * 1000.0 / dt_ms))
    w = connectome.weights
    delays = connectome.delay_steps(conduction_speed_mm_per_ms, dt_ms)
    if delays is None:
        delays = np.zeros(w.nnz, dtype=np.int32)
    c = coupling or SigmoidalCoupling()
    coup = np.array([c.cmin, c.cmax, c.midpoint, c.r, c.a])
    out = np.zeros((n_runs, R, n_out), dtype=np.float32)
    _run(
        w.indptr.astype(np.int64),
        w.indices.astype(np.int64),
        w.data,
        delays.astype(np.int64),
        P,
        coup,
        float(dt_ms),
        n_transient,
        n_out,
        decim,
        int(seed) & _MASK32,
        (int(seed) >> 32) & _MASK32,
        int(run_offset),
        out,
    )
    return out
