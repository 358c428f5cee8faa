"""Tests of fairesi.metrics against hand-computed cases and an independent Otsu reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairesi.metrics import (
    localization_metrics,
    otsu_threshold,
    paired_difference,
    reconstructed_regions,
    summarize,
)

# Five regions on a line, 10 mm apart.
CENTROIDS_MM = np.array([[10.0 * i, 0.0, 0.0] for i in range(5)])


def otsu_reference(row: np.ndarray, n_bins: int) -> float:
    """skimage.filters.threshold_otsu's algorithm, written out with np.histogram."""
    if row.min() == row.max():
        return float(row.min())
    hist, edges = np.histogram(row, bins=n_bins, range=(row.min(), row.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_value = -1.0, 0.0
    for k in range(n_bins - 1):
        w0, w1 = hist[: k + 1].sum(), hist[k + 1 :].sum()
        m0 = (hist[: k + 1] * centres[: k + 1]).sum() / w0
        m1 = (hist[k + 1 :] * centres[k + 1 :]).sum() / w1
        value = w0 * w1 * (m0 - m1) ** 2
        if value > best:
            best, best_value = value, centres[k]
    return float(best_value)


def test_otsu_hand_checked_histogram() -> None:
    # 4 bins over [0, 4]: counts [2, 1, 0, 3], centres 0.5 .. 3.5. Between-class variance
    # w0 w1 (m0 - m1)^2: k=0: 2*4*(0.5-3)^2 = 50; k=1: 3*3*(5/6-3.5)^2 = 64; k=2: 64 (tie,
    # the first wins) -> threshold = centre of bin 1 = 1.5.
    values = np.array([[0.0, 0.0, 1.0, 3.0, 3.0, 4.0]])
    np.testing.assert_allclose(otsu_threshold(values, n_bins=4), [1.5])


def test_otsu_matches_reference_on_random_rows() -> None:
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.exponential(size=(3, 500)),
            np.abs(rng.normal(size=(2, 500))) ** 3,
            rng.uniform(-2.0, 5.0, size=(2, 500)),
        ]
    )
    expected = [otsu_reference(row, 100) for row in rows]
    np.testing.assert_allclose(otsu_threshold(rows, n_bins=100), expected, rtol=1e-12)


def test_otsu_constant_row_selects_nothing() -> None:
    values = np.full((2, 7), 0.25)
    threshold = otsu_threshold(values)
    np.testing.assert_array_equal(threshold, [0.25, 0.25])
    assert not (values > threshold[:, None]).any()


def hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample, 5 regions x 4 times; ground truth = regions {0, 1}."""
    target = np.zeros((1, 5, 4))
    target[0, 0] = [0, 1, 1, 0]
    target[0, 1] = [0, 0.5, 0.5, 0]
    estimate = np.zeros((1, 5, 4))
    estimate[0, 0] = [0, 2, 2, 0]
    estimate[0, 1] = [0, 1, 1, 0]
    estimate[0, 2] = [0, 2, 0, 0]  # above threshold at a single time point only
    estimate[0, 4] = [0, -1, -1, 0]  # negative: |estimate| counts
    mask = np.array([[True, True, False, False, False]])
    return estimate, target, mask


def test_hand_computed_metrics() -> None:
    estimate, target, mask = hand_case()
    # |Ŝ|/max: 13 zeros, four 0.5, three 1.0. Otsu (100 bins over [0, 1]): splitting
    # after bin 0 gives 13*7*(0.005-0.715)^2 = 45.9, after bin 50 gives
    # 17*3*(0.1226-0.995)^2 = 38.8, so t = 0.005 and every nonzero value is above it.
    # Regions with >= 2 supra-threshold samples: {0, 1, 4}; region 2 has only one.
    rec = reconstructed_regions(estimate, min_time_points=2)
    np.testing.assert_array_equal(rec, [[True, True, False, False, True]])
    metrics = localization_metrics(estimate, target, mask, CENTROIDS_MM, min_time_points=2)
    # d = [0, 0, 10, 20, 30] mm; w = sum_t Ŝ^2 = [8, 2, 4, 0, 2].
    np.testing.assert_allclose(metrics["precision"], [2 / 3])
    np.testing.assert_allclose(metrics["recall"], [1.0])
    np.testing.assert_allclose(metrics["le_mm"], [(0 + 0 + 30) / 3])
    np.testing.assert_allclose(metrics["sd_mm"], [math.sqrt(30.0**2 * 2 / (8 + 2 + 2))])
    # Ŝ/max|Ŝ| differs from S/max|S| at region 2 (one 1.0) and region 4 (two -0.5).
    np.testing.assert_allclose(metrics["nmse"], [(1.0 + 0.25 + 0.25) / 20])


def test_metrics_are_scale_invariant_and_accept_tensors() -> None:
    estimate, target, mask = hand_case()
    base = localization_metrics(estimate, target, mask, CENTROIDS_MM, min_time_points=2)
    scaled = localization_metrics(
        torch.from_numpy(37.0 * estimate).float(),
        torch.from_numpy(target).float(),
        torch.from_numpy(mask),
        CENTROIDS_MM,
        min_time_points=2,
    )
    for key in base:
        np.testing.assert_allclose(scaled[key], base[key], rtol=1e-6)


def test_default_rule_needs_eight_time_points() -> None:
    estimate = np.zeros((1, 5, 20))
    estimate[0, 0, 5:13] = 1.0  # 8 samples: reconstructed (DeepSIF: > 7)
    estimate[0, 3, 5:12] = 1.0  # 7 samples: not reconstructed
    np.testing.assert_array_equal(
        reconstructed_regions(estimate), [[True, False, False, False, False]]
    )


def test_perfect_estimate() -> None:
    rng = np.random.default_rng(1)
    spike = np.exp(-0.5 * ((np.arange(30) - 15) / 3.0) ** 2)
    target = np.zeros((2, 5, 30))
    target[0, 1] = spike
    target[0, 2] = 0.8 * spike
    target[1, 4] = spike
    target[1, 3] = 0.9 * spike
    target[1, 0] = 0.7 * spike
    mask = np.abs(target).max(axis=2) > 0
    metrics = localization_metrics(target, target, mask, CENTROIDS_MM)
    np.testing.assert_allclose(metrics["precision"], [1.0, 1.0])
    np.testing.assert_allclose(metrics["recall"], [1.0, 1.0])
    np.testing.assert_allclose(metrics["le_mm"], [0.0, 0.0])
    np.testing.assert_allclose(metrics["sd_mm"], [0.0, 0.0])
    np.testing.assert_allclose(metrics["nmse"], [0.0, 0.0], atol=1e-15)
    # A scaled copy is just as perfect.
    scaled = localization_metrics(rng.uniform(2, 3) * target, target, mask, CENTROIDS_MM)
    np.testing.assert_allclose(scaled["nmse"], [0.0, 0.0], atol=1e-15)


def test_batch_equals_samples_one_by_one() -> None:
    rng = np.random.default_rng(2)
    estimate = rng.normal(size=(6, 5, 40)) * rng.uniform(0.1, 3, size=(6, 5, 1))
    target = rng.normal(size=(6, 5, 40))
    mask = rng.uniform(size=(6, 5)) < 0.4
    mask[:, 0] = True
    batch = localization_metrics(estimate, target, mask, CENTROIDS_MM)
    for b in range(6):
        single = localization_metrics(
            estimate[b : b + 1], target[b : b + 1], mask[b : b + 1], CENTROIDS_MM
        )
        for key in batch:
            np.testing.assert_allclose(batch[key][b : b + 1], single[key], rtol=1e-12)


def test_edge_cases_nothing_reconstructed_and_no_ground_truth() -> None:
    target = np.zeros((2, 5, 10))
    target[:, 2, 3:6] = 1.0
    estimate = np.zeros((2, 5, 10))
    estimate[1, 3, :] = 1.0
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, 2] = True  # sample 1 has no ground-truth region
    metrics = localization_metrics(estimate, target, mask, CENTROIDS_MM)
    # Sample 0: all-zero estimate -> nothing reconstructed.
    assert metrics["precision"][0] == 0.0 and metrics["recall"][0] == 0.0
    assert np.isnan(metrics["le_mm"][0]) and np.isnan(metrics["sd_mm"][0])
    np.testing.assert_allclose(metrics["nmse"][0], 3 / 50)
    # Sample 1: region 3 reconstructed, but no ground truth.
    assert metrics["precision"][1] == 0.0
    assert np.isnan(metrics["recall"][1])
    assert np.isnan(metrics["le_mm"][1]) and np.isnan(metrics["sd_mm"][1])


def test_bad_input_raises() -> None:
    estimate, target, mask = hand_case()
    with pytest.raises(ValueError, match="target shape"):
        localization_metrics(estimate, target[:, :4], mask, CENTROIDS_MM)
    with pytest.raises(ValueError, match="boolean"):
        localization_metrics(estimate, target, mask.astype(int), CENTROIDS_MM)
    with pytest.raises(ValueError, match="centroids_mm shape"):
        localization_metrics(estimate, target, mask, CENTROIDS_MM[:4])
    bad = estimate.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="estimate contains NaN"):
        localization_metrics(bad, target, mask, CENTROIDS_MM)


def test_summarize_leaves_out_nan() -> None:
    summary = summarize(
        {
            "precision": np.array([1.0, 0.5, 0.0]),
            "le_mm": np.array([2.0, np.nan, 4.0]),
            "sd_mm": np.array([np.nan]),
        }
    )
    np.testing.assert_allclose(summary["precision"], (0.5, np.std([1.0, 0.5, 0.0])))
    np.testing.assert_allclose(summary["le_mm"], (3.0, 1.0))
    assert all(math.isnan(v) for v in summary["sd_mm"])


def test_paired_difference_by_hand() -> None:
    a = {"precision": np.array([0.5, 0.6, 0.7, 0.8]), "le_mm": np.array([2.0, np.nan, 4.0, 6.0])}
    b = {"precision": np.array([0.6, 0.8, 0.7, 1.0]), "le_mm": np.array([1.0, 3.0, np.nan, 5.0])}
    diff = paired_difference(a, b)
    d = np.array([0.1, 0.2, 0.0, 0.2])
    np.testing.assert_allclose(diff["precision"][:2], (d.mean(), d.std(ddof=1) / 2))
    assert diff["precision"][2] == 4
    # LE: only samples 0 and 3 are defined in both; both improved by 1 mm.
    np.testing.assert_allclose(diff["le_mm"], (-1.0, 0.0, 2))
    one = paired_difference({"le_mm": np.array([1.0, np.nan])}, {"le_mm": np.array([2.0, 3.0])})
    assert math.isnan(one["le_mm"][0]) and one["le_mm"][2] == 1
    with pytest.raises(ValueError, match="different metrics"):
        paired_difference(a, {"precision": b["precision"]})
    with pytest.raises(ValueError, match="pair the same samples"):
        paired_difference({"le_mm": np.ones(3)}, {"le_mm": np.ones(4)})


def test_deepsif_rule_compares_the_signed_estimate() -> None:
    """DeepSIF's get_otsu_regions: Otsu on (|S| - min)/max, then the raw signed estimate is
    compared with the threshold: a negative lobe is not reconstructed, and the rule
    depends on the estimate's scale (an estimate 10x too small reconstructs nothing)."""
    from fairesi.metrics import count_empty, reconstructed_regions

    estimate = np.zeros((1, 4, 20))
    estimate[0, 0, 5:15] = 1.0  # positive lobe
    estimate[0, 1, 5:15] = -1.0  # negative lobe, same magnitude
    estimate[0, 2, 5:15] = 0.2  # below any sensible threshold
    # Normalised |S|: values {0, 0.2, 1}; Otsu with 100 bins puts the threshold between
    # 0.2 and 1, so 'abs' keeps regions 0 and 1, 'deepsif' only the positive region 0.
    abs_rule = reconstructed_regions(estimate, rule="abs")
    deepsif = reconstructed_regions(estimate, rule="deepsif")
    assert abs_rule.tolist() == [[True, True, False, False]]
    assert deepsif.tolist() == [[True, False, False, False]]
    # Scale: 'abs' is scale-free; 'deepsif' compares raw values with a threshold ~0.6.
    assert reconstructed_regions(0.1 * estimate, rule="abs").tolist() == abs_rule.tolist()
    assert not reconstructed_regions(0.1 * estimate, rule="deepsif").any()

    target = np.zeros_like(estimate)
    target[0, 1, 5:15] = 1.0
    mask = np.array([[False, True, False, False]])
    centroids = np.array([[0.0, 0, 0], [10.0, 0, 0], [20.0, 0, 0], [30.0, 0, 0]])
    strict = localization_metrics(estimate, target, mask, centroids, rule="abs")
    paper = localization_metrics(estimate, target, mask, centroids, rule="deepsif")
    assert strict["precision"][0] == 0.5 and strict["recall"][0] == 1.0
    assert strict["le_mm"][0] == pytest.approx(5.0)  # (10 + 0) / 2
    assert paper["precision"][0] == 0.0 and paper["recall"][0] == 0.0
    assert paper["le_mm"][0] == pytest.approx(10.0)
    # An empty reconstruction: 'abs' scores precision 0; 'deepsif' leaves the sample out
    # (NaN everywhere but nMSE) and count_empty counts it.
    small = localization_metrics(0.1 * estimate, target, mask, centroids, rule="deepsif")
    assert np.isnan([small[k][0] for k in ("precision", "recall", "le_mm", "sd_mm")]).all()
    assert count_empty(small) == 1 and count_empty(strict) == 0
    with pytest.raises(ValueError, match="rule"):
        reconstructed_regions(estimate, rule="signed")
