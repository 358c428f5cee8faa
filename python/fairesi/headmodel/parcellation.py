"""Parcellations for a user's forward solution: labels on the forward's own cortex.

:func:`parcellation_labels` returns one :class:`mne.Label` per region for the surface
source space of an :class:`mne.Forward`, ready for :meth:`HeadModel.from_forward
<fairesi.headmodel.model.HeadModel.from_forward>` (``fairesi headmodel from-forward``):

``'deepsif994'`` (the default)
    DeepSIF's 994-region parcellation of fsaverage5, shipped with fairesi
    (:data:`~fairesi.headmodel.anatomy.SHIPPED_ANATOMY_DIR`), the parcellation of the
    default head model and of the shipped networks.

    * fsaverage (a subject whose name starts with ``fsaverage`` on an icosahedral
      surface of 10,242, 40,962 or 163,842 vertices per hemisphere): fsaverage5's
      vertices are the first 10,242 vertices of every denser fsaverage surface (the
      icosahedral subdivision keeps the coarser vertices first), so they keep their
      region and every other vertex takes the region of the nearest fsaverage5 vertex
      along the mesh (:func:`nearest_seed_labels`). No subjects directory is needed:
      the forward's source space carries the surface.
    * any other subject: the same labels on fsaverage (read from ``SUBJECTS_DIR``) are
      morphed to the subject with :func:`mne.morph_labels` (nearest vertex on the
      registered spheres, ``surf/?h.sphere.reg``).

``'aparc'``, ``'aparc.a2009s'``
    The subject's own FreeSurfer annotation (``label/?h.<parc>.annot``, read with
    :func:`mne.read_labels_from_annot`) without its non-cortical entries
    (``unknown``, ``Medial_wall``, ``corpuscallosum``): 68 and 148 regions on a
    standard recon-all.

Region order: deepsif994 regions by annotation id, exactly as in the default head model
(so region ``k`` is the same region in both); aparc ones left hemisphere first, then
right, each by name. Every error is a one-line
:class:`ValueError` or :class:`FileNotFoundError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

#: Parcellations :func:`parcellation_labels` knows.
PARCELLATIONS = ("deepsif994", "aparc", "aparc.a2009s")
#: Vertices per hemisphere of the fsaverage5 surface (icosahedron order 5).
FSAVERAGE5_VERTICES = 10242
#: Annotation entries that are no cortical region (compared lower-case, without hemi).
NON_CORTICAL = ("unknown", "medial_wall", "corpuscallosum")
_HEMIS = ("lh", "rh")


def forward_subject(fwd: Any) -> str | None:
    """The FreeSurfer subject an MNE forward solution was computed for.

    Parameters
    ----------
    fwd : mne.Forward

    Returns
    -------
    str or None
        ``fwd['src'][0]['subject_his_id']``, None if the source space names none.
    """
    subject = fwd["src"][0].get("subject_his_id")
    return str(subject) if subject else None


def is_fsaverage(subject: str, n_vertices: list[int]) -> bool:
    """Whether ``subject`` is fsaverage (or fsaverage5/6) on an icosahedral surface.

    Parameters
    ----------
    subject : str
        FreeSurfer subject name.
    n_vertices : list of int, length 2
        Surface vertices of each hemisphere (``src[h]['np']``).

    Returns
    -------
    bool
        True if the name starts with ``'fsaverage'`` and both hemispheres have
        10 * 4**k + 2 vertices, k = 5, 6 or 7 (fsaverage5, fsaverage6, fsaverage).

    Raises
    ------
    ValueError
        If the name starts with ``'fsaverage'`` but the surfaces are not icosahedral
        with at least fsaverage5's vertices (so fsaverage5's regions cannot be placed).
    """
    if not subject.startswith("fsaverage"):
        return False
    allowed = [10 * 4**k + 2 for k in (5, 6, 7)]
    if any(n not in allowed for n in n_vertices):
        raise ValueError(
            f"subject {subject!r} has {list(n_vertices)} surface vertices per hemisphere; "
            f"deepsif994 needs an icosahedral fsaverage surface ({allowed}); pass --subject "
            "with the real subject name if this is not fsaverage"
        )
    return True


def nearest_seed_labels(seed_labels: np.ndarray, rr: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Extend labels of a mesh's first vertices to all its vertices (nearest along edges).

    Parameters
    ----------
    seed_labels : np.ndarray, shape (n_seeds,), int
        Region index of vertices ``0 .. n_seeds - 1`` (-1: none).
    rr : np.ndarray, shape (n_vertices, 3), float
        Vertex positions (any unit; distances are edge lengths in it).
    tris : np.ndarray, shape (n_triangles, 3), int
        Triangles of the mesh.

    Returns
    -------
    np.ndarray, shape (n_vertices,), int64
        Region of the seed vertex nearest along mesh edges (shortest path length);
        seeds keep their own; -1 where no seed is reachable.
    """
    from scipy.sparse.csgraph import dijkstra

    seed_labels = np.asarray(seed_labels, dtype=np.int64)
    rr = np.asarray(rr, dtype=np.float64)
    tris = np.asarray(tris, dtype=np.int64)
    n = len(rr)
    if len(seed_labels) > n:
        raise ValueError(f"{len(seed_labels)} seed labels for a mesh of {n} vertices")
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    edges = np.unique(edges, axis=0)
    lengths = np.linalg.norm(rr[edges[:, 0]] - rr[edges[:, 1]], axis=1)
    # A zero-length edge would vanish from the sparse graph; keep it connected.
    lengths = np.maximum(lengths, 1e-12)
    graph = sp.csr_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, _, sources = dijkstra(
        graph,
        directed=False,
        indices=np.arange(len(seed_labels)),
        min_only=True,
        return_predecessors=True,
    )
    labels = np.full(n, -1, dtype=np.int64)
    reached = sources >= 0
    labels[reached] = seed_labels[sources[reached]]
    return labels


