"""Build the default fsaverage5 / 994-region head model with MNE-Python.

This is how ``python/fairesi/resources/fsaverage5_994.npz`` (loaded by
:meth:`fairesi.headmodel.HeadModel.default`) was made::

    fairesi headmodel build --out python/fairesi/resources/fsaverage5_994.npz

:func:`build_default_head_model` runs named stages: anatomy, parcellation, source space
and frames (:mod:`fairesi.headmodel.anatomy`), then conductor, sensors, forward models
and assembly (the private functions below, in that order).

Inputs
    DeepSIF's anatomy files (``lh.pial``, ``rh.pial``: fsaverage5 pial surfaces, 10,242
    vertices per hemisphere, mm, FreeSurfer surface RAS; ``lh.nmm_994.annot``,
    ``rh.nmm_994.annot``: the 994-region parcellation) and the fsaverage files that ship
    with MNE (``fsaverage-trans.fif``: head <-> MRI).
    Every vertex of the annotation belongs to a region; a vertex labelled -1 would be
    kept as a source vertex with ``vertex_region == -1`` and no gain.

Source space
    Every pial vertex (20,484) is a source, oriented along its surface normal
    (``mne.setup_source_space(spacing='all', surface='pial')`` on a temporary subjects
    directory holding the two surfaces, then
    ``mne.convert_forward_solution(surf_ori=True, force_fixed=True)``). Region gain is
    the sum of the gains of the region's vertices (DeepSIF convention).

Conductor model (one sphere model for EEG and MEG)
    Centre ``r0``: the centre of the smallest sphere enclosing every cortical vertex.
    Brain shell radius: that sphere's radius (88 mm) plus a 2 mm margin, so the whole
    cortex lies inside and no vertex is dropped (MNE's automatic fit to the electrode
    positions excludes ~2,000 vertices and ~110 whole regions). Outer shells at MNE's
    default relative radii (0.90, 0.92, 0.97, 1.0), so the scalp radius is 100 mm, and
    conductivities (0.33, 1.0, 0.004, 0.33) S/m. The elongated head does not fit a
    sphere that encloses the whole cortex: the scalp sphere lies about 1 cm outside the
    real scalp on average (``metadata['eeg_projection_shift_mm']``). MEG uses the same
    ``r0`` (Sarvas; the conductivities do not matter for MEG in a sphere).

Sensors
    EEG: ``mne.channels.make_standard_montage('GSN-HydroCel-256')`` (positioned for
    fsaverage by MNE), electrodes projected radially onto the sphere for the
    computation (MNE's sphere formula assumes them on its surface; the stored positions
    are the montage's), gains re-referenced to the channel average. MEG: Neuromag-306
    from ``mne.channels.read_meg_canonical_info('neuromag')`` (102 magnetometers, 204
    planar gradiometers); the helmet is placed by a pure translation that puts the
    centre of the sphere fitted to the sensor positions at ``r0`` (a uniform
    scalp-to-sensor gap, the idealised subject position).

The parameters, the fitted values and the library versions are recorded in the head
model's ``metadata``.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from fairesi.headmodel.anatomy import (
    deepsif_labels,
    deepsif_source_space,
    find_anatomy_dir,
    fsaverage_mri_to_head,
    read_deepsif_anatomy,
)
from fairesi.headmodel.model import HeadModel, LeadField

#: Name of the default head model.
DEFAULT_NAME = "fsaverage5_994"
#: Relative shell radii and conductivities (S/m) of the EEG sphere model (MNE defaults).
SPHERE_RELATIVE_RADII = (0.90, 0.92, 0.97, 1.0)
SPHERE_SIGMAS = (0.33, 1.0, 0.004, 0.33)
#: Margin (mm) between the outermost cortical vertex and the brain shell.
BRAIN_SHELL_MARGIN_MM = 2.0
EEG_MONTAGE = "GSN-HydroCel-256"
MEG_SYSTEM = "neuromag"


def build_default_head_model(
    anatomy_dir: str | os.PathLike | None = None, *, verbose: bool = False, progress: bool = False
) -> HeadModel:
    """Compute the default head model (about a minute on two cores).

    Parameters
    ----------
    anatomy_dir : path-like or None
        DeepSIF anatomy folder; see :func:`find_anatomy_dir`.
    verbose : bool
        Show MNE's log.
    progress : bool
        Show a progress bar over the build stages.

    Returns
    -------
    HeadModel
        994 regions, 20,484 source vertices, ``'eeg'`` (256 channels) and ``'meg'``
        (306 channels) lead fields; the build parameters are in ``metadata``.

    Raises
    ------
    RuntimeError
        If MNE drops any source vertex or a region ends up with zero gain.
    """
    from tqdm import tqdm

    anatomy_dir = find_anatomy_dir(anatomy_dir)
    log = "info" if verbose else "error"
    bar = tqdm(total=4, desc="head model", unit="stage", disable=not progress)
    bar.set_postfix_str("anatomy and sphere fit")
    anatomy = read_deepsif_anatomy(anatomy_dir)
    mri_to_head = fsaverage_mri_to_head()
    conductor = _sphere_conductor(anatomy["rr_mm"], log)
    eeg = _eeg_sensors(conductor, mri_to_head, log)
    meg = _meg_sensors(conductor, log)

    bar.update()
    bar.set_postfix_str("source space")
    src = deepsif_source_space(anatomy_dir, verbose=log)
    labels = deepsif_labels(anatomy)
    n_vertices = sum(len(rr) for rr in anatomy["rr_mm"])
    lead_fields = {}
    for modality, sensors in (("eeg", eeg), ("meg", meg)):
        bar.update()
        bar.set_postfix_str(f"{modality} forward")
        regions = _forward_regions(
            modality, sensors["info"], src, conductor["sphere"], labels, n_vertices, log
        )
        lead_fields[modality] = _head_frame_lead_field(regions, modality, sensors, mri_to_head)
    bar.update()
    bar.close()
    return _assemble(regions, lead_fields, conductor, eeg, meg, mri_to_head)


# ---------------------------------------------------------------- stage 1: conductor
def _sphere_conductor(rr_mm: list[np.ndarray], log: str) -> dict[str, Any]:
    """Sphere model whose brain shell is the smallest sphere around the cortex + margin.

    ``rr_mm`` are the (n_h, 3) pial vertex positions (mm, MRI frame). Returns ``r0_mri``
    (3,) m, ``cortex_extent`` (m, radius of the enclosing sphere), ``head_radius`` (m,
    scalp shell) and ``sphere`` (:class:`mne.bem.ConductorModel`, MRI frame).
    """
    import mne

    cortex_mri = np.concatenate(rr_mm) * 1e-3
    r0_mri, cortex_extent = _enclosing_sphere(cortex_mri)
    brain_radius = cortex_extent + BRAIN_SHELL_MARGIN_MM * 1e-3
    head_radius = brain_radius / SPHERE_RELATIVE_RADII[0]
    sphere = mne.make_sphere_model(
        r0=r0_mri,
        head_radius=head_radius,
        relative_radii=SPHERE_RELATIVE_RADII,
        sigmas=SPHERE_SIGMAS,
        verbose=log,
    )
    return {
        "r0_mri": r0_mri,
        "cortex_extent": cortex_extent,
        "head_radius": head_radius,
        "sphere": sphere,
    }


def _enclosing_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Smallest sphere containing ``points`` (n, 3); returns (centre (3,), radius).

    The largest distance to the points is a convex function of the centre, so a simplex
    search from the centroid finds its minimum (to ~10 um for points in m).
    """
    from scipy.optimize import minimize

    def max_distance(centre: np.ndarray) -> float:
        return float(np.linalg.norm(points - centre, axis=1).max())

    result = minimize(
        max_distance,
        points.mean(axis=0),
        method="Nelder-Mead",
        options={"xatol": 1e-5, "fatol": 1e-6, "maxiter": 4000},
    )
    return result.x, max_distance(result.x)


