"""MNE glue: a head model from a user's :class:`mne.Forward` and parcellation.

:func:`forward_parts` (behind :meth:`HeadModel.from_forward
<fairesi.headmodel.model.HeadModel.from_forward>`, which turns its result into a head
model) sums the fixed-orientation vertex gains of each label into region gains; :func:`region_geometry` computes centroids,
normals, areas and the adjacency of regions painted on triangle meshes (also used for
the toy model's adjacency). MNE is imported only inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def forward_parts(fwd: Any, labels: list, *, name: str = "custom") -> dict[str, Any]:
    """Head model contents from an MNE forward solution and a cortical parcellation.

    Parameters
    ----------
    fwd : mne.Forward
        Forward solution on a surface source space (both hemispheres), fixed or free
        orientation; free ones are converted to the surface normals
        (``mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)``).
        Its EEG channels become the ``'eeg'`` lead field (re-referenced to their
        average), its MEG channels the ``'meg'`` one; bad channels are left out.
    labels : list of mne.Label, length R
        One label per region, in the wanted region order, each on ``'lh'`` or
        ``'rh'`` of the forward's source space; they must not overlap and each must
        contain at least one source vertex. Vertex numbers refer to the full
        surface (as in :func:`mne.read_labels_from_annot`).
    name : str
        Name of the head model.

    Returns
    -------
    dict
        Keyword arguments of :class:`~fairesi.headmodel.model.HeadModel`, each
        ``lead_fields[modality]`` a dict of :class:`~fairesi.headmodel.model.LeadField`
        keyword arguments. Region gain (n_channels, R) = sum of the fixed-orientation
        gains of the region's source vertices, V/(A m) or T/(A m), T/(m A m); centroids
        (mm, MRI frame), normals, areas and adjacency come from the full cortical
        surfaces stored in the source space.

    Raises
    ------
    TypeError
        If ``fwd`` is not an :class:`mne.Forward` or a label not an :class:`mne.Label`.
    ValueError
        If the source space is not a two-hemisphere surface space, the forward has no
        EEG/MEG channel or channels of another type, or a label is empty, overlaps
        another, lies outside the source space's surface or holds no source vertex.
    """
    import mne
    from mne.io.constants import FIFF

    if not isinstance(fwd, mne.Forward):
        raise TypeError(f"fwd must be an mne.Forward, got {type(fwd).__name__}")
    src = fwd["src"]
    if len(src) != 2 or any(s["type"] != "surf" for s in src):
        raise ValueError(
            "fwd must be computed on a surface source space with two hemispheres (lh, rh); "
            f"got {len(src)} source space(s) of type {[s['type'] for s in src]}"
        )
    if not labels:
        raise ValueError("labels is empty; expected one mne.Label per region")
    fwd = mne.convert_forward_solution(
        fwd, surf_ori=True, force_fixed=True, use_cps=True, verbose="error"
    )
    full_labels = _paint_labels(labels, src)

    # make_forward_solution moves the source space to the head frame; centroids are
    # reported in the MRI frame of the surfaces, like the default model's.
    to_mri = np.eye(4)
    if src[0]["coord_frame"] == FIFF.FIFFV_COORD_HEAD:
        to_mri = mne.transforms.invert_transform(fwd["mri_head_t"])["trans"]
    geometry = region_geometry(
        [mne.transforms.apply_trans(to_mri, s["rr"]) * 1e3 for s in src],
        [s["tris"] for s in src],
        full_labels,
        len(labels),
    )
    vertno = [np.asarray(s["vertno"]) for s in src]
    vertex_region = np.concatenate([full_labels[h][vertno[h]] for h in range(2)])
    counts = np.bincount(vertex_region[vertex_region >= 0], minlength=len(labels))
    if not counts.all():
        empty_index = np.flatnonzero(counts == 0)
        empty = [labels[i].name for i in empty_index[:5]]
        more = f" (and {len(empty_index) - 5} more)" if len(empty_index) > 5 else ""
        raise ValueError(
            f"labels {empty}{more} contain no source vertex of the forward solution "
            f"({len(empty_index)} of {len(labels)} labels, {len(vertex_region)} sources): its "
            "source space is too sparse for them, or the forward dropped their sources "
            "(mindist, outside the inner skull); use a denser source space (e.g. "
            "spacing='oct6' or 'all'), a coarser parcellation, or merge these labels"
        )
    membership = sp.csr_matrix(
        (
            np.ones(int(np.sum(vertex_region >= 0))),
            (np.flatnonzero(vertex_region >= 0), vertex_region[vertex_region >= 0]),
        ),
        shape=(len(vertex_region), len(labels)),
    )
    return dict(
        name=name,
        region_names=[label.name for label in labels],
        region_centroids_mm=geometry["centroids_mm"],
        region_normals=geometry["normals"],
        region_areas_mm2=geometry["areas_mm2"],
        vertex_region=vertex_region,
        vertno=vertno,
        adjacency=geometry["adjacency"],
        lead_fields=_region_lead_fields(fwd, membership),
        region_moments=np.linalg.norm(membership.T @ fwd["source_nn"], axis=1),
        metadata={
            "kind": "from_forward",
            "n_source_vertices": len(vertex_region),
            "mne_version": mne.__version__,
        },
    )


def _paint_labels(labels: list, src: Any) -> list[np.ndarray]:
    """Region index of every surface vertex of each hemisphere of ``src`` (-1: none).

    Returns one int64 array of shape (n_surface_vertices_h,) per hemisphere; raises
    TypeError / ValueError for a label that is not an mne.Label, is on no hemisphere,
    is empty, lies outside the surface or overlaps an earlier label.
    """
    import mne

    hemi_index = {"lh": 0, "rh": 1}
    full_labels = [np.full(s["np"], -1, dtype=np.int64) for s in src]
    for k, label in enumerate(labels):
        if not isinstance(label, mne.Label):
            raise TypeError(f"labels[{k}] is a {type(label).__name__}, expected mne.Label")
        if label.hemi not in hemi_index:
            raise ValueError(f"label {label.name!r} has hemi {label.hemi!r}, expected lh or rh")
        h = hemi_index[label.hemi]
        verts = np.asarray(label.vertices)
        if verts.size == 0:
            raise ValueError(f"label {label.name!r} (labels[{k}]) has no vertices")
        if verts.max() >= src[h]["np"]:
            raise ValueError(
                f"label {label.name!r} has vertices outside the {label.hemi} surface of the "
                f"source space ({src[h]['np']} vertices); was it made for another subject?"
            )
        taken = full_labels[h][verts] >= 0
        if taken.any():
            other = labels[int(full_labels[h][verts[taken][0]])].name
            raise ValueError(f"labels {other!r} and {label.name!r} overlap")
        full_labels[h][verts] = k
    return full_labels


def _region_lead_fields(fwd: Any, membership: sp.csr_matrix) -> dict[str, dict[str, Any]]:
    """Region lead fields (LeadField kwargs) of a fixed-orientation ``fwd``.

    Gain (n_channels, R) = ``membership.T @`` vertex gains, where ``membership``
    (n_source_vertices, R) is the 0/1 vertex-to-region matrix. Good EEG
    channels become the ``'eeg'`` lead field (average reference), good MEG channels the
    ``'meg'`` one; raises ValueError for a free-orientation gain, channel types other
    than eeg/mag/grad, or no good EEG/MEG channel at all.
    """
    info = fwd["info"]
    gain = fwd["sol"]["data"]
    if gain.shape[1] != membership.shape[0]:
        raise ValueError(
            f"forward gain has {gain.shape[1]} columns but the source space has "
            f"{membership.shape[0]} vertices; expected a fixed-orientation solution"
        )
    ch_types = np.array(info.get_channel_types())
    unsupported = sorted(set(ch_types) - {"eeg", "mag", "grad"})
    if unsupported:
        raise ValueError(
            f"forward has channels of types {unsupported}; expected only eeg, mag, grad "
            "(pick them with fwd.pick_channels first)"
        )
    bads = set(info["bads"])
    lead_fields = {}
    for mod, types in (("eeg", ("eeg",)), ("meg", ("mag", "grad"))):
        rows = [i for i, t in enumerate(ch_types) if t in types and info["ch_names"][i] not in bads]
        if not rows:
            continue
        region_gain = np.asarray(membership.T @ gain[rows].T).T
        if mod == "eeg":
            region_gain -= region_gain.mean(axis=0, keepdims=True)
        lead_fields[mod] = {
            "modality": mod,
            "gain": region_gain,
            "ch_names": [info["ch_names"][i] for i in rows],
            "ch_types": [str(ch_types[i]) for i in rows],
            "ch_positions_m": _channel_positions_head_m(info, rows),
        }
    if not lead_fields:
        raise ValueError("forward has no good EEG or MEG channel")
    return lead_fields


def region_geometry(
    surfaces_rr_mm: list[np.ndarray],
    surfaces_tris: list[np.ndarray],
    vertex_labels: list[np.ndarray],
    n_regions: int,
) -> dict[str, Any]:
    """Centroids, normals, areas and adjacency of regions painted on cortical meshes.

    Parameters
    ----------
    surfaces_rr_mm : list of np.ndarray, each shape (n_vertices_h, 3)
        Vertex positions (mm) of each hemisphere mesh.
    surfaces_tris : list of np.ndarray, each shape (n_triangles_h, 3), int
        Triangles of each mesh (vertex indices of that mesh).
    vertex_labels : list of np.ndarray, each shape (n_vertices_h,), int
        Region index of each vertex, -1 for none.
    n_regions : int
        Number of regions R; every index in ``[0, R)`` must own a vertex.

    Returns
    -------
    dict
        ``centroids_mm`` (R, 3): mean vertex position; ``normals`` (R, 3): unit sum of the
        vertex normals weighted by vertex area (vertex normals are the area-weighted
        triangle normals); ``areas_mm2`` (R,): sum of vertex areas (a third of each
        adjacent triangle); ``adjacency`` csr (R, R): regions joined by a mesh edge.
        Meshes are never joined to each other.
    """
    sums = np.zeros((n_regions, 3))
    counts = np.zeros(n_regions)
    normal_sums = np.zeros((n_regions, 3))
    areas = np.zeros(n_regions)
    edges = []
    for rr, tris, lab in zip(surfaces_rr_mm, surfaces_tris, vertex_labels, strict=True):
        rr = np.asarray(rr, dtype=np.float64)
        tris = np.asarray(tris, dtype=np.int64)
        lab = np.asarray(lab, dtype=np.int64)
        # cross(...) has length 2 * triangle area, so summing it area-weights the normals.
        tri_cross = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
        tri_area = 0.5 * np.linalg.norm(tri_cross, axis=1)
        vert_normal = np.zeros_like(rr)
        vert_area = np.zeros(len(rr))
        for corner in range(3):
            np.add.at(vert_normal, tris[:, corner], tri_cross)
            np.add.at(vert_area, tris[:, corner], tri_area / 3.0)
        vert_normal /= np.maximum(np.linalg.norm(vert_normal, axis=1, keepdims=True), 1e-12)
        ok = lab >= 0
        np.add.at(sums, lab[ok], rr[ok])
        np.add.at(counts, lab[ok], 1.0)
        np.add.at(normal_sums, lab[ok], vert_normal[ok] * vert_area[ok, None])
        np.add.at(areas, lab[ok], vert_area[ok])
        edges.append(lab[tris])
    if not counts.all():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"regions {missing} own no vertex of the meshes")
    adjacency = sp.csr_matrix((n_regions, n_regions), dtype=np.float32)
    for tri_labels in edges:
        adjacency = adjacency + _adjacency_from_triangles(tri_labels, None, n_regions)
    adjacency.data[:] = 1.0
    return {
        "centroids_mm": sums / counts[:, None],
        "normals": normal_sums / np.linalg.norm(normal_sums, axis=1, keepdims=True),
        "areas_mm2": areas,
        "adjacency": adjacency.tocsr(),
    }


def _channel_positions_head_m(info: Any, picks: list[int]) -> np.ndarray:
    """Electrode / MEG coil-centre positions of channels ``picks``.

    Returns
    -------
    np.ndarray, shape (len(picks), 3), float64
        Positions in m, MNE head frame.
    """
    import mne

    positions = np.array([info["chs"][i]["loc"][:3] for i in picks], dtype=np.float64)
    is_meg = np.array([info["chs"][i]["kind"] == mne.io.constants.FIFF.FIFFV_MEG_CH for i in picks])
    # MEG coils are stored in the device frame, electrodes already in the head frame.
    if is_meg.any() and info["dev_head_t"] is not None:
        positions[is_meg] = mne.transforms.apply_trans(info["dev_head_t"], positions[is_meg])
    return positions


def _adjacency_from_triangles(
    tris: np.ndarray, vertex_labels: np.ndarray | None, n_regions: int
) -> sp.csr_matrix:
    """0/1 adjacency of the labels at the two ends of every triangle edge (no self-loops).

    Parameters
    ----------
    tris : np.ndarray, shape (n_triangles, 3), int
        Triangles as vertex indices, or (if ``vertex_labels`` is None) directly as the
        region indices of their corners (-1: no region).
    vertex_labels : np.ndarray, shape (n_vertices,), int, or None
        Region of each vertex, -1 for none.
    n_regions : int
        Number of regions R.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (R, R), float32
        Symmetric, ones where two regions share an edge, zero diagonal.
    """
    tris = np.asarray(tris, dtype=np.int64)
    lab = tris if vertex_labels is None else np.asarray(vertex_labels)[tris]
    a = np.concatenate([lab[:, 0], lab[:, 1], lab[:, 2]])
    b = np.concatenate([lab[:, 1], lab[:, 2], lab[:, 0]])
    keep = (a >= 0) & (b >= 0) & (a != b)
    a, b = a[keep], b[keep]
    adj = sp.csr_matrix(
        (np.ones(2 * len(a), np.float32), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(n_regions, n_regions),
    )
    adj.data[:] = 1.0
    return adj


__all__ = ["forward_parts", "region_geometry"]
