"""Figures (fairesi.figures): region values painted on the fsaverage5 cortex."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from fairesi.figures import brain_surface, draw_brain, plot_brain, plot_reconstruction
from fairesi.headmodel import HeadModel


@pytest.fixture(scope="module")
def default_head():
    return HeadModel.default()


@pytest.fixture(scope="module")
def surface(default_head):
    found = brain_surface(default_head)
    assert found is not None, "the fsaverage5 surface ships with fairesi"
    return found


def _faces(values, surface):
    ax = Figure().subplots()
    draw_brain(ax, surface, values)
    (collection,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    return collection.get_facecolors()[:, :3]


def test_surface_matches_the_head_model(default_head, surface):
    for hemi in (0, 1):
        assert surface.rr_mm[hemi].shape == (10242, 3)
        assert surface.tris[hemi].max() < 10242
    labelled = np.concatenate(surface.vertex_region)
    assert set(np.unique(labelled[labelled >= 0])) == set(range(default_head.n_regions))
    assert brain_surface(HeadModel.toy()) is None  # no surface: callers scatter centroids


def test_only_the_faces_of_active_regions_are_coloured(default_head, surface):
    values = np.zeros(default_head.n_regions)
    assert not _coloured(_faces(values, surface)).any()  # all grey (shaded)
    region = int(surface.vertex_region[0][5000])  # a left-hemisphere region
    values[region] = 1.0
    coloured = _coloured(_faces(values, surface))
    # Every face with all three corners in the region is coloured in the views that see
    # it; faces that touch no vertex of the region never are.
    n_region_faces = sum(
        int((surface.vertex_region[h][surface.tris[h]] == region).any(1).sum()) for h in (0, 1)
    )
    assert 0 < coloured.sum() <= 2 * n_region_faces  # lateral + medial view at most
    red = _faces(values, surface)[coloured]
    assert (red[:, 0] > red[:, 2]).all()  # positive values are red, negative blue
    values[region] = -1.0
    blue = _faces(values, surface)[_coloured(_faces(values, surface))]
    assert (blue[:, 2] > blue[:, 0]).all()


def _coloured(rgb):
    """Faces whose colour is not a shade of grey."""
    return np.ptp(rgb, axis=1) > 0.02


def test_figures_are_written(default_head, surface, tmp_path):
    values = np.zeros((default_head.n_regions, 20))
    values[3, 5:15] = 1.0
    assert plot_brain(surface, values[:, 10], tmp_path / "b.png").stat().st_size > 10_000
    path = plot_reconstruction(
        default_head.region_centroids_mm,
        values,
        values * 0.5,
        tmp_path / "r.png",
        surface=surface,
    )
    assert path.stat().st_size > 10_000
