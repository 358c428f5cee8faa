"""Head models: cortical regions, their geometry and adjacency, and region lead fields.

A :class:`HeadModel` carries everything later stages need about the head: for each of
``R`` cortical regions its name, centroid (mm), mean normal, area and source vertices,
the region adjacency graph (with hop distances and neighbour rings), and one
:class:`LeadField` per modality (``'eeg'``, ``'meg'``) mapping region activity to the
sensors. Region gain is the sum of the fixed-orientation (surface-normal) gains of the
region's source vertices, as in DeepSIF; EEG gains are average-referenced.

Three ways to get one:

:meth:`HeadModel.default`
    The embedded default, loaded from ``fairesi/resources/fsaverage5_994.npz`` (no
    download, well under a second): the fsaverage5 cortex (20,484 pial vertices) with
    DeepSIF's 994-region parcellation (the source space of DeepSIF and FAIR-ESI), EEG on
    the GSN-HydroCel-256 montage (256 channels, average reference) and MEG on the
    Neuromag-306 helmet (102 magnetometers + 204 planar gradiometers). It was built
    with ``fairesi headmodel build --out python/fairesi/resources/fsaverage5_994.npz``
    (:mod:`fairesi.headmodel_build` documents the forward model; the build parameters
    and library versions are in ``HeadModel.default().metadata``).
:meth:`HeadModel.from_forward`
    From a user's MNE :class:`mne.Forward` plus a parcellation (list of
    :class:`mne.Label`).
:meth:`HeadModel.toy`
    A small synthetic model with analytic spherical lead fields, for tests and examples.

Coordinates: centroids are in mm in the source space's MRI (FreeSurfer surface RAS)
frame; sensor positions are in m in the MNE head frame. Gains are in V/(A m) (EEG),
T/(A m) (magnetometers) and T/(m A m) (gradiometers), per unit dipole moment at every
vertex of the region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from fairesi.io import atomic_path

#: Modalities a head model may carry lead fields for.
MODALITIES = ("eeg", "meg")

#: Hop distance reported between regions with no path between them (e.g. the two
#: hemispheres, whose cortical meshes are separate): larger than any real distance, so
#: "at least k hops apart" tests treat them as far apart.
UNREACHABLE_HOPS = int(np.iinfo(np.int16).max)

_DEFAULT_FILE = Path(__file__).parent / "resources" / "fsaverage5_994.npz"
_FORMAT_VERSION = 1

# Physical constants of the analytic toy model.
_MU0 = 4e-7 * np.pi  # T m / A
_SIGMA_HEAD = 0.33  # S/m, homogeneous head conductivity


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
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
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
        allowed = {"eeg"} if self.modality == "eeg" else {"mag", "grad"}
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
        if self.modality == "eeg":
            gain = gain - gain.mean(axis=0, keepdims=True)
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
        """Return the lead field of ``modality`` (``'eeg'`` or ``'meg'``).

        Raises
        ------
        ValueError
            If the model has no lead field for ``modality``; the message lists those it has.
        """
        try:
            return self.lead_fields[modality]
        except KeyError:
            raise ValueError(
                f"head model {self.name!r} has no {modality!r} lead field; available "
                f"modalities: {sorted(self.lead_fields)}"
            ) from None

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
    def save(self, path: str | Path) -> None:
        """Write the head model to one compressed ``.npz`` file (atomically).

        Parameters
        ----------
        path : path-like
            Destination; conventionally ends in ``.npz``.
        """
        header = {
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            "region_names": self.region_names,
            "modalities": sorted(self.lead_fields),
            "metadata": self.metadata,
        }
        arrays: dict[str, np.ndarray] = {
            "region_centroids_mm": self.region_centroids_mm,
            "region_normals": self.region_normals,
            "region_areas_mm2": self.region_areas_mm2,
            "vertex_region": self.vertex_region,
            "vertno_lengths": np.array([len(v) for v in self.vertno], dtype=np.int64),
            "vertno": np.concatenate(self.vertno) if self.vertno else np.zeros(0, np.int64),
            "adjacency_indptr": self.adjacency.indptr.astype(np.int32),
            "adjacency_indices": self.adjacency.indices.astype(np.int32),
        }
        if self.region_moments is not None:
            arrays["region_moments"] = self.region_moments
        for mod, lf in self.lead_fields.items():
            header[f"{mod}_ch_names"] = lf.ch_names
            header[f"{mod}_ch_types"] = lf.ch_types
            arrays[f"{mod}_gain"] = lf.gain
            arrays[f"{mod}_ch_positions_m"] = lf.ch_positions_m
        arrays["header_json"] = np.array(json.dumps(header))
        with atomic_path(path) as tmp, open(tmp, "wb") as fid:
            np.savez_compressed(fid, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> HeadModel:
        """Read a head model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a fairesi head model.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"head model file {path} does not exist")
        with np.load(path, allow_pickle=False) as npz:
            if "header_json" not in npz:
                raise ValueError(f"{path} is not a fairesi head model (no header_json entry)")
            header = json.loads(str(npz["header_json"]))
            if header.get("format_version") != _FORMAT_VERSION:
                raise ValueError(
                    f"{path}: head model format version {header.get('format_version')!r}, "
                    f"expected {_FORMAT_VERSION}"
                )
            n = len(header["region_names"])
            indptr = npz["adjacency_indptr"]
            indices = npz["adjacency_indices"]
            adjacency = sp.csr_matrix(
                (np.ones(len(indices), np.float32), indices, indptr), shape=(n, n)
            )
            vertno = np.split(npz["vertno"], np.cumsum(npz["vertno_lengths"])[:-1])
            lead_fields = {
                mod: LeadField(
                    mod,
                    npz[f"{mod}_gain"],
                    header[f"{mod}_ch_names"],
                    header[f"{mod}_ch_types"],
                    npz[f"{mod}_ch_positions_m"],
                )
                for mod in header["modalities"]
            }
            return cls(
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

    @classmethod
    def default(cls) -> HeadModel:
        """The embedded fsaverage5 / 994-region head model with EEG-256 and MEG-306.

        Loaded from the package (no download). Sizes: 994 regions (494 left, 500 right),
        20,484 source vertices, 256 EEG channels (GSN-HydroCel-256, average reference),
        306 MEG channels (Neuromag: 102 ``'mag'``, 204 ``'grad'``).
        """
        if not _DEFAULT_FILE.is_file():
            raise FileNotFoundError(
                f"the default head model {_DEFAULT_FILE} is missing from the package; rebuild "
                f"it with `fairesi headmodel build --out {_DEFAULT_FILE}`"
            )
        return cls.load(_DEFAULT_FILE)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def toy(cls, n_regions: int = 50, n_eeg: int = 32, n_meg: int = 48, seed: int = 0) -> HeadModel:
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
        HeadModel
            Named ``'toy'``, with ``'eeg'`` and ``'meg'`` lead fields. Vertex ``i`` is
            region ``i``; regions with x < 0 form the "left hemisphere".
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

        n_sites = n_meg // 3
        site_dir = _fibonacci_sphere(n_sites, z_min=-0.3)
        site_pos_m = 0.110 * site_dir
        east = np.cross([0.0, 0.0, 1.0], site_dir)
        # A site at the pole has no "east"; any tangent will do there.
        east[np.linalg.norm(east, axis=1) < 1e-9] = [1.0, 0.0, 0.0]
        east /= np.linalg.norm(east, axis=1, keepdims=True)
        north = np.cross(site_dir, east)
        mag_gain = _sarvas_meg_gain(dipole_pos_m, normals, site_pos_m, site_dir)
        baseline_m = 0.01
        grad_gains = []
        for axis in (east, north):
            b_plus = _sarvas_meg_gain(
                dipole_pos_m, normals, site_pos_m + 0.5 * baseline_m * axis, site_dir
            )
            b_minus = _sarvas_meg_gain(
                dipole_pos_m, normals, site_pos_m - 0.5 * baseline_m * axis, site_dir
            )
            grad_gains.append((b_plus - b_minus) / baseline_m)
        meg_gain = np.stack([mag_gain, *grad_gains], axis=1).reshape(n_meg, n_regions)
        meg_names = [f"MEG{s + 1:03d}{k}" for s in range(n_sites) for k in "123"]
        meg_types = ["mag", "grad", "grad"] * n_sites

        n_left = int(np.sum(directions[:, 0] < 0))
        return cls(
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
                "eeg": LeadField(
                    "eeg", eeg_gain, [f"E{i + 1}" for i in range(n_eeg)], ["eeg"] * n_eeg, eeg_pos_m
                ),
                "meg": LeadField(
                    "meg", meg_gain, meg_names, meg_types, np.repeat(site_pos_m, 3, 0)
                ),
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

    @classmethod
    def from_forward(cls, fwd: Any, labels: list, *, name: str = "custom") -> HeadModel:
        """Build a head model from an MNE forward solution and a cortical parcellation.

        Parameters
        ----------
        fwd : mne.Forward
            Forward solution on a surface source space (both hemispheres), fixed or free
            orientation; free ones are converted to the surface normals
            (``mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)``).
            Its EEG channels become the ``'eeg'`` lead field (re-referenced to their
            average), its MEG channels the ``'meg'`` one; bad channels are left out.
        labels : list of mne.Label
            One label per region, in the wanted region order, each on ``'lh'`` or
            ``'rh'`` of the forward's source space; they must not overlap and each must
            contain at least one source vertex. Vertex numbers refer to the full
            surface (as in :func:`mne.read_labels_from_annot`).
        name : str
            Name of the head model.

        Returns
        -------
        HeadModel
            Region gain = sum of the fixed-orientation gains of the region's source
            vertices; centroids, normals, areas and adjacency come from the full cortical
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
            empty = [labels[i].name for i in np.flatnonzero(counts == 0)[:5]]
            raise ValueError(
                f"labels {empty} contain no source vertex of the forward solution; use a "
                "denser source space or merge these labels"
            )
        membership = sp.csr_matrix(
            (
                np.ones(int(np.sum(vertex_region >= 0))),
                (np.flatnonzero(vertex_region >= 0), vertex_region[vertex_region >= 0]),
            ),
            shape=(len(vertex_region), len(labels)),
        )
        info = fwd["info"]
        gain = fwd["sol"]["data"]
        if gain.shape[1] != len(vertex_region):
            raise ValueError(
                f"forward gain has {gain.shape[1]} columns but the source space has "
                f"{len(vertex_region)} vertices; expected a fixed-orientation solution"
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
            rows = [
                i for i, t in enumerate(ch_types) if t in types and info["ch_names"][i] not in bads
            ]
            if not rows:
                continue
            region_gain = np.asarray(membership.T @ gain[rows].T).T
            if mod == "eeg":
                region_gain -= region_gain.mean(axis=0, keepdims=True)
            lead_fields[mod] = LeadField(
                mod,
                region_gain,
                [info["ch_names"][i] for i in rows],
                [str(ch_types[i]) for i in rows],
                _channel_positions_head_m(info, rows),
            )
        if not lead_fields:
            raise ValueError("forward has no good EEG or MEG channel")
        return cls(
            name=name,
            region_names=[label.name for label in labels],
            region_centroids_mm=geometry["centroids_mm"],
            region_normals=geometry["normals"],
            region_areas_mm2=geometry["areas_mm2"],
            vertex_region=vertex_region,
            vertno=vertno,
            adjacency=geometry["adjacency"],
            lead_fields=lead_fields,
            region_moments=np.linalg.norm(membership.T @ fwd["source_nn"], axis=1),
            metadata={
                "kind": "from_forward",
                "n_source_vertices": len(vertex_region),
                "mne_version": mne.__version__,
            },
        )


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
    """Electrode / MEG coil-centre positions (m, head frame) of channels ``picks``."""
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
    """0/1 adjacency of the labels at the two ends of every triangle edge (no self-loops)."""
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


def _as_array(value: Any, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.ascontiguousarray(value, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{what} has shape {arr.shape}, expected {shape}")
    return arr


def _fibonacci_sphere(n: int, z_min: float = -1.0) -> np.ndarray:
    """``n`` quasi-uniform unit vectors with z in [z_min, 1] (golden-angle spiral)."""
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

    Returns
    -------
    np.ndarray, shape (n_electrodes, n_dipoles)
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

    Returns
    -------
    np.ndarray, shape (n_sensors, n_dipoles)
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


__all__ = ["MODALITIES", "UNREACHABLE_HOPS", "HeadModel", "LeadField", "region_geometry"]
