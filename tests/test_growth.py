"""DeepSIF's candidate patches (fairesi.data.growth) and their use by the synthesizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairesi.data import SimConfig, Synthesizer
from fairesi.data.growth import _keep_along, _smooth, candidate_table, deepsif_candidates
from fairesi.headmodel import HeadModel
from fairesi.simulate.bank import WaveformBank


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hop distances and centroids (mm) of an n x n grid of regions 10 mm apart whose
    neighbours are the 8 surrounding regions (hop = Chebyshev distance)."""
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    hop = np.abs(ij[:, None, :] - ij[None, :, :]).max(-1)
    return hop, np.column_stack([10.0 * ij, np.zeros(len(ij))])


def test_growth_direction_keeps_regions_in_line():
    # Direction x; points in line (either side) always kept, across it never, between
    # in proportion: d = |cos| normalised over the points, then compared with a uniform.
    v = np.array([1.0, 0.0, 0.0])
    points = np.array([[20.0, 0, 0], [-20.0, 0, 0], [0, 20.0, 0], [20.0, 20.0, 0]])
    rng = np.random.default_rng(0)
    kept = np.array([_keep_along(v, np.zeros(3), points, 1.0, 0.0, rng) for _ in range(2000)])
    assert kept[:, :2].all() and not kept[:, 2].any()
    # The diagonal: d = cos 45 = 0.707, normalised between 0 and 1: kept 70.7% of the time.
    assert kept[:, 3].mean() == pytest.approx(np.sqrt(0.5), abs=0.03)
    # Equal d everywhere (0 / 0 in MATLAB: NaN) keeps nothing.
    assert _keep_along(v, np.zeros(3), points[:2], 1.0, 0.0, rng).sum() == 0


def test_smoothing_fills_holes_and_drops_dangling_regions():
    hop, _ = grid(5)
    neighbours = [frozenset(np.flatnonzero(hop[r] == 1).tolist()) for r in range(25)]
    # Regions r = 5 * i + j at (i, j); centre 12 = (2, 2). Region 7 = (1, 2) has the 8
    # neighbours 1, 2, 3, 6, 8, 11, 12, 13: a patch holding all of them fills it in.
    ring = [6, 8, 11, 12, 13, 16, 17, 18]
    hole_patch = np.asarray([12, 0, 1, 2, 3, 6, 8, 11, 13], dtype=np.int64)  # 7 enclosed
    out = _smooth(neighbours, hole_patch, 12)
    assert 7 in out.tolist()
    dangling = np.asarray([12, *ring, 4], dtype=np.int64)
    out = _smooth(neighbours, dangling, 12).tolist()
    assert 4 not in out and set(ring) <= set(out) and out[0] == 12
    # The centre stays even with a single neighbour in the patch.
    assert _smooth(neighbours, np.asarray([12, 13], dtype=np.int64), 12).tolist()[0] == 12


def test_candidates_follow_deepsif_recipe():
    hop, centroids = grid(9)
    centre = 40  # (4, 4): 8 neighbours, so 4 directions x 5 = 20 candidates
    for n_rings in (2, 3):
        cands = deepsif_candidates(hop, centroids, n_rings)
        assert len(cands) == 81 and len(cands[centre]) == 20
        assert len(cands[0]) == 5 * 2  # a corner: 3 neighbours, ceil(3 / 2) = 2 directions
        first = set(np.flatnonzero(hop[centre] == 1).tolist())
        for patch in cands[centre]:
            assert patch[0] == centre and first <= set(patch.tolist())
            assert hop[centre, patch].max() <= n_rings + 1
            assert len(set(patch.tolist())) == len(patch)
        # Grown, not whole: the outer ring is partly kept.
        outer = [np.isin(np.flatnonzero(hop[centre] == 2), p).mean() for p in cands[centre]]
        assert 0.1 < np.mean(outer) < 0.9
    # A pure function of the seed; another seed grows other candidates.
    cands_2 = deepsif_candidates(hop, centroids, 2)[centre]
    again = deepsif_candidates(hop, centroids, 2)[centre]
    assert all(np.array_equal(a, b) for a, b in zip(again, cands_2, strict=True))
    other = deepsif_candidates(hop, centroids, 2, seed=1)[centre]
    assert any(not np.array_equal(a, b) for a, b in zip(other, cands_2, strict=True))
    # 0 or 1 rings: one candidate, the whole patch.
    one = deepsif_candidates(hop, centroids, 1)[centre]
    assert len(one) == 1 and set(one[0].tolist()) == first | {centre}
    with pytest.raises(ValueError, match="n_rings must be 0-3"):
        deepsif_candidates(hop, centroids, 4)


def test_candidate_table_masks_and_drops():
    patch_regions = np.array([[0, 1, 2, -1], [1, 0, 3, 2]])
    cands = [[np.array([0, 2]), np.array([0, 1, 5])], [np.array([1, 3])]]
    member, count, dropped = candidate_table(cands, patch_regions)
    assert count.tolist() == [2, 1] and dropped == 1  # region 5 is not in centre 0's table
    assert member.tolist() == [
        [[True, False, True, False], [True, True, False, False]],
        [[True, False, True, False], [False, False, False, False]],
    ]


def test_paper_samples_take_one_of_their_centres_candidates():
    head_model = HeadModel.toy(n_regions=120)
    bank = WaveformBank.synthetic(head_model.n_regions)

    def synth(seed):
        config = SimConfig.preset("SimMEG", n_times=64, n_samples=1200, n_rings=2, protocol="paper")
        return Synthesizer(head_model, bank, config, seed=seed)

    a, b = synth(5), synth(6)
    cands = deepsif_candidates(head_model.hop_distance, head_model.region_centroids_mm, 2)
    seen: dict[int, set] = {}
    for s in (a, b):
        batch = s.batch("train", torch.arange(300))
        for k in range(300):
            centre = int(batch.centres[k, 0])
            members = frozenset(np.flatnonzero(batch.source_mask[k].numpy()).tolist())
            options = {frozenset(p[hop_ok].tolist()) for p in cands[centre]
                       for hop_ok in [head_model.hop_distance[centre, p] <= 2]}  # fmt: skip
            assert members in options
            seen.setdefault(centre, set()).add(members)
    # Samples of one centre use several of its candidates, whatever the dataset seed.
    assert max(len(v) for v in seen.values()) > 1
    # The target is zero outside the kept regions.
    batch = a.batch("test", torch.arange(32))
    outside = ~batch.source_mask[:, :, None].expand_as(batch.target)
    assert torch.count_nonzero(batch.target[outside]) == 0
