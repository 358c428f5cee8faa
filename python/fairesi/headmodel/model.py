"""The head model containers: :class:`LeadField` and :class:`HeadModel`.

This module holds the data and everything computed from it alone (validation, sizes,
lead field access and channel picking, hop distances, neighbour rings). Building a head
model lives elsewhere in the package, and the constructors here only delegate:
:meth:`HeadModel.save` / :meth:`~HeadModel.load` / :meth:`~HeadModel.default` to
:mod:`fairesi.headmodel.io`, :meth:`HeadModel.toy` to :mod:`fairesi.headmodel.toy`,
:meth:`HeadModel.from_forward` to :mod:`fairesi.headmodel.from_mne`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

#: Modalities a head model may carry lead fields for.
MODALITIES = ("eeg", "meg")
#: The fused modality: both lead fields stacked, EEG rows first, then MEG
#: (:meth:`HeadModel.lead_field`); data, models and exports of it take one input of
#: C_eeg + C_meg channels in that order.
FUSED_MODALITY = "eeg+meg"

#: Hop distance reported between regions with no path between them (e.g. the two
#: hemispheres, whose cortical meshes are separate): larger than any real distance, so
#: "at least k hops apart" tests treat them as far apart.
UNREACHABLE_HOPS = int(np.iinfo(np.int16).max)


@dataclass(eq=False)
class LeadField:
    """Region lead field of one modality.

    Parameters
    ----------
    modality : str
        ``'eeg'`` or ``'meg'``.
    gain : np.ndarray, shape (n_channels, n_regions), float32
        Sensor signal per unit dipole moment (A m) at every source vertex of a region,
        oriented along the vertex normals: V/(A m) for EEG (average reference), T/(A m)
        for magnetometers, T/(m A m) for planar gradiometers.
    ch_names : list of str, length n_channels
        Channel names, in the row order of ``gain``.
    ch_types : list of str, length n_channels
        MNE channel types: ``'eeg'``, ``'mag'`` or ``'grad'``.
    ch_positions_m : np.ndarray, shape (n_channels, 3), float32
        Sensor (electrode or coil centre) positions in m, MNE head frame.
    """

    modality: str
    gain: np.ndarray
    ch_names: list[str]
    ch_types: list[str]
    ch_positions_m: np.ndarray

    def __post_init__(self) -> None:
        if self.modality not in (*MODALITIES, FUSED_MODALITY):
            raise ValueError(
                f"unknown modality {self.modality!r}; expected one of "
                f"{[*MODALITIES, FUSED_MODALITY]}"
            )
        self.gain = np.ascontiguousarray(self.gain, dtype=np.float32)
        self.ch_positions_m = np.ascontiguousarray(self.ch_positions_m, dtype=np.float32)
        self.ch_names = [str(n) for n in self.ch_names]
        self.ch_types = [str(t) for t in self.ch_types]
        n = self.gain.shape[0] if self.gain.ndim == 2 else -1
        if n < 0 or len(self.ch_names) != n or len(self.ch_types) != n:
            raise ValueError(
                f"{self.modality} lead field: gain has shape {self.gain.shape}, expected "
                f"(n_channels, n_regions) with n_channels = {len(self.ch_names)} channel names "
                f"and {len(self.ch_types)} channel types"
            )
        if self.ch_positions_m.shape != (n, 3):
            raise ValueError(
                f"{self.modality} lead field: ch_positions_m has shape "
                f"{self.ch_positions_m.shape}, expected ({n}, 3)"
            )
        if len(set(self.ch_names)) != n:
            raise ValueError(f"{self.modality} lead field: channel names are not unique")
        allowed = {
            "eeg": {"eeg"},
            "meg": {"mag", "grad"},
            FUSED_MODALITY: {"eeg", "mag", "grad"},
        }[self.modality]
        bad = sorted(set(self.ch_types) - allowed)
        if bad:
            raise ValueError(
                f"{self.modality} lead field: channel types {bad} not allowed; "
                f"expected only {sorted(allowed)}"
            )

    @property
    def n_channels(self) -> int:
        """Number of channels (rows of ``gain``)."""
        return self.gain.shape[0]

    @property
    def channel_groups(self) -> tuple[int, ...]:
        """Channels per modality block, in row order: ``(C,)``, or ``(C_eeg, C_meg)`` for
        the fused modality."""
        if self.modality != FUSED_MODALITY:
            return (self.n_channels,)
        n_eeg = sum(t == "eeg" for t in self.ch_types)
        return (n_eeg, self.n_channels - n_eeg)

    def pick(self, ch_names: list[str]) -> LeadField:
        """Return the lead field restricted to, and ordered like, ``ch_names``.

        Use it to match a recording's channels. EEG gains are re-referenced to the average
        of the picked channels.

        Parameters
        ----------
        ch_names : list of str
            Channels to keep, in the wanted order.

        Returns
        -------
        LeadField
            New lead field with ``len(ch_names)`` rows.

        Raises
        ------
        ValueError
            If a name is not a channel of this lead field.
        """
        index = {name: i for i, name in enumerate(self.ch_names)}
        missing = [name for name in ch_names if name not in index]
        if missing:
            raise ValueError(
                f"channels {missing[:5]}{' ...' if len(missing) > 5 else ''} are not in the "
                f"{self.modality} lead field ({self.n_channels} channels, e.g. "
                f"{self.ch_names[:3]})"
            )
        rows = np.array([index[name] for name in ch_names], dtype=np.intp)
        gain = self.gain[rows]
        eeg = np.array([self.ch_types[i] == "eeg" for i in rows], dtype=bool)
        if eeg.any():  # EEG rows are re-referenced to the average of the picked electrodes
            gain[eeg] = gain[eeg] - gain[eeg].mean(axis=0, keepdims=True)
        return LeadField(
            self.modality,
            gain,
            list(ch_names),
            [self.ch_types[i] for i in rows],
            self.ch_positions_m[rows],
        )


@dataclass(eq=False)
class HeadModel:
    """Cortical regions with geometry, adjacency and region lead fields.

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``'fsaverage5_994'``.
    region_names : list of str, length R
        Region names (for the default: the annotation's region id and hemisphere,
        ``'<id>-lh'``, as :func:`mne.read_labels_from_annot` names them).
    region_centroids_mm : np.ndarray, shape (R, 3), float32
        Mean position of each region's source vertices, mm, MRI frame.
    region_normals : np.ndarray, shape (R, 3), float32
        Unit area-weighted mean of the region's vertex normals (outward).
    region_areas_mm2 : np.ndarray, shape (R,), float32
        Cortical surface area of each region, mm^2.
    vertex_region : np.ndarray, shape (V,), int32
        Region of each source vertex, in the order of ``np.concatenate(vertno)``;
        -1 for a vertex in no region (it contributes to no gain).
    vertno : list of np.ndarray
        Source vertex numbers of the left and right hemisphere surfaces, as
        :class:`mne.SourceEstimate` wants them.
    adjacency : scipy.sparse.csr_matrix, shape (R, R)
        Symmetric 0/1 region adjacency (regions sharing a mesh edge), zero diagonal.
    lead_fields : dict of str to LeadField
        Lead field per modality; every gain has R columns.
    metadata : dict
        JSON-able provenance: how the model was built, parameters, library versions.
    region_moments : np.ndarray, shape (R,), float32, optional
        Norm of the sum of the unit orientations of the region's source vertices: the
        number of aligned unit dipoles the region's gain amounts to (its gain is about
        this times the gain of one dipole at the centroid along the region normal).
        Small where folding makes opposite sulcal walls cancel. None if unknown.
    """

    name: str
    region_names: list[str]
    region_centroids_mm: np.ndarray
    region_normals: np.ndarray
    region_areas_mm2: np.ndarray
    vertex_region: np.ndarray
    vertno: list[np.ndarray]
    adjacency: sp.csr_matrix
    lead_fields: dict[str, LeadField]
    metadata: dict = field(default_factory=dict)
    region_moments: np.ndarray | None = None
    _hop_distance: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.region_names = [str(n) for n in self.region_names]
        n = len(self.region_names)
        self.region_centroids_mm = _as_array(
            self.region_centroids_mm, np.float32, (n, 3), "region_centroids_mm"
        )
        self.region_normals = _as_array(self.region_normals, np.float32, (n, 3), "region_normals")
        self.region_areas_mm2 = _as_array(
            self.region_areas_mm2, np.float32, (n,), "region_areas_mm2"
        )
        if self.region_moments is not None:
            self.region_moments = _as_array(self.region_moments, np.float32, (n,), "region_moments")
        self.vertno = [np.asarray(v, dtype=np.int64) for v in self.vertno]
        n_vert = sum(len(v) for v in self.vertno)
        self.vertex_region = _as_array(self.vertex_region, np.int32, (n_vert,), "vertex_region")
        if self.vertex_region.size and (
            self.vertex_region.min() < -1 or self.vertex_region.max() >= n
        ):
            raise ValueError(f"vertex_region values must lie in [-1, {n - 1}]")
        adjacency = sp.csr_matrix(self.adjacency, dtype=np.float32)
        if adjacency.shape != (n, n):
            raise ValueError(f"adjacency has shape {adjacency.shape}, expected ({n}, {n})")
        if abs(adjacency - adjacency.T).max() > 0 or adjacency.diagonal().any():
            raise ValueError("adjacency must be symmetric with a zero diagonal")
        adjacency.eliminate_zeros()
        self.adjacency = adjacency
        for key, lf in self.lead_fields.items():
            if key != lf.modality:
                raise ValueError(f"lead_fields[{key!r}] holds a {lf.modality!r} lead field")
            if lf.gain.shape[1] != n:
                raise ValueError(
                    f"{key} lead field has {lf.gain.shape[1]} region columns, expected {n}"
                )

    # ------------------------------------------------------------------ properties
    @property
    def n_regions(self) -> int:
        """Number of regions R."""
        return len(self.region_names)

    @property
    def n_vertices(self) -> int:
        """Number of source vertices V (both hemispheres)."""
        return int(self.vertex_region.shape[0])

    def lead_field(self, modality: str) -> LeadField:
        """Return the lead field of ``modality`` (``'eeg'``, ``'meg'`` or ``'eeg+meg'``).

        Parameters
        ----------
        modality : str
            ``'eeg'``, ``'meg'``, or ``'eeg+meg'`` (:data:`FUSED_MODALITY`: both stacked,
            EEG rows first; needs both lead fields).

        Returns
        -------
        LeadField
            Its gain has shape (n_channels, R).

        Raises
        ------
        ValueError
            If the model has no lead field for ``modality``; the message lists those it has.
        """
        if modality == FUSED_MODALITY:
            eeg, meg = self.lead_field("eeg"), self.lead_field("meg")
            return LeadField(
                FUSED_MODALITY,
                np.concatenate([eeg.gain, meg.gain]),
                eeg.ch_names + meg.ch_names,
                eeg.ch_types + meg.ch_types,
                np.concatenate([eeg.ch_positions_m, meg.ch_positions_m]),
            )
        try:
            return self.lead_fields[modality]
        except KeyError:
            raise ValueError(
                f"head model {self.name!r} has no {modality!r} lead field; available "
                f"modalities: {sorted(self.lead_fields)}"
            ) from None

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of what a trained network depends on: region names and centroids,
        the vertex-to-region map and every lead field's channels and gains. Two head
        models with the same hash give a network the same inputs and meaning."""
        digest = hashlib.sha256()
        digest.update("\0".join(self.region_names).encode())
        for array in (self.region_centroids_mm, self.vertex_region, *self.vertno):
            digest.update(np.ascontiguousarray(array).tobytes())
        for modality in sorted(self.lead_fields):
            lead_field = self.lead_fields[modality]
            digest.update(modality.encode() + "\0".join(lead_field.ch_names).encode())
            digest.update(np.ascontiguousarray(lead_field.gain, dtype=np.float32).tobytes())
        return digest.hexdigest()

    @property
    def hop_distance(self) -> np.ndarray:
        """Graph distance in adjacency hops between every pair of regions.

        Returns
        -------
        np.ndarray, shape (R, R), int16
            0 on the diagonal; :data:`UNREACHABLE_HOPS` between disconnected regions.
            Computed once (breadth-first search) and cached.
        """
        if self._hop_distance is None:
            hops = shortest_path(self.adjacency, method="D", unweighted=True, directed=False)
            hops[~np.isfinite(hops)] = UNREACHABLE_HOPS
            self._hop_distance = hops.astype(np.int16)
            self._hop_distance.setflags(write=False)
        return self._hop_distance

    def rings(self, centre: int, n_rings: int) -> list[np.ndarray]:
        """Neighbour rings around a region.

        Parameters
        ----------
        centre : int
            Region index in ``[0, R)``.
        n_rings : int
            Number of rings beyond the centre (>= 0).

        Returns
        -------
        list of np.ndarray (int64), length n_rings + 1
            ``rings[0] == [centre]``; ``rings[k]`` holds the regions exactly ``k`` hops
            from ``centre``, sorted (empty if there are none).
        """
        if not 0 <= int(centre) < self.n_regions:
            raise ValueError(
                f"centre {centre} out of range; expected 0 <= centre < {self.n_regions}"
            )
        if int(n_rings) < 0:
            raise ValueError(f"n_rings must be >= 0, got {n_rings}")
        row = self.hop_distance[int(centre)]
        return [np.flatnonzero(row == k) for k in range(int(n_rings) + 1)]

    # ------------------------------------------------------------------ persistence
    # Thin delegates. io, toy and from_mne return constructor arguments and do not import
    # this module (no import cycle); _from_parts builds the objects.
    def save(self, path: str | Path) -> None:
        """Write the head model to one compressed ``.npz`` file (atomically).

        See :func:`fairesi.headmodel.io.write_head_model` for the format.

        Parameters
        ----------
        path : path-like
            Destination; conventionally ends in ``.npz``.
        """
        from fairesi.headmodel.io import write_head_model

        write_head_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> HeadModel:
        """Read a head model written by :meth:`save`.

        Parameters
        ----------
        path : path-like
            A ``.npz`` file written by :meth:`save`.

        Returns
        -------
        HeadModel

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a fairesi head model.
        """
        from fairesi.headmodel.io import read_head_model

        return cls._from_parts(read_head_model(path))

    @classmethod
    def default(cls) -> HeadModel:
        """The embedded fsaverage5 / 994-region head model with EEG-256 and MEG-306.

        Loaded from the package (no download). Sizes: 994 regions (494 left, 500 right),
        20,484 source vertices, 256 EEG channels (GSN-HydroCel-256, average reference),
        306 MEG channels (Neuromag: 102 ``'mag'``, 204 ``'grad'``).

        Returns
        -------
        HeadModel
        """
        from fairesi.headmodel.io import default_file

        return cls.load(default_file())

    # ------------------------------------------------------------------ constructors
    @classmethod
    def toy(cls, n_regions: int = 50, n_eeg: int = 32, n_meg: int = 48, seed: int = 0) -> HeadModel:
        """A small synthetic head model with analytic spherical lead fields.

        One dipole per region in a spherical head; see
        :func:`fairesi.headmodel.toy.toy_parts` for the geometry and the gain formulas.

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
        HeadModel
            Named ``'toy'``; gains of shape (n_eeg, R) and (n_meg, R).
        """
        from fairesi.headmodel.toy import toy_parts

        return cls._from_parts(toy_parts(n_regions, n_eeg, n_meg, seed))

    @classmethod
    def from_forward(cls, fwd: Any, labels: list, *, name: str = "custom") -> HeadModel:
        """Build a head model from an MNE forward solution and a cortical parcellation.

        See :func:`fairesi.headmodel.from_mne.forward_parts` for the requirements on
        ``fwd`` and ``labels`` and the errors raised.

        Parameters
        ----------
        fwd : mne.Forward
            Forward solution on a two-hemisphere surface source space, fixed or free
            orientation, with EEG and/or MEG channels.
        labels : list of mne.Label, length R
            One non-overlapping label per region, in the wanted region order.
        name : str
            Name of the head model.

        Returns
        -------
        HeadModel
            Region gain (n_channels, R) = sum of the fixed-orientation gains of the
            region's source vertices.
        """
        from fairesi.headmodel.from_mne import forward_parts

        return cls._from_parts(forward_parts(fwd, labels, name=name))

    @classmethod
    def _from_parts(cls, parts: dict[str, Any]) -> HeadModel:
        """``cls(**parts)``, each ``parts['lead_fields'][m]`` (LeadField kwargs) made a LeadField."""
        lead_fields = {mod: LeadField(**lf) for mod, lf in parts["lead_fields"].items()}
        return cls(**{**parts, "lead_fields": lead_fields})


def _as_array(value: Any, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` as a C-contiguous ``dtype`` array; ValueError unless it has ``shape``."""
    arr = np.ascontiguousarray(value, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{what} has shape {arr.shape}, expected {shape}")
    return arr


__all__ = ["MODALITIES", "UNREACHABLE_HOPS", "HeadModel", "LeadField"]
