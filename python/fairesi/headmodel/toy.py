"""The analytic toy head model: one dipole per region in a spherical head.

:func:`toy_parts` (behind :meth:`HeadModel.toy <fairesi.headmodel.model.HeadModel.toy>`,
which turns its result into a head model) places the regions and sensors; the gains come
from closed-form sphere formulas, :func:`_sphere_eeg_gain` (Frank 1952, homogeneous
sphere) and :func:`_sarvas_meg_gain` (Sarvas 1987), with sensors and regions spread by
:func:`_fibonacci_sphere`. The helpers are private but tested directly (and checked
against MNE's sphere forward model in ``tests/test_headmodel.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fairesi.headmodel.from_mne import _adjacency_from_triangles

# Physical constants of the analytic toy model.
_MU0 = 4e-7 * np.pi  # T m / A
_SIGMA_HEAD = 0.33  # S/m, homogeneous head conductivity


def toy_parts(
    n_regions: int = 50, n_eeg: int = 32, n_meg: int = 48, seed: int = 0
) -> dict[str, Any]:
    """A small synthetic head model with analytic spherical lead fields.

    Regions are one dipole each, spread quasi-uniformly (Fibonacci lattice, jittered)
    over a cortex-like spherical shell (radius 55-75 mm, so depths differ) in a
    spherical head centred at the origin. Normals point outward, tilted from the
    radial direction by an angle uniform in [0, 90) degrees, so both radial and
    tangential sources occur. The adjacency is the edge graph of the convex hull of
    the region directions (a real triangulated surface, one connected component).
    EEG electrodes sit on the scalp (radius 90 mm, upper 3/4 of the sphere); the gain is
    the potential of a dipole in a homogeneous conducting sphere (Frank 1952; sigma =
    0.33 S/m), average-referenced. MEG uses ``n_meg / 3`` sensor sites at 110 mm, each
    with one radial magnetometer and two orthogonal planar gradiometers (1 cm
    baseline), with the Sarvas (1987) field of a dipole in a spherical conductor, in
    which radial dipoles are exactly silent.

    Parameters
    ----------
    n_regions : int
        Number of regions R (>= 4).
    n_eeg : int
        Number of EEG electrodes (>= 2).
    n_meg : int
        Number of MEG channels; a multiple of 3 (>= 3).
    seed : int
        Seed of the jitter; the model is a pure function of the arguments.

    Returns
    -------
    dict
        Keyword arguments of :class:`~fairesi.headmodel.model.HeadModel` (float64
        arrays; the container casts them), each ``lead_fields[modality]`` a dict of
        :class:`~fairesi.headmodel.model.LeadField` keyword arguments: the model is named
        ``'toy'``, with ``'eeg'`` (n_eeg, R) and ``'meg'`` (n_meg, R) gains. Vertex ``i``
        is region ``i``; regions with x < 0 form the "left hemisphere".
    """
    if n_regions < 4:
        raise ValueError(f"n_regions must be >= 4 for a triangulated surface, got {n_regions}")
    if n_eeg < 2:
        raise ValueError(f"n_eeg must be >= 2 (average reference), got {n_eeg}")
    if n_meg < 3 or n_meg % 3:
        raise ValueError(f"n_meg must be a positive multiple of 3 (mag + 2 grads), got {n_meg}")
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(seed)
    directions = _fibonacci_sphere(n_regions)
    directions += rng.normal(scale=0.15 / np.sqrt(n_regions), size=directions.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # Hemispheres first-left then right, as in a source space.
    order = np.lexsort((np.arange(n_regions), directions[:, 0] >= 0))
    directions = directions[order]
    radii_mm = rng.uniform(55.0, 75.0, size=n_regions)
    centroids_mm = directions * radii_mm[:, None]

    tangent = rng.normal(size=(n_regions, 3))
    tangent -= np.sum(tangent * directions, axis=1, keepdims=True) * directions
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    tilt = rng.uniform(0.0, 0.5 * np.pi, size=n_regions)
    normals = np.cos(tilt)[:, None] * directions + np.sin(tilt)[:, None] * tangent

    hull = ConvexHull(directions)
    adjacency = _adjacency_from_triangles(hull.simplices, None, n_regions)

    dipole_pos_m = centroids_mm * 1e-3
    eeg_pos_m = 0.090 * _fibonacci_sphere(n_eeg, z_min=-0.5)
    eeg_gain = _sphere_eeg_gain(dipole_pos_m, normals, eeg_pos_m, radius_m=0.090)
    eeg_gain -= eeg_gain.mean(axis=0, keepdims=True)
    meg_pos_m, meg_gain = _toy_meg(dipole_pos_m, normals, n_meg)
    n_sites = n_meg // 3
    meg_names = [f"MEG{s + 1:03d}{k}" for s in range(n_sites) for k in "123"]
    meg_types = ["mag", "grad", "grad"] * n_sites

    n_left = int(np.sum(directions[:, 0] < 0))
    return dict(
        name="toy",
        region_names=[f"toy{i:03d}-{'lh' if i < n_left else 'rh'}" for i in range(n_regions)],
        region_centroids_mm=centroids_mm,
        region_normals=normals,
        # Equal shares of a 1000 cm^2 cortex, the order of a real hemisphere pair.
        region_areas_mm2=np.full(n_regions, 1e5 / n_regions),
        region_moments=np.ones(n_regions),
        vertex_region=np.arange(n_regions),
        vertno=[np.arange(n_left), np.arange(n_regions - n_left)],
        adjacency=adjacency,
        lead_fields={
            "eeg": {
                "modality": "eeg",
                "gain": eeg_gain,
                "ch_names": [f"E{i + 1}" for i in range(n_eeg)],
                "ch_types": ["eeg"] * n_eeg,
                "ch_positions_m": eeg_pos_m,
            },
            "meg": {
                "modality": "meg",
                "gain": meg_gain,
                "ch_names": meg_names,
                "ch_types": meg_types,
                "ch_positions_m": meg_pos_m,
            },
        },
        metadata={
            "kind": "toy",
            "n_regions": n_regions,
            "n_eeg": n_eeg,
            "n_meg": n_meg,
            "seed": seed,
            "eeg_model": "homogeneous sphere r=90 mm, sigma=0.33 S/m, average reference",
            "meg_model": "Sarvas spherical conductor, sensors at r=110 mm",
        },
    )


def _toy_meg(
    dipole_pos_m: np.ndarray, dipole_ori: np.ndarray, n_meg: int
) -> tuple[np.ndarray, np.ndarray]:
    """Channel positions (n_meg, 3) in m and gain (n_meg, n_dipoles) in T/(A m), T/(m A m).

    ``n_meg / 3`` sites at 110 mm, each a radial magnetometer followed by planar
    gradiometers along east and north (1 cm baseline); all three share the site position.
    """
    n_sites = n_meg // 3
    site_dir = _fibonacci_sphere(n_sites, z_min=-0.3)
    site_pos_m = 0.110 * site_dir
    east = np.cross([0.0, 0.0, 1.0], site_dir)
    # A site at the pole has no "east"; any tangent will do there.
    east[np.linalg.norm(east, axis=1) < 1e-9] = [1.0, 0.0, 0.0]
    east /= np.linalg.norm(east, axis=1, keepdims=True)
    north = np.cross(site_dir, east)
    mag_gain = _sarvas_meg_gain(dipole_pos_m, dipole_ori, site_pos_m, site_dir)
    baseline_m = 0.01
    grad_gains = []
    for axis in (east, north):
        b_plus = _sarvas_meg_gain(
            dipole_pos_m, dipole_ori, site_pos_m + 0.5 * baseline_m * axis, site_dir
        )
        b_minus = _sarvas_meg_gain(
            dipole_pos_m, dipole_ori, site_pos_m - 0.5 * baseline_m * axis, site_dir
        )
        grad_gains.append((b_plus - b_minus) / baseline_m)
    gain = np.stack([mag_gain, *grad_gains], axis=1).reshape(n_meg, len(dipole_pos_m))
    return np.repeat(site_pos_m, 3, 0), gain


def _fibonacci_sphere(n: int, z_min: float = -1.0) -> np.ndarray:
    """``n`` quasi-uniform unit vectors with z in [z_min, 1] (golden-angle spiral).

    Returns
    -------
    np.ndarray, shape (n, 3), float64
        Unit vectors (dimensionless), ordered from the top (z near 1) down.
    """
    k = np.arange(n) + 0.5
    z = 1.0 - (1.0 - z_min) * k / n
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k
    rho = np.sqrt(1.0 - z**2)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def _sphere_eeg_gain(
    dipole_pos_m: np.ndarray, dipole_ori: np.ndarray, electrode_pos_m: np.ndarray, radius_m: float
) -> np.ndarray:
    """Scalp potential (V per A m) of dipoles in a homogeneous conducting sphere.

    Frank's (1952) closed form for an electrode ``r`` on the surface (|r| = R) and a
    dipole ``q`` at ``r0`` (``d = r - r0``), as given by Mosher, Leahy & Lewis (1999):
    ``V = q . (2 d / |d|^3 + (r |d| + R d) / (R |d| (R |d| + r . d))) / (4 pi sigma)``.

    Parameters
    ----------
    dipole_pos_m : np.ndarray, shape (n_dipoles, 3)
        Dipole positions, m, sphere centred at the origin.
    dipole_ori : np.ndarray, shape (n_dipoles, 3)
        Unit dipole orientations.
    electrode_pos_m : np.ndarray, shape (n_electrodes, 3)
        Electrode positions on the sphere surface, m.
    radius_m : float
        Sphere radius R, m.

    Returns
    -------
    np.ndarray, shape (n_electrodes, n_dipoles)
        Potential in V per A m (reference at infinity), sigma = 0.33 S/m.
    """
    r = electrode_pos_m[:, None, :]
    d = r - dipole_pos_m[None, :, :]
    dn = np.linalg.norm(d, axis=2, keepdims=True)
    r_dot_d = np.sum(r * d, axis=2, keepdims=True)
    field_vec = 2.0 * d / dn**3 + (r * dn + radius_m * d) / (
        radius_m * dn * (radius_m * dn + r_dot_d)
    )
    return np.sum(field_vec * dipole_ori[None], axis=2) / (4.0 * np.pi * _SIGMA_HEAD)


def _sarvas_meg_gain(
    dipole_pos_m: np.ndarray,
    dipole_ori: np.ndarray,
    sensor_pos_m: np.ndarray,
    sensor_ori: np.ndarray,
) -> np.ndarray:
    """Magnetic flux density (T per A m) along ``sensor_ori`` from dipoles in a sphere.

    Sarvas (1987): ``B = mu0 / (4 pi F^2) (F q x r0 - (q x r0 . r) grad F)`` with
    ``a = r - r0``, ``F = |a| (|r||a| + |r|^2 - r0 . r)``; the sphere is centred at the
    origin and its conductivity profile does not matter.

    Parameters
    ----------
    dipole_pos_m : np.ndarray, shape (n_dipoles, 3)
        Dipole positions, m.
    dipole_ori : np.ndarray, shape (n_dipoles, 3)
        Unit dipole orientations.
    sensor_pos_m : np.ndarray, shape (n_sensors, 3)
        Sensor (point magnetometer) positions outside the conductor, m.
    sensor_ori : np.ndarray, shape (n_sensors, 3)
        Unit sensor orientations.

    Returns
    -------
    np.ndarray, shape (n_sensors, n_dipoles)
        Flux density component in T per A m.
    """
    r = sensor_pos_m[:, None, :]
    r0 = dipole_pos_m[None, :, :]
    a = r - r0
    an = np.linalg.norm(a, axis=2, keepdims=True)
    rn = np.linalg.norm(r, axis=2, keepdims=True)
    a_dot_r = np.sum(a * r, axis=2, keepdims=True)
    big_f = an * (rn * an + rn**2 - np.sum(r0 * r, axis=2, keepdims=True))
    grad_f = (an**2 / rn + a_dot_r / an + 2.0 * an + 2.0 * rn) * r - (
        an + 2.0 * rn + a_dot_r / an
    ) * r0
    q_x_r0 = np.cross(np.broadcast_to(dipole_ori[None], r0.shape), r0)
    b = (big_f * q_x_r0 - np.sum(q_x_r0 * r, axis=2, keepdims=True) * grad_f) * (
        _MU0 / (4.0 * np.pi * big_f**2)
    )
    return np.sum(b * sensor_ori[:, None, :], axis=2)


__all__ = ["toy_parts"]
