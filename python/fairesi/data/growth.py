"""DeepSIF's candidate source patches: a fixed set of grown patches per centre region.

DeepSIF (``forward/generate_sythetic_source.m`` of bfinl/DeepSIF, lines 22-61) does not
grow a new patch for every sample. Before any sample is drawn it grows, for every centre
region, a fixed list of candidate patches, and each sample takes one of its centre's
candidates. The paper's 47,904 samples are 48 per region of one such set, split 10:1:1,
so training, validation and test patches all come from the same candidates: a network
can learn each centre's few patch shapes, and the sensors need only tell those apart.

The growth of one candidate, for centre ``c`` with first-ring neighbours ``N1`` (sorted
by region index, as MATLAB's ``unique``) and second ring ``N2``:

1. Directions: the unit vectors from ``c`` to the regions of ``N1``; the ``ceil(|N1| / 2)``
   regions of ``N1`` at the smallest angle to the first one give the growth directions.
2. For every direction ``v`` (5 times each; ``get_region_with_dir``): a region ``r`` of
   the outer ring is kept when a uniform draw is below
   ``ratio * (d_r - min d) / (max d - min d) + bias``, with ``d_r = |u_r . v|`` and ``u_r``
   the unit vector from ``c`` to ``r``: regions in line with ``v`` (on either side) are
   kept, regions across it dropped. Two rings (``N_n = 2``): ``N2`` with ratio 1, bias
   0. Three rings: ``N2`` with bias 0.1, then the neighbours of the kept part not yet in
   the patch with bias -0.15.
3. Smoothing (``smooth_region``): a neighbour of the patch is added when at most one of
   its own neighbours lies outside the patch; a member with exactly one neighbour in
   the (extended) patch is removed.

Where we differ, and why: the centre is never removed (DeepSIF removes a centre with a
single neighbour, which would leave its fall-off without a reference), and a region the
smoothing adds beyond ``n_rings`` hops is dropped (our patch tables hold ``n_rings``
rings; it happens for a few candidates, counted by :func:`candidate_table`). A patch of
0 or 1 rings has one candidate, the whole patch (DeepSIF grows no such patches). The
candidates are a function of the head model, ``n_rings`` and the growth seed only, not
of the samples' seed: like the paper's splits, every dataset on a head model shares them.

Layering: numpy only; :mod:`fairesi.data.synth` imports it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GROWTH_SEED", "candidate_table", "deepsif_candidates"]

#: Seed of the candidate growth (one fixed set per head model and ``n_rings``).
GROWTH_SEED = 0x5EED_D5F

#: Candidates grown per direction (DeepSIF's ``for iter = 1:5``).
_PER_DIRECTION = 5


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def _ring(neighbours: list[frozenset[int]], regions: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """DeepSIF's ``find_nb_rg``: the sorted union of the neighbours of ``regions``, less
    ``exclude``."""
    union = set().union(*(neighbours[r] for r in regions.tolist())) - set(exclude.tolist())
    return np.asarray(sorted(union), dtype=np.int64)


def _keep_along(v: np.ndarray, centre_mm: np.ndarray, points_mm: np.ndarray, ratio: float,
                bias: float, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """DeepSIF's ``get_region_with_dir``: a bool mask over ``points_mm`` (n, 3) that keeps
    the points in line with direction ``v`` (3,) more often."""
    if points_mm.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    d = np.abs(_unit(points_mm - centre_mm) @ v)
    span = d.max() - d.min()
    draws = rng.random(d.shape[0])
    if span == 0:  # MATLAB: 0 / 0 is NaN and no draw is below NaN
        return np.zeros(d.shape[0], dtype=bool)
    return draws < ratio * (d - d.min()) / span + bias


def _smooth(neighbours: list[frozenset[int]], members: np.ndarray, centre: int) -> np.ndarray:
    """DeepSIF's ``smooth_region`` applied: ``members`` with nearly enclosed neighbours
    added and members touching only one other member removed (never the centre), in
    DeepSIF's order (``setdiff(..., 'stable')``)."""
    inside = set(members.tolist())
    add = [r for r in _ring(neighbours, members, members).tolist()
           if len(neighbours[r] & inside) > len(neighbours[r]) - 2]  # fmt: skip
    inside.update(add)
    kept = [r for r in members.tolist() if r == centre or len(neighbours[r] & inside) != 1]
    return np.asarray(kept + add, dtype=np.int64)


