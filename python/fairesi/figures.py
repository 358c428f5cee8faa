"""Figures of source estimates: region maps of the evaluation report and of the benchmark.

Matplotlib (Agg, no display needed) draws region values at their centroids, seen from
above and from the left. :mod:`fairesi.evaluate` and :mod:`fairesi.benchmark` import it;
it imports only numpy, matplotlib and :mod:`fairesi.io`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fairesi.io import atomic_path

__all__ = ["draw_region_map", "plot_comparison", "plot_reconstruction"]


def draw_region_map(
    ax: Any,
    xy_mm: np.ndarray,
    amplitude: np.ndarray,
    source_mask: np.ndarray | None = None,
    *,
    size: float = 8.0,
) -> Any:
    """Scatter regions in one 2-D view, coloured by amplitude normalised to its max |.|.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    xy_mm : numpy.ndarray (R, 2)
        The two centroid coordinates (mm) of the view.
    amplitude : numpy.ndarray (R,)
        Region amplitudes at one time point (any unit; shown as a fraction of the max).
    source_mask : numpy.ndarray (R,) bool or None
        Ground-truth regions, outlined in black.
    size : float
        Marker size (points^2); outlines are drawn a little larger.

    Returns
    -------
    matplotlib.collections.PathCollection
        The coloured points (for a colour bar; the scale is -1 .. 1).
    """
    values = amplitude / max(float(np.abs(amplitude).max()), 1e-30)
    order = np.argsort(np.abs(values))  # strongest regions drawn on top
    points = ax.scatter(
        xy_mm[order, 0], xy_mm[order, 1], c=values[order], cmap="RdBu_r", vmin=-1, vmax=1, s=size
    )
    if source_mask is not None:
        gt = np.asarray(source_mask, dtype=bool)
        ax.scatter(
            xy_mm[gt, 0],
            xy_mm[gt, 1],
            facecolors="none",
            edgecolors="k",
            s=size * 2.2,
            linewidths=0.6,
        )
    return points


def plot_reconstruction(
    centroids_mm: np.ndarray,
    target: np.ndarray,
    estimate: np.ndarray,
    path: str | os.PathLike,
    *,
    source_mask: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Save a figure of one sample: ground truth vs estimate on the cortex (PNG, headless).

    Region centroids are scattered in a top and a left view, coloured by the normalised
    amplitude at the ground truth's peak time; a third panel shows the time courses of
    the strongest ground-truth region.

    Parameters
    ----------
    centroids_mm : numpy.ndarray (R, 3)
        Region centroids (mm, x right, y anterior, z superior).
    target, estimate : numpy.ndarray (R, T)
        Ground truth and estimate of the sample.
    path : path-like
        The PNG to write (atomically).
    source_mask : numpy.ndarray (R,) bool or None
        Ground-truth regions, outlined in black.
    title : str
        Figure title.

    Returns
    -------
    path : pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    centroids_mm = np.asarray(centroids_mm)
    target, estimate = np.asarray(target), np.asarray(estimate)
    peak_region, peak_time = np.unravel_index(np.argmax(np.abs(target)), target.shape)
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    axes = fig.subplots(2, 3)
    views = (("top view", 0, 1, "x (mm)", "y (mm)"), ("left view", 1, 2, "y (mm)", "z (mm)"))
    for row, (name, data) in enumerate((("ground truth", target), ("estimate", estimate))):
        for col, (view, i, j, xlabel, ylabel) in enumerate(views):
            ax = axes[row, col]
            points = draw_region_map(
                ax, centroids_mm[:, [i, j]], data[:, peak_time], source_mask, size=14
            )
            ax.set(title=f"{name}, {view}", xlabel=xlabel, ylabel=ylabel, aspect="equal")
        fig.colorbar(points, ax=axes[row, :2], label="amplitude / max at peak time")
    est_region = int(np.argmax(np.abs(estimate[:, peak_time])))
    for ax, region, what in (
        (axes[0, 2], peak_region, "strongest true region"),
        (axes[1, 2], est_region, "strongest estimated region"),
    ):
        ax.plot(target[region], label="ground truth")
        ax.plot(estimate[region], label="estimate", linestyle="--")
        ax.axvline(peak_time, color="0.6", linewidth=0.8)
        ax.set(title=f"{what} ({region})", xlabel="sample", ylabel="normalised amplitude")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_comparison(
    centroids_mm: np.ndarray,
    target: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    source_mask: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Save a PNG comparing several estimates of one sample with its ground truth.

    One column per map (ground truth, then each estimate), a top and a left view of the
    region centroids coloured by the amplitude at the ground truth's peak time, each map
    normalised to its largest magnitude at that time; ground-truth regions are outlined.

    Parameters
    ----------
    centroids_mm : np.ndarray, shape (R, 3)
        Region centroids, mm (x right, y anterior, z superior).
    target : np.ndarray, shape (R, T)
        Ground truth.
    estimates : mapping of str to np.ndarray, shape (R, T)
        Method label -> estimate.
    path : path-like
        The PNG to write (atomically).
    source_mask : np.ndarray, shape (R,), bool, optional
        Ground-truth regions.
    title : str
        Figure title.

    Returns
    -------
    path : pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    centroids_mm = np.asarray(centroids_mm)
    peak_time = int(np.unravel_index(np.argmax(np.abs(target)), target.shape)[1])
    maps = {"ground truth": np.asarray(target), **{k: np.asarray(v) for k, v in estimates.items()}}
    fig = Figure(figsize=(2.6 * len(maps) + 1.0, 5.2), layout="constrained")
    axes = fig.subplots(2, len(maps), squeeze=False)
    views = (("top", 0, 1), ("left", 1, 2))
    points = None
    for col, (name, data) in enumerate(maps.items()):
        for row, (view, i, j) in enumerate(views):
            ax = axes[row, col]
            points = draw_region_map(ax, centroids_mm[:, [i, j]], data[:, peak_time], source_mask)
            ax.set(title=f"{name} ({view})", aspect="equal", xticks=[], yticks=[])
    fig.colorbar(points, ax=axes, label="amplitude / max at the true peak time", shrink=0.8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path
