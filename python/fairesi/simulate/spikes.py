"""Spike detection in Jansen-Rit runs (DeepSIF's ``process_raw_nmm.m`` rules).

Spike rules (DeepSIF's ``process_raw_nmm.m``): a sample is a spike peak if the 500 Hz
``y1 - y2`` trace exceeds ``threshold_mv`` (8 mV) and is a local maximum. Peaks of one
region closer than ``min_separation`` samples (100 = 0.2 s) are one spike; we keep the
tallest (DeepSIF keeps the first). A spike enters the bank if its region was excitable
in that run, its whole segment lies inside the run, and no other spike of the same
region or of any region closer than ``min_hops`` falls inside the segment, and the peak
is the segment's maximum. The segment is ``segment_len`` samples with the peak at index
``segment_len // 2``, minus the region's median over the run (its resting level).
"""

from __future__ import annotations

import numpy as np

__all__ = ["detect_spikes", "select_spikes"]


def detect_spikes(
    traces: np.ndarray, *, threshold_mv: float = 8.0, min_separation: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Find spike peaks in region traces (DeepSIF's rule: above threshold and local max).

    Parameters
    ----------
    traces : np.ndarray, shape (n_regions, n_times)
        ``y1 - y2`` in mV.
    threshold_mv : float
        A peak must exceed this value (mV).
    min_separation : int
        Peaks of one region closer than this many samples are one spike; the tallest
        is kept.

    Returns
    -------
    regions, peaks : np.ndarray of int64, shape (n_spikes,)
        Region and sample index of every spike, sorted by time then region.
    """
    x = np.asarray(traces)
    if x.ndim != 2:
        raise ValueError(f"traces must have shape (n_regions, n_times), got {x.shape}")
    if min_separation < 1:
        raise ValueError(f"min_separation must be >= 1 sample, got {min_separation}")
    mid = x[:, 1:-1]
    is_peak = (mid > threshold_mv) & (mid > x[:, :-2]) & (mid >= x[:, 2:])
    regions, peaks = np.nonzero(is_peak)
    peaks = peaks + 1
    keep = np.zeros(regions.size, dtype=bool)
    bounds = np.searchsorted(regions, np.arange(x.shape[0] + 1))
    for r in np.unique(regions):
        lo, hi = bounds[r], bounds[r + 1]
        t = peaks[lo:hi]
        accepted: list[int] = []
        for j in np.argsort(-x[r, t], kind="stable"):
            if all(abs(int(t[j]) - int(t[a])) >= min_separation for a in accepted):
                accepted.append(j)
        keep[lo + np.asarray(accepted, dtype=np.int64)] = True
    regions, peaks = regions[keep], peaks[keep]
    order = np.lexsort((regions, peaks))
    return regions[order].astype(np.int64), peaks[order].astype(np.int64)


def select_spikes(
    traces: np.ndarray,
    excitable: np.ndarray,
    near: np.ndarray,
    *,
    segment_len: int = 500,
    threshold_mv: float = 8.0,
    min_separation: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the bank's spike segments out of one run.

    Parameters
    ----------
    traces : np.ndarray, shape (n_regions, n_times)
        ``y1 - y2`` in mV of one run.
    excitable : np.ndarray of bool, shape (n_regions,)
        Regions that had ``A = 3.5`` in this run; only their spikes are kept.
    near : np.ndarray of bool, shape (n_regions, n_regions)
        ``near[i, j]``: a spike of ``j`` inside the segment disqualifies a spike of
        ``i`` (diagonal True).
    segment_len : int
        Samples per segment; the peak sits at ``segment_len // 2``.
    threshold_mv, min_separation
        As in :func:`detect_spikes`.

    Returns
    -------
    segments : np.ndarray of float32, shape (n_kept, segment_len)
        Baseline-removed waveforms in mV.
    regions, peaks : np.ndarray of int64, shape (n_kept,)
    """
    regions, peaks = detect_spikes(traces, threshold_mv=threshold_mv, min_separation=min_separation)
    half = segment_len // 2
    n_times = traces.shape[1]
    kept = []
    for k in range(regions.size):
        r, t = regions[k], peaks[k]
        start = t - half
        if not excitable[r] or start < 0 or start + segment_len > n_times:
            continue
        inside = (peaks >= start) & (peaks < start + segment_len)
        inside[k] = False
        if np.any(near[r, regions[inside]]):
            continue
        if traces[r, start : start + segment_len].max() > traces[r, t]:
            continue  # a rise to a peak beyond the segment: the centre is not its maximum
        kept.append(k)
    kept_idx = np.asarray(kept, dtype=np.int64)
    baseline = np.median(traces, axis=1)
    segments = np.empty((kept_idx.size, segment_len), dtype=np.float32)
    for row, k in enumerate(kept_idx):
        r, start = regions[k], peaks[k] - half
        segments[row] = traces[r, start : start + segment_len] - baseline[r]
    return segments, regions[kept_idx], peaks[kept_idx]