def parcellation_labels(
    parcellation: str,
    src: Any,
    *,
    subject: str,
    subjects_dir: str | os.PathLike | None = None,
    verbose: str | bool = "error",
) -> list:
    """One label per region of ``parcellation`` on the cortex of source space ``src``.

    Parameters
    ----------
    parcellation : {'deepsif994', 'aparc', 'aparc.a2009s'}
        See the module docstring.
    src : mne.SourceSpaces
        Two-hemisphere surface source space of the forward (``fwd['src']``); its full
        surfaces (``src[h]['rr']``, m, and ``src[h]['tris']``) are used for fsaverage.
    subject : str
        FreeSurfer subject of ``src``.
    subjects_dir : path-like or None
        FreeSurfer subjects directory; None: ``$SUBJECTS_DIR`` (MNE's
        ``get_subjects_dir``). Not needed for deepsif994 on fsaverage.
    verbose : str or bool
        MNE log level.

    Returns
    -------
    list of mne.Label, length R
        Non-overlapping labels, vertex numbers on the subject's full surfaces (as in
        :func:`mne.read_labels_from_annot`); deepsif994 labels are named and ordered
        like the default head model's regions (``'<id>-<hemi>'``, by id), aparc labels
        left hemisphere first, by name.

    Raises
    ------
    ValueError
        Unknown parcellation, a source space that is not two surfaces, a subject whose
        surfaces differ from the source space, or no region left.
    FileNotFoundError
        Missing subjects directory, subject, surface or annotation.
    """
    if parcellation not in PARCELLATIONS:
        raise ValueError(f"parcellation must be one of {list(PARCELLATIONS)}, got {parcellation!r}")
    if len(src) != 2 or any(s["type"] != "surf" for s in src):
        raise ValueError(
            "the forward must use a surface source space with two hemispheres (lh, rh); got "
            f"{len(src)} source space(s) of type {[s['type'] for s in src]}"
        )
    n_vertices = [int(s["np"]) for s in src]
    if parcellation == "deepsif994":
        if is_fsaverage(subject, n_vertices):
            return _deepsif_labels_on_mesh(
                [s["rr"] for s in src], [s["tris"] for s in src], subject
            )
        return _morphed_deepsif_labels(subject, _subjects_dir(subjects_dir), n_vertices, verbose)
    return _annotation_labels(
        parcellation, subject, _subjects_dir(subjects_dir), n_vertices, verbose
    )


def _subjects_dir(subjects_dir: str | os.PathLike | None) -> Path:
    """The subjects directory to use: the argument, else ``$SUBJECTS_DIR``; must exist."""
    if subjects_dir is None:
        subjects_dir = os.environ.get("SUBJECTS_DIR")
        if not subjects_dir:
            raise FileNotFoundError(
                "this parcellation needs the FreeSurfer subjects directory: pass "
                "--subjects-dir (or set SUBJECTS_DIR)"
            )
    path = Path(subjects_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"subjects directory {path} does not exist")
    return path


