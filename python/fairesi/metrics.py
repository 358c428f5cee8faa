"""Localisation metrics of paper Table II: precision, recall, LE, SD and nMSE.

Per sample ``b`` with estimate ``Ŝ (R, T)``, target ``S (R, T)``, ground-truth regions
``G = {i : source_mask[b, i]}`` (the regions of the simulated source patches) and region
centroids ``c_i`` (mm):

**Reconstructed regions** (DeepSIF's ``get_otsu_regions``, ``utils.py`` of bfinl/DeepSIF):

1. ``A = |Ŝ| / max |Ŝ|`` over all regions and time samples of the sample.
2. ``t = otsu(A)``: Otsu's threshold of all ``R * T`` values of ``A`` with 100 histogram
   bins spanning ``[min A, max A]``; the threshold is the centre of the bin that maximises
   the between-class variance (the rule of ``skimage.filters.threshold_otsu``, which DeepSIF
   calls; see :func:`otsu_threshold`).
3. Region ``i`` is reconstructed when ``A[i, t'] > t`` at at least ``min_time_points`` time
   samples ``t'`` (DeepSIF: more than 7, i.e. 8). As in DeepSIF the count runs over the
   whole window, which the simulation centres on the spike peak, so the supra-threshold
   samples are those around the peak. ``Rec`` is the set of reconstructed regions.

   This is ``rule='abs'`` (the default, our strict protocol). ``rule='deepsif'`` (the
   paper's protocol) is DeepSIF's code exactly (``utils.py``, ``get_otsu_regions``, lines
   29-33 at commit c40fc84): ``N = (|Ŝ| - min|Ŝ|) / max|Ŝ|``, ``t = otsu(N)``, and then
   the *raw signed* ``Ŝ`` is compared with ``t``: ``Ŝ[i, t'] > t``. That counts only
   positive lobes and depends on the estimate's scale (it assumes outputs in the
   normalised target units, peak about +1); ``'abs'`` compares ``A`` itself, which is
   independent of the estimate's scale and sign (needed for sLORETA-type estimates in
   arbitrary units).

**Metrics** (``d_i = min_{j in G} ||c_i - c_j||``, the distance from region ``i`` to the
nearest ground-truth region, Euclidean between centroids, mm):

* ``precision = |Rec ∩ G| / |Rec|`` (fraction)
* ``recall = |Rec ∩ G| / |G|`` (fraction)
* ``le_mm = mean_{i in Rec} d_i`` (localisation error, DeepSIF's per-sample ``le``)
* ``sd_mm = sqrt(sum_{i in Rec} d_i² w_i / sum_{i in Rec} w_i)`` with
  ``w_i = sum_t Ŝ[i, t]²`` (spatial dispersion: energy-weighted spread of the estimate
  around the ground truth, over the same reconstructed regions as LE; like
  ``mne.simulation.metrics.spatial_deviation_error``, the sum runs over the thresholded
  estimate only, so that low-amplitude leakage does not dominate)
* ``nmse = mean_{i, t} (S[i, t] / max|S| - Ŝ[i, t] / max|Ŝ|)²`` (plain number; Table II
  prints it in units of 1e-4)

All sources of a sample are pooled (DeepSIF's Python evaluation), not scored per source.

**Edge cases**: nothing reconstructed (e.g. an all-zero estimate): with ``rule='abs'``
precision = 0 and recall = 0 (the estimator found nothing, which must cost it), LE = SD =
NaN (no region to measure; :func:`summarize` leaves NaNs out of LE/SD means); with
``rule='deepsif'`` all four are NaN, so the sample is left out of every mean, as DeepSIF's
evaluation skips it (``misc_scripts/eval_calculate_sim_results.m``, lines 42-44, then
``mean(..., 'omitnan')``); :func:`count_empty` counts such samples for the report. No ground-truth region:
recall, LE and SD are NaN, precision is 0 if anything was reconstructed. An all-zero
``S`` or ``Ŝ`` counts as zero after normalisation in nMSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "METRIC_KEYS",
    "RULES",
    "count_empty",
    "localization_metrics",
    "otsu_threshold",
    "paired_difference",
    "reconstructed_regions",
    "summarize",
]

#: Keys of :func:`localization_metrics`, in Table II order.
METRIC_KEYS = ("precision", "recall", "le_mm", "sd_mm", "nmse")
#: Reconstructed-region rules: 'abs' (strict protocol), 'deepsif' (the paper's protocol).
RULES = ("abs", "deepsif")

# Elements per chunk of samples for the (chunk, R, R) distances and the (chunk, R, T)
# Otsu temporaries, which bounds memory for large batches.
_CHUNK_ELEMENTS = 1 << 23


def _as_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """Convert a NumPy array or torch tensor to NumPy and check its rank."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        array = array.astype(np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return array


