"""DeepSIF's fsaverage5 anatomy as MNE objects: the input stage of the default build.

DeepSIF ships the fsaverage5 pial surfaces (``lh.pial``, ``rh.pial``: 10,242 vertices
per hemisphere, mm, FreeSurfer surface RAS) and its 994-region parcellation
(``lh.nmm_994.annot``, ``rh.nmm_994.annot``). fairesi ships these four files unchanged
in ``fairesi/resources/anatomy/`` (:data:`SHIPPED_ANATOMY_DIR`; DeepSIF's Clear BSD
licence is ``fairesi/resources/DEEPSIF_ANATOMY_LICENSE.txt``). This module finds them
(:func:`find_anatomy_dir`), reads them (:func:`read_deepsif_anatomy`) and turns them
into what MNE's forward modelling wants: one :class:`mne.Label` per region
(:func:`deepsif_labels`) and a source space of every pial vertex
(:func:`deepsif_source_space`); :func:`fsaverage_mri_to_head` reads the fsaverage
MRI -> head transform shipped with MNE. :mod:`fairesi.headmodel.build` runs them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HEMIS = ("lh", "rh")
_ANATOMY_FILES = ("lh.pial", "rh.pial", "lh.nmm_994.annot", "rh.nmm_994.annot")
#: Folder of the package holding DeepSIF's fsaverage5 anatomy (the four files above).
SHIPPED_ANATOMY_DIR = Path(__file__).resolve().parents[1] / "resources" / "anatomy"


def find_anatomy_dir(anatomy_dir: str | os.PathLike | None = None) -> Path:
    """Locate DeepSIF's fsaverage5 anatomy files.

    Parameters
    ----------
    anatomy_dir : path-like or None
        Directory holding ``lh.pial``, ``rh.pial``, ``lh.nmm_994.annot`` and
        ``rh.nmm_994.annot``. If None: ``$FAIRESI_ANATOMY_DIR`` when set, else the
        copy shipped in the package (:data:`SHIPPED_ANATOMY_DIR`).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If no such directory holds all four files.
    """
    if anatomy_dir is None:
        anatomy_dir = os.environ.get("FAIRESI_ANATOMY_DIR") or SHIPPED_ANATOMY_DIR
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
    for hemi in HEMIS:
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


def deepsif_labels(anatomy: dict[str, Any]) -> list:
    """One :class:`mne.Label` per region of the parcellation, in region order.

    Parameters
    ----------
    anatomy : dict
        As returned by :func:`read_deepsif_anatomy`.

    Returns
    -------
    list of mne.Label, length R
        Label ``k`` holds the surface vertex numbers (of its hemisphere) of region ``k``
        and is named like it (``'<id>-<hemi>'``).
    """
    import mne

    labels = []
    for k, name in enumerate(anatomy["region_names"]):
        h = HEMIS.index(name.rsplit("-", 1)[1])
        vertices = np.flatnonzero(anatomy["vertex_labels"][h] == k)
        labels.append(mne.Label(vertices, hemi=HEMIS[h], name=name))
    return labels


def deepsif_source_space(anatomy_dir: str | os.PathLike, *, verbose: str | bool = "error") -> Any:
    """Every pial vertex of both hemispheres as a source.

    MNE reads surfaces only from a subjects directory, so the two ``.pial`` files are
    copied into a temporary one (subject ``'fsaverage5'``).

    Parameters
    ----------
    anatomy_dir : path-like
        See :func:`find_anatomy_dir`.
    verbose : str or bool
        MNE log level.

    Returns
    -------
    mne.SourceSpaces
        Two surface source spaces (lh, rh), 10,242 vertices each for fsaverage5, in the
        MRI (surface RAS) frame, positions in m, no distances.
    """
    import mne

    anatomy_dir = Path(anatomy_dir)
    with tempfile.TemporaryDirectory(prefix="fairesi-fsaverage5-") as subjects_dir:
        surf_dir = Path(subjects_dir) / "fsaverage5" / "surf"
        surf_dir.mkdir(parents=True)
        for hemi in HEMIS:
            (surf_dir / f"{hemi}.pial").write_bytes((anatomy_dir / f"{hemi}.pial").read_bytes())
        return mne.setup_source_space(
            "fsaverage5",
            spacing="all",
            surface="pial",
            subjects_dir=subjects_dir,
            add_dist=False,
            n_jobs=1,
            verbose=verbose,
        )


def fsaverage_mri_to_head() -> Any:
    """The fsaverage MRI (surface RAS) -> head transform that ships with MNE.

    Returns
    -------
    mne.transforms.Transform
        From ``'mri'`` to ``'head'``; ``trans['trans']`` is a (4, 4) affine in m.
    """
    import mne
    from mne.io.constants import FIFF

    # MNE has no public accessor for the fsaverage transform it ships (it resolves
    # trans="fsaverage" privately), so the file is read from MNE's package data.
    trans = mne.read_trans(Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-trans.fif")
    if {trans["from"], trans["to"]} != {FIFF.FIFFV_COORD_MRI, FIFF.FIFFV_COORD_HEAD}:
        raise ValueError(f"fsaverage-trans.fif is not a head <-> MRI transform: {trans}")
    if trans["from"] != FIFF.FIFFV_COORD_MRI:
        trans = mne.transforms.invert_transform(trans)
    return trans


__all__ = [
    "SHIPPED_ANATOMY_DIR",
    "deepsif_labels",
    "deepsif_source_space",
    "find_anatomy_dir",
    "fsaverage_mri_to_head",
    "read_deepsif_anatomy",
]