def _require_files(paths: list[Path], hint: str) -> None:
    """FileNotFoundError naming the first missing file of ``paths``, with ``hint``."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} does not exist; {hint}")


def _check_surface_size(subject: str, subjects_dir: Path, n_vertices: list[int]) -> None:
    """ValueError unless the subject's white surfaces have ``n_vertices`` vertices."""
    import nibabel.freesurfer as nfs

    for hemi, n in zip(_HEMIS, n_vertices, strict=True):
        rr, _ = nfs.read_geometry(str(subjects_dir / subject / "surf" / f"{hemi}.white"))
        if len(rr) != n:
            raise ValueError(
                f"the forward's {hemi} source space has {n} surface vertices but "
                f"{subjects_dir / subject}/surf/{hemi}.white has {len(rr)}; was the forward "
                "computed for another subject (--subject)?"
            )


def _deepsif_labels_on_mesh(
    rr: list[np.ndarray], tris: list[np.ndarray], subject: str | None
) -> list:
    """deepsif994 labels on an icosahedral fsaverage mesh (per hemisphere (n, 3), (m, 3)),
    fsaverage5's vertices first; region order and names as the default head model's."""
    import mne

    from fairesi.headmodel.anatomy import find_anatomy_dir, read_deepsif_anatomy

    anatomy = read_deepsif_anatomy(find_anatomy_dir())
    names = anatomy["region_names"]
    members = []  # per hemisphere: vertices of region k = order[bounds[k]:bounds[k + 1]]
    for h in range(2):
        seeds = anatomy["vertex_labels"][h]
        full = seeds if len(rr[h]) == len(seeds) else nearest_seed_labels(seeds, rr[h], tris[h])
        order = np.argsort(full, kind="stable")
        members.append((order, np.searchsorted(full[order], np.arange(len(names) + 1))))
    labels = []
    for k, name in enumerate(names):
        hemi = name.rsplit("-", 1)[1]
        order, bounds = members[_HEMIS.index(hemi)]
        vertices = np.sort(order[bounds[k] : bounds[k + 1]])
        labels.append(mne.Label(vertices, hemi=hemi, name=name, subject=subject))
    return labels


def _morphed_deepsif_labels(
    subject: str, subjects_dir: Path, n_vertices: list[int], verbose: str | bool
) -> list:
    """deepsif994 labels on fsaverage (from ``subjects_dir``), morphed to ``subject``."""
    import mne
    import nibabel.freesurfer as nfs

    surf = [
        subjects_dir / s / "surf" / f"{hemi}.{kind}"
        for s in ("fsaverage", subject)
        for hemi in _HEMIS
        for kind in ("white", "sphere.reg")
    ]
    _require_files(
        surf[:4],
        "deepsif994 for a subject other than fsaverage morphs it from fsaverage, which must "
        "be in the subjects directory (mne.datasets.fetch_fsaverage(subjects_dir=...))",
    )
    _require_files(surf[4:], f"is {subject!r} a FreeSurfer subject of {subjects_dir}?")
    _check_surface_size(subject, subjects_dir, n_vertices)
    meshes = [nfs.read_geometry(str(surf[2 * h])) for h in range(2)]
    is_fsaverage("fsaverage", [len(m[0]) for m in meshes])
    fs_labels = _deepsif_labels_on_mesh([m[0] for m in meshes], [m[1] for m in meshes], "fsaverage")
    return mne.morph_labels(
        fs_labels,
        subject_to=subject,
        subject_from="fsaverage",
        subjects_dir=str(subjects_dir),
        surf_name="white",
        verbose=verbose,
    )


def _annotation_labels(
    parcellation: str, subject: str, subjects_dir: Path, n_vertices: list[int], verbose: str | bool
) -> list:
    """The cortical labels of the subject's own ``parcellation`` annotation."""
    import mne

    _require_files(
        [subjects_dir / subject / "label" / f"{hemi}.{parcellation}.annot" for hemi in _HEMIS],
        f"is {subject!r} a FreeSurfer subject of {subjects_dir} (recon-all writes the "
        f"{parcellation} annotation)?",
    )
    _require_files(
        [subjects_dir / subject / "surf" / f"{hemi}.white" for hemi in _HEMIS],
        "the annotation's surfaces are needed too",
    )
    _check_surface_size(subject, subjects_dir, n_vertices)
    labels = mne.read_labels_from_annot(
        subject, parc=parcellation, hemi="both", subjects_dir=str(subjects_dir), verbose=verbose
    )
    labels = [
        label
        for label in labels
        if label.name.rsplit("-", 1)[0].lower() not in NON_CORTICAL and len(label.vertices)
    ]
    if not labels:
        raise ValueError(f"the {parcellation} annotation of {subject!r} has no cortical label")
    return sorted(labels, key=lambda label: (_HEMIS.index(label.hemi), label.name))


__all__ = [
    "FSAVERAGE5_VERTICES",
    "NON_CORTICAL",
    "PARCELLATIONS",
    "forward_subject",
    "is_fsaverage",
    "nearest_seed_labels",
    "parcellation_labels",
]
