"""The head model file format: one compressed ``.npz`` per head model.

A file holds the arrays of a :class:`~fairesi.headmodel.model.HeadModel` under fixed
keys plus a JSON header (``header_json``: format version, name, region names,
modalities, metadata, channel names and types). :data:`FORMAT_VERSION` is checked on
load. The embedded default model is :data:`DEFAULT_FILE`, shipped in
``fairesi/resources``.

:meth:`HeadModel.save <fairesi.headmodel.model.HeadModel.save>`, ``load`` and
``default`` call :func:`write_head_model`, :func:`read_head_model` and
:func:`default_file`. This module does not import the containers (the model module
imports it): :func:`read_head_model` returns the constructor arguments, which
``HeadModel.load`` turns into a head model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fairesi.io import atomic_path

#: The embedded default head model (fsaverage5, 994 regions, EEG-256 and MEG-306).
DEFAULT_FILE = Path(__file__).parent.parent / "resources" / "fsaverage5_994.npz"
#: Version of the ``.npz`` layout written by :func:`write_head_model`.
FORMAT_VERSION = 1


def write_head_model(head_model: Any, path: str | Path) -> None:
    """Write a head model to one compressed ``.npz`` file (atomically).

    Parameters
    ----------
    head_model : fairesi.headmodel.HeadModel
        The model to write. Arrays are stored as they are (float32 geometry and gains,
        int32 ``vertex_region``, int64 ``vertno``, int32 CSR index arrays of the 0/1
        adjacency); names, metadata and channel lists go to the JSON header.
    path : path-like
        Destination; conventionally ends in ``.npz``.
    """
    header = {
        "format_version": FORMAT_VERSION,
        "name": head_model.name,
        "region_names": head_model.region_names,
        "modalities": sorted(head_model.lead_fields),
        "metadata": head_model.metadata,
    }
    arrays: dict[str, np.ndarray] = {
        "region_centroids_mm": head_model.region_centroids_mm,
        "region_normals": head_model.region_normals,
        "region_areas_mm2": head_model.region_areas_mm2,
        "vertex_region": head_model.vertex_region,
        "vertno_lengths": np.array([len(v) for v in head_model.vertno], dtype=np.int64),
        "vertno": (
            np.concatenate(head_model.vertno) if head_model.vertno else np.zeros(0, np.int64)
        ),
        "adjacency_indptr": head_model.adjacency.indptr.astype(np.int32),
        "adjacency_indices": head_model.adjacency.indices.astype(np.int32),
    }
    if head_model.region_moments is not None:
        arrays["region_moments"] = head_model.region_moments
    for mod, lf in head_model.lead_fields.items():
        header[f"{mod}_ch_names"] = lf.ch_names
        header[f"{mod}_ch_types"] = lf.ch_types
        arrays[f"{mod}_gain"] = lf.gain
        arrays[f"{mod}_ch_positions_m"] = lf.ch_positions_m
    arrays["header_json"] = np.array(json.dumps(header))
    with atomic_path(path) as tmp, open(tmp, "wb") as fid:
        np.savez_compressed(fid, **arrays)


def read_head_model(path: str | Path) -> dict[str, Any]:
    """Read the contents of a head model file written by :func:`write_head_model`.

    Parameters
    ----------
    path : path-like
        A ``.npz`` head model file.

    Returns
    -------
    dict
        Keyword arguments of :class:`~fairesi.headmodel.model.HeadModel`, with each
        ``lead_fields[modality]`` a dict of :class:`~fairesi.headmodel.model.LeadField`
        keyword arguments (gain (n_channels, R), ch_positions_m (n_channels, 3) m, ...).
        ``adjacency`` is a 0/1 float32 CSR matrix (R, R), ``vertno`` a list of int64
        arrays; the other arrays have the stored dtypes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a fairesi head model or has another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head model file {path} does not exist")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a fairesi head model file (a .npz written by HeadModel.save): "
            f"{type(err).__name__}"
        ) from None
    if not hasattr(npz, "files"):  # a plain .npy array, not an archive
        raise ValueError(
            f"{path} is not a fairesi head model file (a .npz written by HeadModel.save)"
        )
    with npz:
        if "header_json" not in npz:
            raise ValueError(f"{path} is not a fairesi head model (no header_json entry)")
        header = json.loads(str(npz["header_json"]))
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: head model format version {header.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        n = len(header["region_names"])
        indptr = npz["adjacency_indptr"]
        indices = npz["adjacency_indices"]
        adjacency = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr), shape=(n, n)
        )
        vertno = np.split(npz["vertno"], np.cumsum(npz["vertno_lengths"])[:-1])
        lead_fields = {
            mod: {
                "modality": mod,
                "gain": npz[f"{mod}_gain"],
                "ch_names": header[f"{mod}_ch_names"],
                "ch_types": header[f"{mod}_ch_types"],
                "ch_positions_m": npz[f"{mod}_ch_positions_m"],
            }
            for mod in header["modalities"]
        }
        return dict(
            name=header["name"],
            region_names=header["region_names"],
            region_centroids_mm=npz["region_centroids_mm"],
            region_normals=npz["region_normals"],
            region_areas_mm2=npz["region_areas_mm2"],
            vertex_region=npz["vertex_region"],
            vertno=vertno,
            adjacency=adjacency,
            lead_fields=lead_fields,
            metadata=header["metadata"],
            region_moments=npz["region_moments"] if "region_moments" in npz else None,
        )


def default_file() -> Path:
    """Path of the embedded fsaverage5 / 994-region head model (:data:`DEFAULT_FILE`).

    It was made by :func:`fairesi.headmodel.build.build_default_head_model`: 994 regions
    (494 left, 500 right), 20,484 source vertices, 256 EEG channels (GSN-HydroCel-256,
    average reference), 306 MEG channels (Neuromag: 102 ``'mag'``, 204 ``'grad'``).

    Returns
    -------
    pathlib.Path
        An existing ``.npz`` file inside the installed package.

    Raises
    ------
    FileNotFoundError
        If the file is missing from the installed package.
    """
    if not DEFAULT_FILE.is_file():
        raise FileNotFoundError(
            f"the default head model {DEFAULT_FILE} is missing from the package; rebuild "
            f"it with `fairesi headmodel build --out {DEFAULT_FILE}`"
        )
    return DEFAULT_FILE


__all__ = ["DEFAULT_FILE", "FORMAT_VERSION", "default_file", "read_head_model", "write_head_model"]