def deepsif_candidates(
    hop: np.ndarray, centroids_mm: np.ndarray, n_rings: int, seed: int = GROWTH_SEED
) -> list[list[np.ndarray]]:
    """Every region's candidate patches, grown as DeepSIF grows them (module doc).

    Parameters
    ----------
    hop : np.ndarray, shape (R, R), int
        Hop distances between regions on the cortical adjacency graph (1 = neighbours,
        negative = unconnected).
    centroids_mm : np.ndarray, shape (R, 3)
        Region centroids in mm.
    n_rings : int
        Patch extent N_n: 0 or 1 (one candidate, the whole patch), 2 or 3.
    seed : int
        Seed of the growth.

    Returns
    -------
    candidates : list of R lists of np.ndarray of int64
        ``candidates[c]``: the candidate patches of centre ``c``, each the region indices
        of one patch with ``c`` first, possibly reaching one ring beyond ``n_rings``
        through the smoothing (``candidate_table`` drops those regions).
    """
    hop = np.asarray(hop)
    centroids_mm = np.asarray(centroids_mm, dtype=np.float64)
    n_regions = hop.shape[0]
    if hop.shape != (n_regions, n_regions) or centroids_mm.shape != (n_regions, 3):
        raise ValueError(
            f"hop must be (R, R) and centroids_mm (R, 3), got {hop.shape} and {centroids_mm.shape}"
        )
    if not 0 <= n_rings <= 3:
        raise ValueError(
            f"DeepSIF grows patches of 2 or 3 rings; n_rings must be 0-3, got {n_rings}"
        )
    if n_rings <= 1:
        whole = [np.flatnonzero((hop[c] > 0) & (hop[c] <= n_rings)) for c in range(n_regions)]
        return [[np.concatenate([[c], r])] for c, r in enumerate(whole)]
    rng = np.random.default_rng(seed)
    adjacent = [np.flatnonzero(hop[r] == 1) for r in range(n_regions)]
    neighbours = [frozenset(a.tolist()) for a in adjacent]
    out: list[list[np.ndarray]] = []
    for c in range(n_regions):
        first = adjacent[c]
        centre = np.asarray([c], dtype=np.int64)
        if first.size == 0:
            out.append([centre])
            continue
        second = _ring(neighbours, first, np.concatenate([centre, first]))
        towards = _unit(centroids_mm[first] - centroids_mm[c])
        angles = np.degrees(np.arccos(np.clip(towards @ towards[0], -1.0, 1.0)))
        directions = np.argsort(angles, kind="stable")[: math.ceil(first.size / 2)]
        patches = []
        for _ in range(_PER_DIRECTION):
            for k in directions:
                v = towards[k]
                if n_rings == 2:
                    kept = second[
                        _keep_along(v, centroids_mm[c], centroids_mm[second], 1.0, 0.0, rng)
                    ]
                    grown = np.concatenate([centre, first, kept])
                else:
                    kept = second[
                        _keep_along(v, centroids_mm[c], centroids_mm[second], 1.0, 0.1, rng)
                    ]
                    third = _ring(neighbours, kept, np.concatenate([centre, first, kept]))
                    third = third[
                        _keep_along(v, centroids_mm[c], centroids_mm[third], 1.0, -0.15, rng)
                    ]
                    grown = np.concatenate([centre, first, kept, third])
                patches.append(_smooth(neighbours, grown, c))
        out.append(patches)
    return out


def candidate_table(
    candidates: list[list[np.ndarray]], patch_regions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """The candidates as membership masks over each centre's patch table.

    Parameters
    ----------
    candidates : list of R lists of np.ndarray
        From :func:`deepsif_candidates`.
    patch_regions : np.ndarray, shape (R, M), int
        Each centre's patch table: the regions within ``n_rings`` hops, -1 padding.

    Returns
    -------
    member : np.ndarray, shape (R, K, M), bool
        ``member[c, k, m]``: candidate ``k`` of centre ``c`` holds table entry ``m``
        (False for ``k >= count[c]``).
    count : np.ndarray, shape (R,), int64
        Candidates per centre (>= 1).
    dropped : int
        Regions of all candidates together outside their centre's table (dropped).
    """
    n_regions, width = patch_regions.shape
    count = np.asarray([len(c) for c in candidates], dtype=np.int64)
    member = np.zeros((n_regions, int(count.max()), width), dtype=bool)
    dropped = 0
    for c, patches in enumerate(candidates):
        for k, patch in enumerate(patches):
            inside = np.isin(patch_regions[c], patch) & (patch_regions[c] >= 0)
            member[c, k] = inside
            dropped += int(patch.size - inside.sum())
    return member, count, dropped