def otsu_threshold(values: np.ndarray, n_bins: int = 100) -> np.ndarray:
    """Otsu's threshold of every row, as ``skimage.filters.threshold_otsu(row, nbins)``.

    Parameters
    ----------
    values : np.ndarray, shape (B, N)
        Finite values; each row is thresholded on its own.
    n_bins : int
        Histogram bins, uniform over ``[row.min(), row.max()]``, the last bin closed (as
        ``np.histogram``).

    Returns
    -------
    threshold : np.ndarray, shape (B,), float64
        Centre of the histogram bin ``k`` that maximises the between-class variance
        ``w0(k) w1(k+1) (m0(k) - m1(k+1))²`` (``w0``/``m0``: count and mean of bins <= k,
        ``w1``/``m1``: of bins >= k+1, bin centres as values); the first such bin on ties.
        A constant row gets its value, so that ``row > threshold`` selects nothing.
    """
    values = _as_array("values", values, 2)
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    if values.shape[1] == 0:
        raise ValueError("values must have at least one column")
    low = values.min(axis=1).astype(np.float64)
    high = values.max(axis=1).astype(np.float64)
    span = high - low
    fraction = np.linspace(0.0, 1.0, n_bins + 1)
    edges = low[:, None] + span[:, None] * fraction  # (B, n_bins + 1), as np.histogram
    # Uniform bins: index = floor((v - min) * n_bins / span), the max closing the last bin.
    # This is np.histogram's rule up to rounding for values within an ulp of a bin edge.
    scale = np.divide(n_bins, span, out=np.zeros_like(span), where=span > 0)
    index = ((values - low[:, None]) * scale[:, None]).astype(np.int64)
    np.minimum(index, n_bins - 1, out=index)
    n_rows = values.shape[0]
    flat = (index + n_bins * np.arange(n_rows)[:, None]).ravel()
    hist = np.bincount(flat, minlength=n_rows * n_bins).reshape(n_rows, n_bins).astype(float)
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    weight0 = np.cumsum(hist, axis=1)
    weight1 = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    # For a non-constant row the first and last bins hold its min and max, so both
    # cumulative counts are >= 1; constant rows (all in bin 0) are replaced below.
    first_sum = np.cumsum(hist * centres, axis=1)
    last_sum = np.cumsum((hist * centres)[:, ::-1], axis=1)[:, ::-1]
    mean0 = np.divide(first_sum, weight0, out=np.zeros_like(first_sum), where=weight0 > 0)
    mean1 = np.divide(last_sum, weight1, out=np.zeros_like(last_sum), where=weight1 > 0)
    between = weight0[:, :-1] * weight1[:, 1:] * (mean0[:, :-1] - mean1[:, 1:]) ** 2
    best = np.argmax(between, axis=1)
    threshold = centres[np.arange(n_rows), best]
    return np.where(span > 0, threshold, low)


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")


def reconstructed_regions(
    estimate: np.ndarray, *, n_bins: int = 100, min_time_points: int = 8, rule: str = "abs"
) -> np.ndarray:
    """Regions an estimate reconstructs, by DeepSIF's Otsu rule (see the module doc).

    Parameters
    ----------
    estimate : np.ndarray or torch.Tensor, shape (B, R, T)
        Estimated source activity (``rule='abs'``: any unit, only |estimate| relative to
        its max counts; ``rule='deepsif'``: normalised target units).
    n_bins : int
        Otsu histogram bins (DeepSIF: 100).
    min_time_points : int
        Supra-threshold time samples a region needs (DeepSIF: > 7, i.e. 8).
    rule : {'abs', 'deepsif'}
        Compare ``|Ŝ| / max|Ŝ|`` (``'abs'``) or the raw signed ``Ŝ`` (``'deepsif'``) with
        the Otsu threshold.

    Returns
    -------
    reconstructed : np.ndarray, shape (B, R), bool
    """
    estimate = _as_array("estimate", estimate, 3)
    _check_rule(rule)
    if min_time_points < 1:
        raise ValueError(f"min_time_points must be >= 1, got {min_time_points}")
    n_samples, n_regions, n_times = estimate.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(n_regions * n_times, 1))
    reconstructed = np.empty((n_samples, n_regions), dtype=bool)
    for start in range(0, n_samples, chunk):
        part = estimate[start : start + chunk]
        normalised = np.abs(_normalise_by_peak(part))
        if rule == "deepsif":
            low = normalised.min(axis=(1, 2), keepdims=True)
            threshold = otsu_threshold((normalised - low).reshape(len(part), -1), n_bins)
            above = part > threshold[:, None, None]
        else:
            threshold = otsu_threshold(normalised.reshape(len(part), -1), n_bins)
            above = normalised > threshold[:, None, None]
        reconstructed[start : start + chunk] = above.sum(axis=2) >= min_time_points
    return reconstructed


