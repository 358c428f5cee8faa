"""Long-range connectivity of the Jansen-Rit network.

A :class:`Connectome` holds the weights (who drives whom) and, optionally, the tract
lengths that set conduction delays. The default one is synthesised from region
geometry with an exponential distance rule; a user can load their own from ``.npy`` /
``.npz`` files or a TVB connectivity zip.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = ["Connectome"]


@dataclass(frozen=True)
class Connectome:
    """Weighted, directed region-to-region connectivity.

    Row ``i`` of ``weights`` lists the regions that drive region ``i``: the long-range
    input of region ``i`` is ``sum_j weights[i, j] * S(y1_j - y2_j)(t - delay_ij)``
    (TVB's convention).

    Attributes
    ----------
    weights : scipy.sparse.csr_matrix, shape (n_regions, n_regions)
        Non-negative finite coupling weights, float64, no self-connections required.
    tract_lengths_mm : scipy.sparse.csr_matrix, shape (n_regions, n_regions), or None
        Tract length of every edge in mm, with the same sparsity pattern as ``weights``.
        None means no conduction delays.
    """

    weights: sp.csr_matrix
    tract_lengths_mm: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        w = self.weights
        if not sp.issparse(w):
            w = sp.csr_matrix(np.asarray(w, dtype=np.float64))
        w = sp.csr_matrix(w, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ValueError(f"connectome weights must be a square matrix, got shape {w.shape}")
        if w.shape[0] < 1:
            raise ValueError("connectome must have at least one region")
        w.sum_duplicates()
        w.sort_indices()
        if not np.all(np.isfinite(w.data)):
            raise ValueError("connectome weights contain NaN or Inf")
        if np.any(w.data < 0):
            raise ValueError(f"connectome weights must be >= 0, found {w.data.min():g}")
        object.__setattr__(self, "weights", w)
        if self.tract_lengths_mm is not None:
            object.__setattr__(self, "tract_lengths_mm", self._aligned_lengths(w))

    def _aligned_lengths(self, w: sp.csr_matrix) -> sp.csr_matrix:
        """Tract lengths on exactly the sparsity pattern of ``w`` (CSR, sorted)."""
        t = self.tract_lengths_mm
        if not sp.issparse(t):
            t = np.asarray(t, dtype=np.float64)
        if t.shape != w.shape:
            raise ValueError(
                f"tract_lengths_mm has shape {t.shape}, expected the weights' shape {w.shape}"
            )
        rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        values = np.asarray(
            t[rows, w.indices] if not sp.issparse(t) else sp.csr_matrix(t)[rows, w.indices]
        ).ravel()
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("tract lengths of connected regions must be finite and >= 0 mm")
        return sp.csr_matrix((values, w.indices.copy(), w.indptr.copy()), shape=w.shape)

    @property
    def n_regions(self) -> int:
        """Number of regions."""
        return int(self.weights.shape[0])

    def delay_steps(
        self, conduction_speed_mm_per_ms: float | None, dt_ms: float
    ) -> np.ndarray | None:
        """Conduction delay of every stored edge in integration steps.

        Parameters
        ----------
        conduction_speed_mm_per_ms : float or None
            Conduction speed (TVB default 3 mm/ms). None or ``inf`` disables delays.
        dt_ms : float
            Integration step in ms.

        Returns
        -------
        delays : np.ndarray of int32, shape (nnz,), or None
            ``rint(length / speed / dt)`` per edge in CSR order (TVB's rounding), or None
            when there are no tract lengths or delays are disabled.
        """
        if self.tract_lengths_mm is None or conduction_speed_mm_per_ms is None:
            return None
        speed = float(conduction_speed_mm_per_ms)
        if np.isinf(speed):
            return None
        if not (np.isfinite(speed) and speed > 0):
            raise ValueError(f"conduction speed must be > 0 mm/ms, got {speed}")
        return np.rint(self.tract_lengths_mm.data / speed / dt_ms).astype(np.int32)

    @classmethod
    def from_geometry(
        cls,
        centroids_mm: np.ndarray,
        *,
        length_scale_mm: float = 20.0,
        k_nearest: int = 12,
    ) -> Connectome:
        """Synthesise a connectome from region positions (exponential distance rule).

        Each region is linked to its ``k_nearest`` nearest regions (the union of both
        directions, so the pattern is symmetric) with weight ``exp(-d_ij /
        length_scale_mm)``; each row is then divided by its sum so every region receives
        the same total input. Tract lengths are the Euclidean distances.

        Parameters
        ----------
        centroids_mm : np.ndarray, shape (n_regions, 3)
            Region centroids in mm.
        length_scale_mm : float
            Decay length of the exponential distance rule, in mm.
        k_nearest : int
            Neighbours kept per region before symmetrisation.

        Returns
        -------
        connectome : Connectome
        """
        xyz = np.asarray(centroids_mm, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"centroids_mm must have shape (n_regions, 3), got {xyz.shape}")
        if not np.all(np.isfinite(xyz)):
            raise ValueError("centroids_mm contains NaN or Inf")
        if not (np.isfinite(length_scale_mm) and length_scale_mm > 0):
            raise ValueError(f"length_scale_mm must be > 0, got {length_scale_mm}")
        n = xyz.shape[0]
        if n < 2:
            raise ValueError(f"need at least 2 regions to build a connectome, got {n}")
        if not (1 <= k_nearest):
            raise ValueError(f"k_nearest must be >= 1, got {k_nearest}")
        k = min(int(k_nearest), n - 1)
        dist, idx = cKDTree(xyz).query(xyz, k=k + 1)
        rows = np.repeat(np.arange(n), k)
        cols = idx[:, 1:].ravel()  # column 0 is the region itself
        pattern = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
        pattern = ((pattern + pattern.T) > 0).astype(np.float64).tocsr()
        pattern.sort_indices()
        r = np.repeat(np.arange(n), np.diff(pattern.indptr))
        d = np.linalg.norm(xyz[r] - xyz[pattern.indices], axis=1)
        w = np.exp(-d / length_scale_mm)
        w /= np.add.reduceat(w, pattern.indptr[:-1])[
            np.repeat(np.arange(n), np.diff(pattern.indptr))
        ]
        weights = sp.csr_matrix((w, pattern.indices, pattern.indptr), shape=(n, n))
        lengths = sp.csr_matrix((d, pattern.indices.copy(), pattern.indptr.copy()), shape=(n, n))
        return cls(weights, lengths)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Connectome:
        """Load a user connectome.

        Accepted formats:

        - ``.npz`` with arrays ``weights`` (R, R) and optionally ``tract_lengths`` (R, R, mm);
        - ``.npy`` holding the (R, R) weights only (no delays);
        - a TVB connectivity ``.zip`` with ``weights.txt`` and optionally
          ``tract_lengths.txt`` (other members such as ``centres.txt`` are ignored).

        Parameters
        ----------
        path : path-like
            File to read.

        Returns
        -------
        connectome : Connectome
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"connectome file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return cls(np.load(path, allow_pickle=False))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "weights" not in f:
                    raise ValueError(f"{path} has no 'weights' array (found {sorted(f.files)})")
                lengths = f["tract_lengths"] if "tract_lengths" in f else None
                return cls(f["weights"], lengths)
        if suffix == ".zip":
            return cls._load_tvb_zip(path)
        raise ValueError(f"unsupported connectome file {path}: expected .npy, .npz or a TVB .zip")

    @classmethod
    def _load_tvb_zip(cls, path: Path) -> Connectome:
        with zipfile.ZipFile(path) as zf:
            members = {Path(m).name: m for m in zf.namelist()}

            def read(name: str) -> np.ndarray:
                with zf.open(members[name]) as fh:
                    return np.loadtxt(io.TextIOWrapper(fh, encoding="utf-8"), dtype=np.float64)

            if "weights.txt" not in members:
                raise ValueError(f"TVB connectivity {path} has no weights.txt")
            weights = read("weights.txt")
            lengths = read("tract_lengths.txt") if "tract_lengths.txt" in members else None
        return cls(weights, lengths)