def _fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points`` (n, 3); returns (centre (3,), radius)."""
    design = np.c_[2.0 * points, np.ones(len(points))]
    solution = np.linalg.lstsq(design, np.sum(points**2, axis=1), rcond=None)[0]
    centre = solution[:3]
    return centre, float(np.sqrt(solution[3] + centre @ centre))


# ---------------------------------------------------------------- stage 2: sensors
# The forward models run with the MRI frame standing in for the head frame (identity
# transform, sensors moved into the MRI frame): MNE 1.13 checks that sources lie in the
# sphere by comparing MRI-frame source positions with the head-frame sphere centre,
# which wrongly drops ~2,900 vertices when the two frames differ.
def _eeg_sensors(conductor: dict[str, Any], mri_to_head: Any, log: str) -> dict[str, Any]:
    """EEG montage with electrodes moved into the MRI frame and onto the scalp sphere.

    Returns ``info`` (:class:`mne.Info`, positions in the MRI frame, on the sphere),
    ``electrodes_head`` (n_eeg, 3) m (montage positions, head frame, what is stored),
    ``electrodes_mri`` and ``electrodes_on_sphere`` (n_eeg, 3) m (MRI frame, before and
    after the radial projection).
    """
    import mne

    r0_mri, head_radius = conductor["r0_mri"], conductor["head_radius"]
    eeg_info = mne.create_info(
        mne.channels.make_standard_montage(EEG_MONTAGE).ch_names, 1000.0, "eeg"
    )
    eeg_info.set_montage(EEG_MONTAGE, verbose=log)
    electrodes_head = np.array([ch["loc"][:3] for ch in eeg_info["chs"]])
    # MNE evaluates the sphere potential at the electrode's own radius, and the formula
    # holds on the sphere's surface, so electrodes are projected radially onto it. The
    # montage has no reference electrode (loc[3:6] == 0): the average reference is
    # applied to the gains afterwards.
    electrodes_mri = mne.transforms.apply_trans(
        mne.transforms.invert_transform(mri_to_head), electrodes_head
    )
    offsets = electrodes_mri - r0_mri
    electrodes_on_sphere = r0_mri + head_radius * offsets / np.linalg.norm(
        offsets, axis=1, keepdims=True
    )
    # Writing into a channel's loc array in place needs no Info._unlock().
    for ch, position in zip(eeg_info["chs"], electrodes_on_sphere, strict=True):
        ch["loc"][:3] = position
    return {
        "info": eeg_info,
        "electrodes_head": electrodes_head,
        "electrodes_mri": electrodes_mri,
        "electrodes_on_sphere": electrodes_on_sphere,
    }


def _meg_sensors(conductor: dict[str, Any], log: str) -> dict[str, Any]:
    """Neuromag-306 helmet translated so its fitted sphere centre is the conductor's r0.

    Returns ``info`` (:class:`mne.Info` whose ``dev_head_t`` maps the device to the MRI
    frame), ``helmet_radius`` (m, sphere fitted to the coil centres) and ``dev_mri``
    (4, 4) (device -> MRI translation, m).
    """
    import mne

    meg_info = mne.channels.read_meg_canonical_info(MEG_SYSTEM, verbose=log)
    sensor_centre, helmet_radius = _fit_sphere(np.array([ch["loc"][:3] for ch in meg_info["chs"]]))
    dev_mri = np.eye(4)
    dev_mri[:3, 3] = conductor["r0_mri"] - sensor_centre
    meg_info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_mri)
    return {"info": meg_info, "helmet_radius": helmet_radius, "dev_mri": dev_mri}


# ---------------------------------------------------------------- stage 3: forward
def _forward_regions(
    modality: str, info: Any, src: Any, sphere: Any, labels: list, n_vertices: int, log: str
) -> HeadModel:
    """Forward model of one modality, summed into regions (MRI frame as head frame).

    Returns a :class:`HeadModel` holding only ``modality``'s lead field; its sensor
    positions are still in the MRI frame. Raises RuntimeError if MNE drops a vertex.
    """
    import mne

    fwd = mne.make_forward_solution(
        info,
        trans=mne.transforms.Transform("head", "mri", np.eye(4)),
        src=src,
        bem=sphere,
        meg=modality == "meg",
        eeg=modality == "eeg",
        mindist=0.0,
        n_jobs=1,
        verbose=log,
    )
    n_used = sum(len(s["vertno"]) for s in fwd["src"])
    if n_used != n_vertices:
        raise RuntimeError(
            f"MNE dropped {n_vertices - n_used} source vertices from the {modality} "
            "forward model; the sphere does not enclose the cortex"
        )
    return HeadModel.from_forward(fwd, labels, name=DEFAULT_NAME)


def _head_frame_lead_field(
    regions: HeadModel, modality: str, sensors: dict[str, Any], mri_to_head: Any
) -> LeadField:
    """``regions``' lead field with sensor positions (n_channels, 3) m in the head frame.

    EEG gets the montage positions (before the projection onto the sphere), MEG its coil
    centres moved from the MRI to the head frame. Raises RuntimeError if a region has
    zero gain.
    """
    import mne

    lead_field = regions.lead_field(modality)
    if modality == "eeg":
        lead_field.ch_positions_m = sensors["electrodes_head"].astype(np.float32)
    else:
        lead_field.ch_positions_m = mne.transforms.apply_trans(
            mri_to_head, lead_field.ch_positions_m.astype(np.float64)
        ).astype(np.float32)
    silent = np.flatnonzero(~np.any(lead_field.gain != 0, axis=0))
    if silent.size:
        raise RuntimeError(f"regions {silent[:10].tolist()} have zero {modality} gain")
    return lead_field


# ---------------------------------------------------------------- stage 4: assemble
def _assemble(
    regions: HeadModel,
    lead_fields: dict[str, LeadField],
    conductor: dict[str, Any],
    eeg: dict[str, Any],
    meg: dict[str, Any],
    mri_to_head: Any,
) -> HeadModel:
    """The default head model: geometry of ``regions``, both lead fields, provenance."""
    return HeadModel(
        name=DEFAULT_NAME,
        region_names=regions.region_names,
        region_centroids_mm=regions.region_centroids_mm,
        region_normals=regions.region_normals,
        region_areas_mm2=regions.region_areas_mm2,
        vertex_region=regions.vertex_region,
        vertno=regions.vertno,
        adjacency=regions.adjacency,
        lead_fields=lead_fields,
        region_moments=regions.region_moments,
        metadata=_metadata(conductor, eeg, meg, mri_to_head),
    )


def _metadata(
    conductor: dict[str, Any], eeg: dict[str, Any], meg: dict[str, Any], mri_to_head: Any
) -> dict[str, Any]:
    """JSON-able build parameters, fitted values and library versions."""
    import mne

    shift_m = np.linalg.norm(eeg["electrodes_on_sphere"] - eeg["electrodes_mri"], axis=1)
    return {
        "kind": "default",
        "build_command": "fairesi headmodel build --out python/fairesi/resources/"
        "fsaverage5_994.npz",
        "source_space": "fsaverage5 pial, all 20484 vertices, fixed orientation "
        "(surface normals); region gain = sum of vertex gains",
        "parcellation": "DeepSIF nmm_994 (bfinl/DeepSIF anatomy/fsaverage5), regions "
        "ordered by annotation id",
        "coordinate_frames": "centroids: fsaverage MRI surface RAS, mm; sensors: MNE "
        "head frame (fsaverage-trans.fif), m",
        "eeg_montage": EEG_MONTAGE,
        "eeg_reference": "average",
        "eeg_electrodes": "montage positions (stored); projected radially onto the "
        "sphere surface for the forward computation",
        "eeg_projection_shift_mm": {
            "median": float(np.median(shift_m) * 1e3),
            "max": float(np.max(shift_m) * 1e3),
        },
        "meg_system": "neuromag306 (mne.channels.read_meg_canonical_info)",
        "meg_dev_head_t": (mri_to_head["trans"] @ meg["dev_mri"]).tolist(),
        "mri_head_t": mri_to_head["trans"].tolist(),
        "forward_frame": "MRI frame used as head frame in MNE (identity trans, see "
        "fairesi.headmodel.build); sensor positions converted to the head frame after",
        "meg_helmet_sphere_radius_m": meg["helmet_radius"],
        "conductor": "sphere model (mne.make_sphere_model), EEG and MEG",
        "sphere_r0_mri_m": conductor["r0_mri"].tolist(),
        "sphere_r0_head_m": mne.transforms.apply_trans(mri_to_head, conductor["r0_mri"]).tolist(),
        "sphere_r0_from": "centre of the smallest sphere enclosing all cortical vertices",
        "cortex_extent_from_r0_m": conductor["cortex_extent"],
        "sphere_head_radius_m": conductor["head_radius"],
        "sphere_relative_radii": list(SPHERE_RELATIVE_RADII),
        "sphere_sigmas_S_per_m": list(SPHERE_SIGMAS),
        "brain_shell_margin_mm": BRAIN_SHELL_MARGIN_MM,
        "n_vertices_excluded": 0,
        "versions": _library_versions(),
    }


def _library_versions() -> dict[str, str]:
    """Versions of fairesi, MNE, NumPy, SciPy, nibabel and Python."""
    import mne
    import nibabel
    import scipy

    from fairesi import __version__

    return {
        "fairesi": __version__,
        "mne": mne.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
        "python": platform.python_version(),
    }


__all__ = [
    "BRAIN_SHELL_MARGIN_MM",
    "DEFAULT_NAME",
    "EEG_MONTAGE",
    "MEG_SYSTEM",
    "SPHERE_RELATIVE_RADII",
    "SPHERE_SIGMAS",
    "build_default_head_model",
    "find_anatomy_dir",
    "read_deepsif_anatomy",
]
