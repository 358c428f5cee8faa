"""Connectome synthesis from geometry and loading of user connectomes."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from fairesi.simulate import Connectome


@pytest.fixture(scope="module")
def centroids() -> np.ndarray:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(60, 3))
    return 70.0 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True)


def test_from_geometry_rules(centroids):
    c = Connectome.from_geometry(centroids, length_scale_mm=15.0, k_nearest=5)
    w = c.weights.toarray()
    lengths = c.tract_lengths_mm.toarray()
    dist = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)  # row-normalised
    np.testing.assert_array_equal(w > 0, (w > 0).T)  # symmetric pattern
    assert np.all(np.diag(w) == 0)
    mask = w > 0
    np.testing.assert_allclose(lengths[mask], dist[mask], rtol=1e-12)  # tract = distance
    # Exponential distance rule: within a row, weight ratios follow exp(-(d1 - d2) / L).
    i = 0
    j, k = np.nonzero(mask[i])[0][:2]
    assert w[i, j] / w[i, k] == pytest.approx(np.exp(-(dist[i, j] - dist[i, k]) / 15.0))
    # Every region keeps at least its 5 nearest neighbours.
    nearest = np.argsort(dist, axis=1)[:, 1:6]
    assert np.all(np.take_along_axis(mask, nearest, axis=1))


def test_delay_steps(centroids):
    c = Connectome.from_geometry(centroids)
    d = c.delay_steps(3.0, 0.5)
    np.testing.assert_array_equal(d, np.rint(c.tract_lengths_mm.data / 3.0 / 0.5))
    assert c.delay_steps(None, 0.5) is None
    assert c.delay_steps(np.inf, 0.5) is None
    assert Connectome(c.weights).delay_steps(3.0, 0.5) is None


def test_load_formats(tmp_path, centroids):
    c = Connectome.from_geometry(centroids)
    w, t = c.weights.toarray(), c.tract_lengths_mm.toarray()
    np.save(tmp_path / "w.npy", w)
    np.savez(tmp_path / "c.npz", weights=w, tract_lengths=t)
    with zipfile.ZipFile(tmp_path / "tvb.zip", "w") as zf:
        zf.writestr("weights.txt", "\n".join(" ".join(f"{v:.17g}" for v in row) for row in w))
        zf.writestr("tract_lengths.txt", "\n".join(" ".join(f"{v:.17g}" for v in row) for row in t))
        zf.writestr("centres.txt", "\n".join(f"r{i} 0 0 0" for i in range(len(w))))
    only_w = Connectome.load(tmp_path / "w.npy")
    assert only_w.tract_lengths_mm is None
    np.testing.assert_array_equal(only_w.weights.toarray(), w)
    for name in ("c.npz", "tvb.zip"):
        loaded = Connectome.load(tmp_path / name)
        np.testing.assert_array_equal(loaded.weights.toarray(), w)
        np.testing.assert_array_equal(loaded.tract_lengths_mm.toarray(), t)


def test_bad_connectomes(tmp_path):
    with pytest.raises(ValueError, match="square"):
        Connectome(np.ones((2, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        Connectome(-np.eye(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        Connectome(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"centroids_mm must have shape \(n_regions, 3\)"):
        Connectome.from_geometry(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="length_scale_mm"):
        Connectome.from_geometry(np.random.default_rng(0).normal(size=(5, 3)), length_scale_mm=0)
    with pytest.raises(FileNotFoundError):
        Connectome.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "x.npz", w=np.eye(2))
    with pytest.raises(ValueError, match="no 'weights' array"):
        Connectome.load(tmp_path / "x.npz")
    (tmp_path / "x.csv").write_text("1,0\n0,1\n")
    with pytest.raises(ValueError, match="unsupported connectome file"):
        Connectome.load(tmp_path / "x.csv")
