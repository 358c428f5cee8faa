"""Figures of source estimates: brain renderings and region maps of the evaluation report,
the benchmark and ``fairesi localize``.

With the fsaverage5 surface of the default head model (:func:`brain_surface`), region
values are painted on the pial mesh in four views (left and right hemisphere, lateral and
medial) by matplotlib alone (an orthographic projection, faces drawn back to front,
Lambert shading), so no 3-D backend is needed. A head model without that surface (the
toy one, a custom parcellation of another subject) gets the older scatter of region
centroids from above and from the left. Matplotlib runs headless (Agg).

Layering: :mod:`fairesi.evaluate`, :mod:`fairesi.benchmark` and :mod:`fairesi.localize`
import it; it imports numpy, matplotlib, :mod:`fairesi.io` and, to find the surface
files, :mod:`fairesi.headmodel.anatomy`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairesi.io import atomic_path

__all__ = [
    "BrainSurface",
    "brain_surface",
    "draw_brain",
    "draw_region_map",
    "plot_brain",
    "plot_comparison",
    "plot_reconstruction",
]

#: fsaverage5: vertices per hemisphere of the pial surfaces the default head model uses.
_FSAVERAGE5_VERTICES = 10242
#: The four views of :func:`draw_brain`: (hemisphere, camera on the -x or +x side, name),
#: laid out as a 2 x 2 mosaic (lateral views on top).
_VIEWS = (
    (0, -1, "left lateral"),
    (1, 1, "right lateral"),
    (0, 1, "left medial"),
    (1, -1, "right medial"),
)


@dataclass(frozen=True)
class BrainSurface:
    """A cortical surface with the region of every vertex, for :func:`draw_brain`.

    Attributes
    ----------
    rr_mm : tuple of 2 numpy.ndarray (V_h, 3)
        Vertex positions per hemisphere (left, right), mm, x right, y anterior, z superior.
    tris : tuple of 2 numpy.ndarray (F_h, 3) int
        Triangles per hemisphere (vertex indices of that hemisphere).
    vertex_region : tuple of 2 numpy.ndarray (V_h,) int
        Region index of every vertex, -1 for none (medial wall).
    """

    rr_mm: tuple[np.ndarray, np.ndarray]
    tris: tuple[np.ndarray, np.ndarray]
    vertex_region: tuple[np.ndarray, np.ndarray]


def _save_png(fig: Any, path: str | os.PathLike, *, dpi: int) -> Path:
    """Write a matplotlib figure as a PNG, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


