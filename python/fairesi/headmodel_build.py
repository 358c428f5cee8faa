"""Build the default fsaverage5 / 994-region head model with MNE-Python.

This is how ``python/fairesi/resources/fsaverage5_994.npz`` (loaded by
:meth:`fairesi.headmodel.HeadModel.default`) was made::

    fairesi headmodel build --out python/fairesi/resources/fsaverage5_994.npz

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
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fairesi.headmodel import HeadModel

#: Name of the default head model.
DEFAULT_NAME = "fsaverage5_994"
#: Relative shell radii and conductivities (S/m) of the EEG sphere model (MNE defaults).
SPHERE_RELATIVE_RADII = (0.90, 0.92, 0.97, 1.0)
SPHERE_SIGMAS = (0.33, 1.0, 0.004, 0.33)
#: Margin (mm) between the outermost cortical vertex and the brain shell.
BRAIN_SHELL_MARGIN_MM = 2.0
EEG_MONTAGE = "GSN-HydroCel-256"
MEG_SYSTEM = "neuromag"
_HEMIS = ("lh", "rh")
_ANATOMY_FILES = ("lh.pial", "rh.pial", "lh.nmm_994.annot", "rh.nmm_994.annot")


def find_anatomy_dir(anatomy_dir: str | os.PathLike | None = None) -> Path:
    """Locate DeepSIF's fsaverage5 anatomy files.

    Parameters
    ----------
    anatomy_dir : path-like or None
        Directory holding ``lh.pial``, ``rh.pial``, ``lh.nmm_994.annot`` and
        ``rh.nmm_994.annot``. If None: ``$FAIRESI_ANATOMY_DIR``, else
        ``../shared/data/deepsif-anatomy`` next to the source tree.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If no such directory holds all four files.
    """
    if anatomy_dir is None:
        env = os.environ.get("FAIRESI_ANATOMY_DIR")
        repo_root = Path(__file__).resolve().parents[2]
        anatomy_dir = env or repo_root.parent / "shared" / "data" / "deepsif-anatomy"
    anatomy_dir = Path(anatomy_dir)
    missing = [f for f in _ANATOMY_FILES if not (anatomy_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"anatomy directory {anatomy_dir} lacks {missing}; pass the folder holding "
            f"DeepSIF's anatomy/fsaverage5 files ({', '.join(_ANATOMY_FILES)})"
        )
    return anatomy_dir


def read_deepsif_anatomy(anatomy_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the fsaverage5 pial surfaces and DeepSIF's 994-region annotation.

    Regions are ordered by their numeric annotation id (the only order the files carry)
    and named ``'<id>-<hemi>'``.

    Parameters
    ----------
    anatomy_dir : path-like
        See :func:`find_anatomy_dir`.

    Returns
    -------
    dict
        ``rr_mm``: list of (n_h, 3) float arrays (surface RAS, mm); ``tris``: list of
        (m_h, 3) int arrays; ``vertex_labels``: list of (n_h,) int arrays (region index,
        -1 for none); ``region_names``: list of str.
    """
    import nibabel.freesurfer as nfs

    anatomy_dir = Path(anatomy_dir)
    rr_mm, tris, annot_ids, names_by_id = [], [], [], {}
    for hemi in _HEMIS:
        rr, tri = nfs.read_geometry(str(anatomy_dir / f"{hemi}.pial"))
        codes, _, names = nfs.read_annot(str(anatomy_dir / f"{hemi}.nmm_994.annot"))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        # Annotation entries that are not a numeric region id ('unknown', medial wall)
        # and unlabelled vertices (-1) belong to no region.
        code_to_id = np.array([int(n) if n.isdigit() else -1 for n in names] + [-1])
        ids = code_to_id[np.where(codes >= 0, codes, len(names))]
        for region_id in np.unique(ids[ids >= 0]):
            if region_id in names_by_id:
                raise ValueError(f"region id {region_id} occurs in both hemispheres")
            names_by_id[int(region_id)] = f"{region_id}-{hemi}"
        rr_mm.append(rr.astype(np.float64))
        tris.append(tri.astype(np.int64))
        annot_ids.append(ids)
    sorted_ids = sorted(names_by_id)
    index_of_id = {region_id: k for k, region_id in enumerate(sorted_ids)}
    vertex_labels = [
        np.array([index_of_id.get(int(i), -1) for i in ids], dtype=np.int64) for ids in annot_ids
    ]
    return {
        "rr_mm": rr_mm,
        "tris": tris,
        "vertex_labels": vertex_labels,
        "region_names": [names_by_id[i] for i in sorted_ids],
    }


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
    import mne
    import nibabel
    import scipy
    from tqdm import tqdm

    from fairesi import __version__

    anatomy_dir = find_anatomy_dir(anatomy_dir)
    bar = tqdm(total=4, desc="head model", unit="stage", disable=not progress)
    bar.set_postfix_str("anatomy and sphere fit")
    anatomy = read_deepsif_anatomy(anatomy_dir)
    log = "info" if verbose else "error"
    mne_fsaverage = Path(mne.__file__).parent / "data" / "fsaverage"
    mri_to_head = mne.transforms._ensure_trans(
        mne.read_trans(mne_fsaverage / "fsaverage-trans.fif"), "mri", "head"
    )
    # The forward models run with the MRI frame standing in for the head frame (identity
    # transform, sensors moved into the MRI frame): MNE 1.13 checks that sources lie in
    # the sphere by comparing MRI-frame source positions with the head-frame sphere
    # centre, which wrongly drops ~2,900 vertices when the two frames differ.
    identity = mne.transforms.Transform("head", "mri", np.eye(4))

    # Conductor: the smallest sphere around the cortex, plus a margin, is the brain shell.
    cortex_mri = np.concatenate(anatomy["rr_mm"]) * 1e-3
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
    with eeg_info._unlock():
        for ch, position in zip(eeg_info["chs"], electrodes_on_sphere, strict=True):
            ch["loc"][:3] = position
    meg_info = mne.channels.read_meg_canonical_info(MEG_SYSTEM, verbose=log)
    sensor_centre, helmet_radius = _fit_sphere(np.array([ch["loc"][:3] for ch in meg_info["chs"]]))
    dev_mri = np.eye(4)
    dev_mri[:3, 3] = r0_mri - sensor_centre
    meg_info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_mri)
    dev_head = mri_to_head["trans"] @ dev_mri

    bar.update()
    bar.set_postfix_str("source space")
    with tempfile.TemporaryDirectory(prefix="fairesi-fsaverage5-") as subjects_dir:
        surf_dir = Path(subjects_dir) / "fsaverage5" / "surf"
        surf_dir.mkdir(parents=True)
        for hemi in _HEMIS:
            (surf_dir / f"{hemi}.pial").write_bytes((anatomy_dir / f"{hemi}.pial").read_bytes())
        src = mne.setup_source_space(
            "fsaverage5",
            spacing="all",
            surface="pial",
            subjects_dir=subjects_dir,
            add_dist=False,
            n_jobs=1,
            verbose=log,
        )
    n_vertices = sum(len(rr) for rr in anatomy["rr_mm"])
    labels = []
    for k, name in enumerate(anatomy["region_names"]):
        h = _HEMIS.index(name.rsplit("-", 1)[1])
        vertices = np.flatnonzero(anatomy["vertex_labels"][h] == k)
        labels.append(mne.Label(vertices, hemi=_HEMIS[h], name=name))
    lead_fields = {}
    for modality, info in (("eeg", eeg_info), ("meg", meg_info)):
        bar.update()
        bar.set_postfix_str(f"{modality} forward")
        fwd = mne.make_forward_solution(
            info,
            trans=identity,
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
        per_modality = HeadModel.from_forward(fwd, labels, name=DEFAULT_NAME)
        lead_field = per_modality.lead_field(modality)
        if modality == "eeg":
            lead_field.ch_positions_m = electrodes_head.astype(np.float32)
        else:
            lead_field.ch_positions_m = mne.transforms.apply_trans(
                mri_to_head, lead_field.ch_positions_m.astype(np.float64)
            ).astype(np.float32)
        lead_fields[modality] = lead_field
        silent = np.flatnonzero(~np.any(lead_fields[modality].gain != 0, axis=0))
        if silent.size:
            raise RuntimeError(f"regions {silent[:10].tolist()} have zero {modality} gain")
    bar.update()
    bar.close()

    return HeadModel(
        name=DEFAULT_NAME,
        region_names=per_modality.region_names,
        region_centroids_mm=per_modality.region_centroids_mm,
        region_normals=per_modality.region_normals,
        region_areas_mm2=per_modality.region_areas_mm2,
        vertex_region=per_modality.vertex_region,
        vertno=per_modality.vertno,
        adjacency=per_modality.adjacency,
        lead_fields=lead_fields,
        region_moments=per_modality.region_moments,
        metadata={
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
                "median": float(
                    np.median(np.linalg.norm(electrodes_on_sphere - electrodes_mri, axis=1)) * 1e3
                ),
                "max": float(
                    np.max(np.linalg.norm(electrodes_on_sphere - electrodes_mri, axis=1)) * 1e3
                ),
            },
            "meg_system": "neuromag306 (mne.channels.read_meg_canonical_info)",
            "meg_dev_head_t": dev_head.tolist(),
            "mri_head_t": mri_to_head["trans"].tolist(),
            "forward_frame": "MRI frame used as head frame in MNE (identity trans, see "
            "fairesi.headmodel_build); sensor positions converted to the head frame after",
            "meg_helmet_sphere_radius_m": helmet_radius,
            "conductor": "sphere model (mne.make_sphere_model), EEG and MEG",
            "sphere_r0_mri_m": r0_mri.tolist(),
            "sphere_r0_head_m": mne.transforms.apply_trans(mri_to_head, r0_mri).tolist(),
            "sphere_r0_from": "centre of the smallest sphere enclosing all cortical vertices",
            "cortex_extent_from_r0_m": cortex_extent,
            "sphere_head_radius_m": head_radius,
            "sphere_relative_radii": list(SPHERE_RELATIVE_RADII),
            "sphere_sigmas_S_per_m": list(SPHERE_SIGMAS),
            "brain_shell_margin_mm": BRAIN_SHELL_MARGIN_MM,
            "n_vertices_excluded": 0,
            "versions": {
                "fairesi": __version__,
                "mne": mne.__version__,
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                "nibabel": nibabel.__version__,
                "python": platform.python_version(),
            },
        },
    )


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