def _distance_to_sources(centroids_mm: np.ndarray, source_mask: np.ndarray) -> np.ndarray:
    """(B, R) distance (mm) of every region to the nearest ground-truth region (inf if none)."""
    centroids = centroids_mm.astype(np.float64)
    pairwise = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)  # (R, R)
    n_regions = len(centroids)
    chunk = max(1, _CHUNK_ELEMENTS // (n_regions * n_regions))
    out = np.empty(source_mask.shape, dtype=np.float64)
    for start in range(0, len(source_mask), chunk):
        mask = source_mask[start : start + chunk, None, :]  # (b, 1, R): columns = gt regions
        out[start : start + chunk] = np.where(mask, pairwise[None], np.inf).min(axis=2)
    return out


def localization_metrics(
    estimate: np.ndarray,
    target: np.ndarray,
    source_mask: np.ndarray,
    centroids_mm: np.ndarray,
    *,
    n_bins: int = 100,
    min_time_points: int = 8,
    rule: str = "abs",
) -> dict[str, np.ndarray]:
    """Precision, recall, LE, SD and nMSE of every sample (definitions in the module doc).

    Parameters
    ----------
    estimate : np.ndarray or torch.Tensor, shape (B, R, T)
        Estimated source activity Ŝ.
    target : np.ndarray or torch.Tensor, shape (B, R, T)
        Ground-truth source activity S.
    source_mask : np.ndarray or torch.Tensor, shape (B, R), bool
        Ground-truth source regions G (all regions of the simulated patches).
    centroids_mm : np.ndarray, shape (R, 3)
        Region centroids in mm.
    n_bins, min_time_points : int
        Otsu rule parameters, see :func:`reconstructed_regions`.
    rule : {'abs', 'deepsif'}
        Reconstructed-region rule and empty-reconstruction handling (module doc).

    Returns
    -------
    metrics : dict[str, np.ndarray]
        Keys ``precision``, ``recall`` (fractions in [0, 1]), ``le_mm``, ``sd_mm`` (mm),
        ``nmse`` (plain number), each of shape (B,), float64; NaN where undefined.
    """
    estimate = _as_array("estimate", estimate, 3)
    target = _as_array("target", target, 3)
    source_mask = _as_array("source_mask", source_mask, 2)
    centroids_mm = _as_array("centroids_mm", centroids_mm, 2)
    if target.shape != estimate.shape:
        raise ValueError(
            f"target shape {target.shape} must equal the estimate shape {estimate.shape} (B, R, T)"
        )
    if source_mask.shape != estimate.shape[:2]:
        raise ValueError(
            f"source_mask shape {source_mask.shape} must be (B, R) = {estimate.shape[:2]}"
        )
    if source_mask.dtype != bool:
        raise ValueError(f"source_mask must be boolean, got dtype {source_mask.dtype}")
    if centroids_mm.shape != (estimate.shape[1], 3):
        raise ValueError(
            f"centroids_mm shape {centroids_mm.shape} must be (R, 3) = ({estimate.shape[1]}, 3)"
        )
    for name, array in (("estimate", estimate), ("target", target), ("centroids_mm", centroids_mm)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or Inf")

    reconstructed = reconstructed_regions(
        estimate, n_bins=n_bins, min_time_points=min_time_points, rule=rule
    )
    n_rec = reconstructed.sum(axis=1)
    n_gt = source_mask.sum(axis=1)
    n_hit = (reconstructed & source_mask).sum(axis=1)
    empty = np.nan if rule == "deepsif" else 0.0
    precision = np.where(n_rec > 0, n_hit / np.maximum(n_rec, 1), empty)
    recall = np.where(n_gt > 0, n_hit / np.maximum(n_gt, 1), np.nan)
    recall = np.where(n_rec > 0, recall, np.where(n_gt > 0, empty, np.nan))

    defined = (n_rec > 0) & (n_gt > 0)
    distance = _distance_to_sources(centroids_mm, source_mask)  # (B, R), inf without gt
    distance = np.where(reconstructed & defined[:, None], distance, 0.0)
    le_mm = np.where(defined, distance.sum(axis=1) / np.maximum(n_rec, 1), np.nan)
    energy = np.einsum("brt,brt->br", estimate, estimate, dtype=np.float64)  # w_i
    energy = np.where(reconstructed, energy, 0.0)
    total_energy = energy.sum(axis=1)
    spread = (distance**2 * energy).sum(axis=1)
    sd_mm = np.where(
        defined, np.sqrt(spread / np.where(total_energy > 0, total_energy, 1.0)), np.nan
    )

    nmse = np.mean(
        (_normalise_by_peak(target) - _normalise_by_peak(estimate)) ** 2,
        axis=(1, 2),
        dtype=np.float64,
    )
    return {
        "precision": precision.astype(np.float64),
        "recall": recall.astype(np.float64),
        "le_mm": le_mm,
        "sd_mm": sd_mm,
        "nmse": nmse,
    }


def count_empty(per_sample: dict[str, np.ndarray]) -> int:
    """Samples whose reconstruction was empty under ``rule='deepsif'`` (precision NaN),
    which DeepSIF's evaluation leaves out of its means; 0 for ``rule='abs'`` outputs."""
    return int(np.isnan(np.asarray(per_sample["precision"], dtype=np.float64)).sum())


def _normalise_by_peak(activity: np.ndarray) -> np.ndarray:
    """(B, R, T) divided by each sample's max |value|; all-zero samples stay zero."""
    peak = np.abs(activity).max(axis=(1, 2), keepdims=True)
    return np.divide(activity, peak, out=np.zeros_like(activity), where=peak > 0)


def summarize(per_sample: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each per-sample metric over the evaluated samples.

    Parameters
    ----------
    per_sample : dict[str, np.ndarray]
        Output of :func:`localization_metrics` (or several batches of it concatenated),
        each array of shape (N,).

    Returns
    -------
    summary : dict[str, tuple[float, float]]
        ``key -> (mean, std)`` (population std, ``ddof=0``) over the samples where the
        metric is defined; NaNs (LE/SD of samples with nothing reconstructed) are left
        out, and a metric that is NaN everywhere gives ``(nan, nan)``.
    """
    summary: dict[str, tuple[float, float]] = {}
    for key, values in per_sample.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        defined = values[~np.isnan(values)]
        if defined.size == 0:
            summary[key] = (float("nan"), float("nan"))
        else:
            summary[key] = (float(defined.mean()), float(defined.std()))
    return summary


def paired_difference(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray]
) -> dict[str, tuple[float, float, int]]:
    """Mean and standard error of the per-sample difference ``b - a`` of two evaluations.

    Two estimators evaluated on the same samples differ far less in their paired
    difference than their two standard deviations suggest; its standard error says
    whether a gap is more than sampling noise.

    Parameters
    ----------
    a, b : dict[str, np.ndarray]
        :func:`localization_metrics` outputs, arrays (N,) over the same N samples in the
        same order, in the metrics' own units (fractions, mm, plain nMSE).

    Returns
    -------
    difference : dict[str, tuple[float, float, int]]
        For each key of ``a``: ``(mean, standard error, n)`` of ``b - a`` over the samples
        where both are defined (``ddof=1``; NaN when fewer than two are).

    Raises
    ------
    ValueError
        If the two hold different metrics or different numbers of samples.
    """
    if a.keys() != b.keys():
        raise ValueError(f"the evaluations hold different metrics: {sorted(a)} vs {sorted(b)}")
    difference: dict[str, tuple[float, float, int]] = {}
    for key in a:
        x = np.asarray(a[key], dtype=np.float64).ravel()
        y = np.asarray(b[key], dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"{key}: {x.size} samples vs {y.size}; pair the same samples")
        d = (y - x)[~(np.isnan(x) | np.isnan(y))]
        if d.size < 2:
            difference[key] = (float("nan"), float("nan"), int(d.size))
        else:
            se = float(d.std(ddof=1) / np.sqrt(d.size))
            difference[key] = (float(d.mean()), se, int(d.size))
    return difference