@functools.lru_cache(maxsize=2)
def _pial(anatomy_dir: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    import nibabel.freesurfer as nfs

    return tuple(
        tuple(nfs.read_geometry(str(Path(anatomy_dir) / f"{hemi}.pial"))) for hemi in ("lh", "rh")
    )


def brain_surface(head_model: Any) -> BrainSurface | None:
    """The fsaverage5 pial surface of a head model, or None if it has none.

    Parameters
    ----------
    head_model : fairesi.headmodel.HeadModel
        Its ``vertno`` must be every vertex of both fsaverage5 hemispheres (the default
        head model, or one built from a forward on fsaverage5's full source space).

    Returns
    -------
    BrainSurface or None
        None when the head model is not on the whole fsaverage5 surface or the surface
        files (shipped with fairesi; :func:`fairesi.headmodel.anatomy.find_anatomy_dir`)
        cannot be found: callers then draw centroid scatters.
    """
    from fairesi.headmodel.anatomy import find_anatomy_dir

    vertno = getattr(head_model, "vertno", None)
    if vertno is None or [len(v) for v in vertno] != [_FSAVERAGE5_VERTICES] * 2:
        return None
    try:
        surfaces = _pial(str(find_anatomy_dir()))
    except (FileNotFoundError, OSError, ValueError):
        return None
    regions = np.split(np.asarray(head_model.vertex_region), [_FSAVERAGE5_VERTICES])
    vertex_region = []
    for (rr, _), vert, reg in zip(surfaces, vertno, regions, strict=True):
        full = np.full(len(rr), -1, dtype=np.int64)
        full[np.asarray(vert)] = reg
        vertex_region.append(full)
    return BrainSurface(
        rr_mm=(surfaces[0][0], surfaces[1][0]),
        tris=(surfaces[0][1], surfaces[1][1]),
        vertex_region=(vertex_region[0], vertex_region[1]),
    )


def draw_brain(
    ax: Any, surface: BrainSurface, values: np.ndarray, *, vmax: float | None = None
) -> Any:
    """Paint region values on the cortex in four views (one axes, a 2 x 2 mosaic).

    Top row: left and right hemisphere, lateral; bottom row: left and right, medial.
    Faces take the mean of their vertices' region values, normalised to ``vmax`` and
    coloured with 'RdBu_r' (-1 .. 1); faces under 5% of ``vmax`` are grey; every face is
    shaded by its angle to the viewer.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    surface : BrainSurface
    values : numpy.ndarray (R,)
        One value per region (any unit).
    vmax : float or None
        The magnitude shown as full colour (default: max |values|).

    Returns
    -------
    matplotlib.cm.ScalarMappable
        For a colour bar (scale -1 .. 1, i.e. values / vmax).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    values = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(values).max()) if vmax is None else float(vmax)
    scale = max(scale, 1e-30)
    cmap = colormaps["RdBu_r"]
    grey = np.array([0.78, 0.78, 0.78])
    polys, colours = [], []
    widths = [float(np.ptp(rr[:, 1])) for rr in surface.rr_mm]
    heights = [float(np.ptp(rr[:, 2])) for rr in surface.rr_mm]
    step_x, step_y = max(widths) * 1.05, max(heights) * 1.1
    for k, (hemi, side, _) in enumerate(_VIEWS):
        rr, tris = surface.rr_mm[hemi], surface.tris[hemi]
        region = surface.vertex_region[hemi]
        vertex_value = np.where(region >= 0, values[np.clip(region, 0, None)], 0.0) / scale
        tri = rr[tris]  # (F, 3 corners, 3)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        facing = normal[:, 0] * side  # camera on the `side` of x looks along -side * x
        keep = facing > 0
        order = np.argsort(tri[keep, :, 0].mean(1) * side)  # far faces first
        tri, facing = tri[keep][order], facing[keep][order]
        face_value = vertex_value[tris[keep][order]].mean(1)
        # Screen axes: anterior (y) to the camera's left for side = -1, right for +1.
        u = tri[..., 1] * (-side)
        v = tri[..., 2]
        u = u - (u.min() + u.max()) / 2 + (k % 2) * step_x
        v = v - (v.min() + v.max()) / 2 - (k // 2) * step_y
        rgb = np.where(
            (np.abs(face_value) < 0.05)[:, None],
            grey,
            cmap(0.5 + 0.5 * np.clip(face_value, -1, 1))[:, :3],
        )
        shade = 0.45 + 0.55 * facing
        polys.append(np.stack([u, v], axis=-1))
        colours.append(rgb * shade[:, None])
    colours = np.concatenate(colours)
    # Edges in the face colour close the hairline gaps antialiasing leaves between faces.
    collection = PolyCollection(
        np.concatenate(polys), facecolors=colours, edgecolors=colours, linewidths=0.15
    )
    ax.add_collection(collection)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ScalarMappable(norm=Normalize(-1, 1), cmap=cmap)


def plot_brain(
    surface: BrainSurface, values: np.ndarray, path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Save one region map (R,) painted on the cortex (:func:`draw_brain`) as a PNG.

    Parameters
    ----------
    surface : BrainSurface
    values : numpy.ndarray (R,)
        One value per region (any unit; shown as a fraction of the largest magnitude).
    path : path-like
        The PNG to write (atomically).
    title : str
        Figure title.

    Returns
    -------
    path : pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.subplots()
    mappable = draw_brain(ax, surface, values)
    fig.colorbar(mappable, ax=ax, label="value / max |value|", shrink=0.7)
    if title:
        ax.set_title(title)
    return _save_png(fig, path, dpi=100)


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
    surface: BrainSurface | None = None,
) -> Path:
    """Save a figure of one sample: ground truth vs estimate on the cortex (PNG, headless).

    Each map is the amplitude at the ground truth's peak time, normalised to its own
    largest magnitude: painted on the cortex in four views when ``surface`` is given
    (:func:`draw_brain`), else region centroids scattered in a top and a left view. The
    last column shows the time courses of the strongest true and estimated regions.

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
    surface : BrainSurface or None
        The cortex to paint on (:func:`brain_surface`); None: centroid scatters.

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
    if surface is not None:
        axes = fig.subplots(2, 2, width_ratios=(1.6, 1))
    else:
        axes = fig.subplots(2, 3)
    views = (("top view", 0, 1, "x (mm)", "y (mm)"), ("left view", 1, 2, "y (mm)", "z (mm)"))
    for row, (name, data) in enumerate((("ground truth", target), ("estimate", estimate))):
        if surface is not None:
            mappable = draw_brain(axes[row, 0], surface, data[:, peak_time])
            axes[row, 0].set_title(f"{name} at sample {peak_time}")
            fig.colorbar(mappable, ax=axes[row, 0], label="amplitude / max", shrink=0.8)
            continue
        for col, (view, i, j, xlabel, ylabel) in enumerate(views):
            ax = axes[row, col]
            points = draw_region_map(
                ax, centroids_mm[:, [i, j]], data[:, peak_time], source_mask, size=14
            )
            ax.set(title=f"{name}, {view}", xlabel=xlabel, ylabel=ylabel, aspect="equal")
        fig.colorbar(points, ax=axes[row, :2], label="amplitude / max at peak time")
    est_region = int(np.argmax(np.abs(estimate[:, peak_time])))
    for ax, region, what in (
        (axes[0, -1], peak_region, "strongest true region"),
        (axes[1, -1], est_region, "strongest estimated region"),
    ):
        ax.plot(target[region], label="ground truth")
        ax.plot(estimate[region], label="estimate", linestyle="--")
        ax.axvline(peak_time, color="0.6", linewidth=0.8)
        ax.set(title=f"{what} ({region})", xlabel="sample", ylabel="normalised amplitude")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save_png(fig, path, dpi=100)


def plot_comparison(
    centroids_mm: np.ndarray,
    target: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    source_mask: np.ndarray | None = None,
    title: str = "",
    surface: BrainSurface | None = None,
) -> Path:
    """Save a PNG comparing several estimates of one sample with its ground truth.

    One panel per map (ground truth, then each estimate) of the amplitude at the ground
    truth's peak time, each normalised to its largest magnitude at that time: painted on
    the cortex when ``surface`` is given (:func:`draw_brain`), else a top and a left view
    of the region centroids with the ground-truth regions outlined.

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
    surface : BrainSurface or None
        The cortex to paint on (:func:`brain_surface`); None: centroid scatters.

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
    if surface is not None:
        n_cols = min(len(maps), 3)
        n_rows = -(-len(maps) // n_cols)
        fig = Figure(figsize=(4.2 * n_cols + 1.0, 3.4 * n_rows + 0.6), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, (name, data) in zip(axes, maps.items(), strict=False):
            mappable = draw_brain(ax, surface, data[:, peak_time])
            ax.set_title(name)
        for ax in axes[len(maps) :]:
            ax.set_axis_off()
        fig.colorbar(mappable, ax=axes, label="amplitude / max at the true peak time", shrink=0.6)
        if title:
            fig.suptitle(title)
        return _save_png(fig, path, dpi=90)
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
    return _save_png(fig, path, dpi=90)
