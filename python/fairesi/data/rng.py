"""Counter-based random numbers for the synthesizer.

A 32-bit integer hash (Wellons' "lowbias32") of (key, counter) gives each sample its own
reproducible stream that does not depend on batch composition or device. Keys are
derived from ``(seed, split, sample index, stream)`` (:func:`sample_keys`) and, for a
redraw, the draw number (:func:`draw_keys`). The torch version runs on any device; the
numba kernel (:func:`normal_nb`) is the same arithmetic fused into one pass for the large
noise array on CPU.

All keys and counters are int64 tensors holding values in [0, 2**32).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

__all__ = [
    "M32",
    "STREAM_CENTRES",
    "STREAM_NOISE",
    "STREAM_ORDER",
    "STREAM_PARAMS",
    "bits",
    "draw_keys",
    "hash32",
    "normal_nb",
    "normal_torch",
    "sample_keys",
    "standard_normal",
    "uniform",
]

#: Mask of the low 32 bits.
M32 = 0xFFFFFFFF
_H1, _H2 = 0x7FEB352D, 0x846CA68B
#: Stream words: centre regions, per-source parameters, sensor noise, epoch order.
STREAM_CENTRES, STREAM_PARAMS, STREAM_NOISE, STREAM_ORDER = (
    0x243F6A88,
    0x85A308D3,
    0x13198A2E,
    0x03707344,
)
_DRAW_SALT = 0xA4093822
# The split's word in a sample key.
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 integer hash, elementwise.

    Parameters
    ----------
    x : torch.Tensor (...) int64
        Values in [0, 2**32).

    Returns
    -------
    torch.Tensor (...) int64
        Hashed values in [0, 2**32).
    """
    x = x ^ (x >> 16)
    x = _mul32(x, _H1)
    x = x ^ (x >> 15)
    x = _mul32(x, _H2)
    return x ^ (x >> 16)


def bits(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """32 random bits for every (key, counter) pair.

    Parameters
    ----------
    key, counter : torch.Tensor int64
        Values in [0, 2**32); the shapes broadcast.

    Returns
    -------
    torch.Tensor int64
        Random values in [0, 2**32), of the broadcast shape.
    """
    return hash32(hash32(key ^ counter) ^ key)


def uniform(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Uniform random numbers in (0, 1) for every (key, counter) pair.

    Parameters
    ----------
    key, counter : torch.Tensor int64
        Values in [0, 2**32); the shapes broadcast.

    Returns
    -------
    torch.Tensor float64
        Of the broadcast shape.
    """
    return (bits(key, counter).double() + 0.5) * 2.0**-32


def sample_keys(seed: int, split: str, index: torch.Tensor, stream: int) -> torch.Tensor:
    """Per-sample keys of one random stream.

    Parameters
    ----------
    seed : int
        Dataset seed in [0, 2**64).
    split : {'train', 'val', 'test'}
    index : torch.Tensor (B,) int64
        Sample indices within the split.
    stream : int
        One of the ``STREAM_*`` words.

    Returns
    -------
    torch.Tensor (B,) int64
        Keys in [0, 2**32), on ``index``'s device.
    """
    k = torch.full_like(index, (seed & M32) ^ 0x9E3779B9)
    for word in ((seed >> 32) & M32, _SPLIT_CODE[split], stream):
        k = hash32(k ^ word)
    return hash32(k ^ index)


def draw_keys(seed: int, split: str, index: torch.Tensor, stream: int, draw: int) -> torch.Tensor:
    """Keys of one stream for draw ``draw`` of the samples ``index``.

    Draw 0 gives :func:`sample_keys` itself, so the dataset's samples do not depend on
    whether redraws are used.

    Parameters
    ----------
    seed, split, index, stream
        As for :func:`sample_keys`; ``index`` is (B,) int64.
    draw : int
        Realisation number in [0, 2**32).

    Returns
    -------
    torch.Tensor (B,) int64
        Keys in [0, 2**32).
    """
    keys = sample_keys(seed, split, index, stream)
    if draw == 0:
        return keys
    return hash32(keys ^ hash32(torch.full_like(keys, (draw & M32) ^ _DRAW_SALT)))


def normal_torch(keys: torch.Tensor, n_channels: int, n_times: int) -> torch.Tensor:
    """Standard normal numbers from per-sample keys, on the keys' device.

    Box-Muller on pairs of counters: pair ``p = c * ceil(T/2) + j`` yields samples 2j
    (cosine) and 2j+1 (sine) of channel c.

    Parameters
    ----------
    keys : torch.Tensor (B,) int64
        Per-sample keys (:func:`draw_keys` of ``STREAM_NOISE``).
    n_channels, n_times : int
        C and T.

    Returns
    -------
    torch.Tensor (B, C, T) float32
    """
    half = (n_times + 1) // 2
    pair = torch.arange(n_channels * half, device=keys.device, dtype=torch.int64)
    k = keys[:, None]
    u1 = ((bits(k, 2 * pair) >> 8).float() + 0.5) * 2.0**-24
    u2 = ((bits(k, 2 * pair + 1) >> 8).float() + 0.5) * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return z.reshape(keys.shape[0], n_channels, 2 * half)[..., :n_times].contiguous()


@numba.njit(inline="always")
def _hash32_nb(x):  # pragma: no cover - compiled
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(_H1)) & np.uint64(M32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(_H2)) & np.uint64(M32)
    return x ^ (x >> np.uint64(16))


@numba.njit(cache=True, nogil=True, fastmath=True)
def normal_nb(keys, out):  # pragma: no cover - compiled
    """The numbers of :func:`normal_torch` (to float32 rounding), fused, on the CPU.

    Parameters
    ----------
    keys : np.ndarray (B,) uint64
        Per-sample keys in [0, 2**32).
    out : np.ndarray (B, C, T) float32
        Filled in place with standard normal numbers.
    """
    n_batch, n_channels, n_times = out.shape
    half = (n_times + 1) // 2
    scale = np.float32(2.0**-24)
    two_pi = np.float32(2.0 * math.pi)
    for b in range(n_batch):
        k = keys[b]
        for c in range(n_channels):
            for j in range(half):
                ctr = np.uint64(2 * (c * half + j))
                a = _hash32_nb(_hash32_nb(k ^ ctr) ^ k) >> np.uint64(8)
                e = _hash32_nb(_hash32_nb(k ^ (ctr + np.uint64(1))) ^ k) >> np.uint64(8)
                u1 = (np.float32(a) + np.float32(0.5)) * scale
                u2 = (np.float32(e) + np.float32(0.5)) * scale
                radius = math.sqrt(np.float32(-2.0) * math.log(u1))
                out[b, c, 2 * j] = radius * math.cos(two_pi * u2)
                if 2 * j + 1 < n_times:
                    out[b, c, 2 * j + 1] = radius * math.sin(two_pi * u2)


def standard_normal(
    keys: torch.Tensor, n_channels: int, n_times: int, device: torch.device
) -> torch.Tensor:
    """Standard normal numbers on ``device`` (the numba kernel on CPU, torch elsewhere).

    Parameters
    ----------
    keys : torch.Tensor (B,) int64
        Per-sample keys, on the CPU.
    n_channels, n_times : int
        C and T.
    device : torch.device

    Returns
    -------
    torch.Tensor (B, C, T) float32
        On ``device``.
    """
    if device.type == "cpu":
        out = np.empty((keys.shape[0], n_channels, n_times), dtype=np.float32)
        normal_nb(keys.numpy().astype(np.uint64), out)
        return torch.from_numpy(out)
    return normal_torch(keys.to(device), n_channels, n_times)
