"""Tests of fairesi.headmodel: geometry, adjacency/rings, analytic toy lead fields,
persistence, the shipped default and construction from an MNE Forward."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import eval_legendre, lpmv
from scipy.stats import spearmanr

from fairesi.headmodel import (
    UNREACHABLE_HOPS,
    HeadModel,
    LeadField,
    region_geometry,
)
from fairesi.headmodel.toy import _fibonacci_sphere, _sarvas_meg_gain, _sphere_eeg_gain


def _chain_head_model(n_chain: int = 6) -> HeadModel:
    """Regions 0..n_chain-1 in a path graph, plus one isolated region at the end."""
    n = n_chain + 1
    a = np.arange(n_chain - 1)
    adjacency = sp.coo_matrix((np.ones(2 * len(a)), (np.r_[a, a + 1], np.r_[a + 1, a])), (n, n))
    return HeadModel(
        name="chain",
        region_names=[f"r{i}" for i in range(n)],
        region_centroids_mm=np.zeros((n, 3)),
        region_normals=np.tile([0.0, 0.0, 1.0], (n, 1)),
        region_areas_mm2=np.ones(n),
        vertex_region=np.arange(n),
        vertno=[np.arange(n), np.zeros(0)],
        adjacency=adjacency,
        lead_fields={},
    )


# ---------------------------------------------------------------- graph and geometry
def test_rings_and_hops_on_a_chain():
    hm = _chain_head_model(6)
    rings = hm.rings(2, 3)
    assert [r.tolist() for r in rings] == [[2], [1, 3], [0, 4], [5]]
    assert [r.tolist() for r in hm.rings(0, 1)] == [[0], [1]]
    hops = hm.hop_distance
    assert hops.dtype == np.int16 and hops.shape == (7, 7)
    assert hops[0, 5] == 5 and hops[5, 0] == 5 and hops[3, 3] == 0
    # the isolated region is unreachable, and counts as far from everything
    assert (hops[6, :6] == UNREACHABLE_HOPS).all() and (hops[:6, 6] == UNREACHABLE_HOPS).all()
    assert hm.rings(6, 2)[1].size == 0


def test_rings_bad_input():
    hm = _chain_head_model(3)
    with pytest.raises(ValueError, match="centre 9 out of range"):
        hm.rings(9, 1)
    with pytest.raises(ValueError, match="n_rings must be >= 0"):
        hm.rings(0, -1)


def test_region_geometry_by_hand():
    # Unit square of two triangles (z = 0) plus a stray vertex in no region.
    rr = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], float)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    labels = np.array([0, 0, 1, 1, -1])
    # A second "hemisphere": one triangle, region 2, never joined to the first mesh.
    rr2 = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0]], float)
    geo = region_geometry([rr, rr2], [tris, np.array([[0, 1, 2]])], [labels, np.full(3, 2)], 3)
    # vertex areas: a third of each adjacent triangle (v0, v2 in both, v1, v3 in one)
    np.testing.assert_allclose(geo["areas_mm2"], [1 / 3 + 1 / 6, 1 / 3 + 1 / 6, 2.0])
    np.testing.assert_allclose(geo["centroids_mm"], [[0.5, 0, 0], [0.5, 1, 0], [2 / 3, 2 / 3, 0]])
    np.testing.assert_allclose(geo["normals"], np.tile([0, 0, 1.0], (3, 1)))
    assert geo["adjacency"].toarray().tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]


def test_region_geometry_rejects_empty_region():
    rr = np.eye(3)
    with pytest.raises(ValueError, match=r"regions \[1\] own no vertex"):
        region_geometry([rr], [np.array([[0, 1, 2]])], [np.zeros(3, int)], 2)


# ---------------------------------------------------------------- analytic lead fields
def test_sphere_eeg_matches_legendre_series():
    # Independent reference: the series solution for a dipole at depth b*R on the z axis
    # of a homogeneous sphere (radial: sum (2n+1) b^(n-1) P_n; tangential along x:
    # sum (2n+1)/n b^(n-1) P_n^1 cos(phi)), in units of 1 / (4 pi sigma R^2).
    radius, b = 0.09, 0.7
    theta = np.linspace(0.1, 3.0, 9)
    electrodes = radius * np.stack([np.sin(theta), 0 * theta, np.cos(theta)], axis=1)
    dipole = np.array([[0.0, 0.0, b * radius]])
    n = np.arange(1, 400)[:, None]
    scale = 1.0 / (4 * np.pi * 0.33 * radius**2)
    radial_series = scale * np.sum((2 * n + 1) * b ** (n - 1) * eval_legendre(n, np.cos(theta)), 0)
    # scipy's lpmv carries the Condon-Shortley phase (-1)^m
    tangential_series = -scale * np.sum(
        (2 * n + 1) / n * b ** (n - 1) * lpmv(1, n, np.cos(theta)), 0
    )
    radial = _sphere_eeg_gain(dipole, np.array([[0, 0, 1.0]]), electrodes, radius)[:, 0]
    tangential = _sphere_eeg_gain(dipole, np.array([[1.0, 0, 0]]), electrodes, radius)[:, 0]
    np.testing.assert_allclose(radial, radial_series, rtol=1e-9)
    np.testing.assert_allclose(tangential, tangential_series, rtol=1e-9)


def test_sarvas_radial_silent_and_radial_component_is_biot_savart():
    rng = np.random.default_rng(1)
    dipoles = 0.07 * _fibonacci_sphere(20) * rng.uniform(0.3, 1.0, (20, 1))
    sensors = 0.11 * _fibonacci_sphere(30, z_min=-0.3)
    radial_dir = sensors / np.linalg.norm(sensors, axis=1, keepdims=True)
    radial_ori = dipoles / np.linalg.norm(dipoles, axis=1, keepdims=True)
    tangential_ori = np.cross(radial_ori, rng.normal(size=(20, 3)))
    tangential_ori /= np.linalg.norm(tangential_ori, axis=1, keepdims=True)
    b_tan = _sarvas_meg_gain(dipoles, tangential_ori, sensors, radial_dir)
    b_rad = _sarvas_meg_gain(dipoles, radial_ori, sensors, radial_dir)
    assert np.abs(b_rad).max() < 1e-12 * np.abs(b_tan).max()
    # Outside a spherically symmetric conductor the radial field is that of the primary
    # current alone: B.r_hat = -mu0/(4 pi) (q x r0).r / (|r| |r - r0|^3).
    d = sensors[:, None, :] - dipoles[None]
    q_x_r0 = np.cross(tangential_ori, dipoles)
    expected = (
        -1e-7
        * np.einsum("cdk,ck->cd", np.broadcast_to(q_x_r0, d.shape), sensors)
        / (np.linalg.norm(sensors, axis=1)[:, None] * np.linalg.norm(d, axis=2) ** 3)
    )
    np.testing.assert_allclose(b_tan, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


# ---------------------------------------------------------------- toy model
def test_toy_sizes_structure_and_determinism(toy_head_model):
    hm = toy_head_model
    assert hm.n_regions == 50 and hm.n_vertices == 50
    assert hm.lead_field("eeg").n_channels == 32 and hm.lead_field("meg").n_channels == 48
    assert hm.lead_field("meg").ch_types.count("mag") == 16
    assert sum(len(v) for v in hm.vertno) == 50
    adj = hm.adjacency
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert np.asarray(adj.sum(axis=1)).min() >= 3  # a closed triangulated surface
    assert hm.hop_distance.max() < UNREACHABLE_HOPS  # one connected cortex
    np.testing.assert_allclose(np.linalg.norm(hm.region_normals, axis=1), 1.0, rtol=1e-6)
    # EEG is average-referenced: every column sums to zero
    eeg = hm.lead_field("eeg").gain.astype(np.float64)
    assert np.abs(eeg.sum(axis=0)).max() < 1e-5 * np.abs(eeg).max()
    again = HeadModel.toy()
    np.testing.assert_array_equal(again.lead_field("meg").gain, hm.lead_field("meg").gain)
    np.testing.assert_array_equal(again.region_centroids_mm, hm.region_centroids_mm)
    other = HeadModel.toy(seed=1)
    assert not np.array_equal(other.region_centroids_mm, hm.region_centroids_mm)
    start = time.perf_counter()
    HeadModel.toy(n_regions=50)
    assert time.perf_counter() - start < 0.2


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="n_meg must be a positive multiple of 3"):
        HeadModel.toy(n_meg=10)
    with pytest.raises(ValueError, match="n_regions must be >= 4"):
        HeadModel.toy(n_regions=3)
    with pytest.raises(ValueError, match="n_eeg must be >= 2"):
        HeadModel.toy(n_eeg=1)


def _nearest_sensor_distance_m(centroids_m, lead_field):
    d = centroids_m[:, None, :] - lead_field.ch_positions_m[None].astype(np.float64)
    return np.linalg.norm(d, axis=2).min(axis=1)


@pytest.mark.parametrize("modality", ["eeg", "meg"])
def test_toy_gain_falls_with_depth(toy_head_model, modality):
    lf = toy_head_model.lead_field(modality)
    distance = _nearest_sensor_distance_m(toy_head_model.region_centroids_mm * 1e-3, lf)
    rho = spearmanr(distance, np.linalg.norm(lf.gain, axis=0))[0]
    assert rho < -0.5


def test_toy_radial_sources_near_silent_in_meg(toy_head_model):
    hm = toy_head_model
    radial = hm.region_centroids_mm / np.linalg.norm(hm.region_centroids_mm, axis=1)[:, None]
    cos_radial = np.abs(np.sum(radial * hm.region_normals, axis=1))
    ratio = np.linalg.norm(hm.lead_field("meg").gain, axis=0) / np.linalg.norm(
        hm.lead_field("eeg").gain, axis=0
    )
    order = np.argsort(cos_radial)
    most_tangential, most_radial = ratio[order[:10]], ratio[order[-10:]]
    assert cos_radial[order[-10:]].min() > 0.9
    assert np.median(most_radial) < 0.3 * np.median(most_tangential)


# ---------------------------------------------------------------- containers and I/O
def test_lead_field_access_and_errors(toy_head_model):
    with pytest.raises(ValueError, match=r"no 'ecog' lead field; available modalities: \['eeg'"):
        toy_head_model.lead_field("ecog")
    with pytest.raises(ValueError, match="unknown modality 'ecog'"):
        LeadField("ecog", np.zeros((2, 3)), ["a", "b"], ["eeg", "eeg"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected only"):
        LeadField("eeg", np.zeros((2, 3)), ["a", "b"], ["eeg", "mag"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ch_positions_m has shape"):
        LeadField("eeg", np.zeros((2, 3)), ["a", "b"], ["eeg", "eeg"], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="region columns, expected 7"):
        hm = _chain_head_model(6)
        HeadModel(
            **{
                **{f: getattr(hm, f) for f in ("name", "region_names", "region_centroids_mm")},
                "region_normals": hm.region_normals,
                "region_areas_mm2": hm.region_areas_mm2,
                "vertex_region": hm.vertex_region,
                "vertno": hm.vertno,
                "adjacency": hm.adjacency,
                "lead_fields": {"eeg": toy_head_model.lead_field("eeg")},
            }
        )


def test_lead_field_pick(toy_head_model):
    eeg = toy_head_model.lead_field("eeg")
    picked = eeg.pick(["E5", "E2", "E9"])
    assert picked.ch_names == ["E5", "E2", "E9"]
    expected = eeg.gain[[4, 1, 8]] - eeg.gain[[4, 1, 8]].mean(axis=0)
    np.testing.assert_allclose(picked.gain, expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match=r"channels \['E99'\] are not in the eeg lead field"):
        eeg.pick(["E1", "E99"])
    meg = toy_head_model.lead_field("meg")
    np.testing.assert_array_equal(meg.pick(meg.ch_names[3:6]).gain, meg.gain[3:6])


def test_save_load_round_trip(toy_head_model, tmp_path):
    path = tmp_path / "toy.npz"
    toy_head_model.save(path)
    loaded = HeadModel.load(path)
    for name in ("region_centroids_mm", "region_normals", "region_areas_mm2", "vertex_region"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(toy_head_model, name))
        assert getattr(loaded, name).dtype == getattr(toy_head_model, name).dtype
    np.testing.assert_array_equal(loaded.region_moments, toy_head_model.region_moments)
    assert loaded.name == "toy" and loaded.region_names == toy_head_model.region_names
    assert loaded.metadata == toy_head_model.metadata
    assert [v.tolist() for v in loaded.vertno] == [v.tolist() for v in toy_head_model.vertno]
    assert (loaded.adjacency != toy_head_model.adjacency).nnz == 0
    for mod, lf in toy_head_model.lead_fields.items():
        got = loaded.lead_field(mod)
        np.testing.assert_array_equal(got.gain, lf.gain)
        np.testing.assert_array_equal(got.ch_positions_m, lf.ch_positions_m)
        assert got.ch_names == lf.ch_names and got.ch_types == lf.ch_types
    np.testing.assert_array_equal(loaded.hop_distance, toy_head_model.hop_distance)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HeadModel.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a fairesi head model"):
        HeadModel.load(tmp_path / "other.npz")


# ---------------------------------------------------------------- the shipped default
@pytest.fixture(scope="module")
def default_head_model():
    start = time.perf_counter()
    hm = HeadModel.default()
    return hm, time.perf_counter() - start


def test_default_sizes_and_load_time(default_head_model):
    hm, seconds = default_head_model
    assert seconds < 1.0
    assert hm.name == "fsaverage5_994" and hm.n_regions == 994
    assert hm.n_vertices == 20484 and [len(v) for v in hm.vertno] == [10242, 10242]
    eeg, meg = hm.lead_field("eeg"), hm.lead_field("meg")
    assert eeg.gain.shape == (256, 994) and eeg.gain.dtype == np.float32
    assert meg.gain.shape == (306, 994)
    assert meg.ch_types.count("mag") == 102 and meg.ch_types.count("grad") == 204
    assert sum(n.endswith("-lh") for n in hm.region_names) == 494
    assert len(set(hm.region_names)) == 994
    # every region owns vertices and every vertex has a region
    assert np.bincount(hm.vertex_region, minlength=994).min() > 0
    for key in ("mne", "numpy", "nibabel"):
        assert key in hm.metadata["versions"]
    assert hm.metadata["n_vertices_excluded"] == 0


def test_default_every_region_has_gain(default_head_model):
    hm, _ = default_head_model
    for modality in ("eeg", "meg"):
        norms = np.linalg.norm(hm.lead_field(modality).gain, axis=0)
        assert (norms > 1e-3 * np.median(norms)).all(), modality
    eeg = hm.lead_field("eeg").gain.astype(np.float64)
    assert np.abs(eeg.sum(axis=0)).max() < 1e-4 * np.abs(eeg).max()


def test_default_adjacency_is_two_hemispheres(default_head_model):
    hm, _ = default_head_model
    adj = hm.adjacency
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    is_left = np.array([n.endswith("-lh") for n in hm.region_names])
    hops = hm.hop_distance
    assert (hops[np.ix_(is_left, ~is_left)] == UNREACHABLE_HOPS).all()
    assert hops[np.ix_(is_left, is_left)].max() < 100
    assert hops[np.ix_(~is_left, ~is_left)].max() < 100
    rings = hm.rings(0, 3)
    assert all(len(r) > 0 for r in rings)
    assert set(rings[1].tolist()) == set(adj[0].indices.tolist())


@pytest.mark.parametrize(("modality", "min_rho"), [("eeg", 0.6), ("meg", 0.35)])
def test_default_gain_falls_with_depth(default_head_model, modality, min_rho):
    # Depth = how far below the conductor sphere's surface a region lies, i.e. low
    # eccentricity from the sphere centre. Region gain also scales with how well the
    # vertex orientations add up (region_moments), so compare gain per unit net moment.
    hm, _ = default_head_model
    r0_mm = np.array(hm.metadata["sphere_r0_mri_m"]) * 1e3
    eccentricity = np.linalg.norm(hm.region_centroids_mm - r0_mm, axis=1)
    per_moment = np.linalg.norm(hm.lead_field(modality).gain, axis=0) / hm.region_moments
    assert spearmanr(eccentricity, per_moment)[0] > min_rho


def test_default_radial_regions_weak_in_meg(default_head_model):
    hm, _ = default_head_model
    r0_mm = np.array(hm.metadata["sphere_r0_mri_m"]) * 1e3
    radial = hm.region_centroids_mm - r0_mm
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    cos_radial = np.abs(np.sum(radial * hm.region_normals, axis=1))
    meg = hm.lead_field("meg")
    mags = [i for i, t in enumerate(meg.ch_types) if t == "mag"]
    ratio = np.linalg.norm(meg.gain[mags], axis=0) / np.linalg.norm(
        hm.lead_field("eeg").gain, axis=0
    )
    is_radial, is_tangential = cos_radial > 0.95, cos_radial < 0.3
    assert is_radial.sum() >= 20 and is_tangential.sum() >= 20
    assert np.median(ratio[is_radial]) < 0.5 * np.median(ratio[is_tangential])


# ---------------------------------------------------------------- from an MNE Forward
def _sphere_mesh(centre_mm, radius_mm, n):
    """Closed triangulated sphere with outward-oriented triangles."""
    from scipy.spatial import ConvexHull

    unit = _fibonacci_sphere(n)
    tris = ConvexHull(unit).simplices.copy()
    normal = np.cross(unit[tris[:, 1]] - unit[tris[:, 0]], unit[tris[:, 2]] - unit[tris[:, 0]])
    inward = np.sum(normal * unit[tris].mean(axis=1), axis=1) < 0
    tris[inward] = tris[inward][:, ::-1]
    return np.asarray(centre_mm) + radius_mm * unit, tris


@pytest.fixture(scope="module")
def synthetic_forward(tmp_path_factory):
    """Free-orientation EEG+MEG forward on two small spherical 'hemispheres' + labels."""
    mne = pytest.importorskip("mne")
    import nibabel.freesurfer as nfs

    subjects_dir = tmp_path_factory.mktemp("subjects")
    surf_dir = subjects_dir / "blob" / "surf"
    surf_dir.mkdir(parents=True)
    meshes = {"lh": _sphere_mesh([-30, 0, 20], 25, 162), "rh": _sphere_mesh([30, 0, 20], 25, 162)}
    for hemi, (rr, tris) in meshes.items():
        nfs.write_geometry(str(surf_dir / f"{hemi}.pial"), rr, tris)
    src = mne.setup_source_space(
        "blob",
        spacing="all",
        surface="pial",
        subjects_dir=subjects_dir,
        add_dist=False,
        verbose="error",
    )
    eeg_names = [f"E{i + 1}" for i in range(24)]
    eeg_pos = 0.09 * _fibonacci_sphere(24, z_min=-0.2)
    info = mne.create_info(eeg_names, 1000.0, "eeg")
    info.set_montage(
        mne.channels.make_dig_montage(
            dict(zip(eeg_names, eeg_pos, strict=True)), coord_frame="head"
        )
    )
    meg_info = mne.channels.read_meg_canonical_info("neuromag")
    meg_info = mne.pick_info(
        meg_info, mne.pick_channels(meg_info["ch_names"], meg_info["ch_names"][::5])
    )
    dev_head = np.eye(4)
    dev_head[2, 3] = 0.01
    meg_info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_head)
    head_mri = np.eye(4)
    head_mri[:3, 3] = [0.001, -0.002, 0.003]
    trans = mne.transforms.Transform("head", "mri", head_mri)
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=0.09, verbose="error")
    fwds = [
        mne.make_forward_solution(i, trans, src, sphere, mindist=0.0, verbose="error")
        for i in (info, meg_info)
    ]
    labels = []
    for hemi, (rr, _) in meshes.items():
        centre = rr.mean(axis=0)
        quadrant = 2 * (rr[:, 1] > centre[1]) + (rr[:, 2] > centre[2])
        labels += [
            mne.Label(np.flatnonzero(quadrant == q), hemi=hemi, name=f"q{q}-{hemi}")
            for q in range(4)
        ]
    return fwds, labels, meshes, dev_head, head_mri


def test_from_forward_matches_manual_fixed_orientation_sums(synthetic_forward):
    import mne

    (eeg_fwd, meg_fwd), labels, meshes, dev_head, head_mri = synthetic_forward
    for fwd, modality in ((eeg_fwd, "eeg"), (meg_fwd, "meg")):
        hm = HeadModel.from_forward(fwd, labels, name="blob")
        assert hm.n_regions == 8 and hm.n_vertices == 324
        assert hm.region_names == [label.name for label in labels]
        lf = hm.lead_field(modality)
        assert list(hm.lead_fields) == [modality]
        # Independent fixed-orientation gain: free gain (x, y, z per vertex) dotted with
        # the vertex normal, summed over each label's vertices.
        free = fwd["sol"]["data"].reshape(fwd["nchan"], -1, 3)
        normals = np.concatenate([s["nn"][s["vertno"]] for s in fwd["src"]])
        fixed = np.einsum("cvk,vk->cv", free, normals)
        offsets = {"lh": 0, "rh": len(fwd["src"][0]["vertno"])}
        expected = np.stack(
            [fixed[:, offsets[lab.hemi] + lab.vertices].sum(axis=1) for lab in labels], axis=1
        )
        if modality == "eeg":
            expected -= expected.mean(axis=0)
        np.testing.assert_allclose(lf.gain, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        assert lf.ch_names == fwd["info"]["ch_names"]
        positions = np.array([ch["loc"][:3] for ch in fwd["info"]["chs"]])
        if modality == "meg":
            positions = mne.transforms.apply_trans(dev_head, positions)
        np.testing.assert_allclose(lf.ch_positions_m, positions, atol=1e-7)
    # geometry in the surfaces' own (MRI) frame, from the full meshes
    for k, lab in enumerate(labels):
        rr = meshes[lab.hemi][0]
        np.testing.assert_allclose(hm.region_centroids_mm[k], rr[lab.vertices].mean(0), atol=1e-3)
        outward = hm.region_centroids_mm[k] - rr.mean(axis=0)
        assert np.dot(hm.region_normals[k], outward) > 0
    # quadrants of one sphere touch each other, the two spheres never do
    adj = hm.adjacency.toarray()
    assert adj[:4, 4:].sum() == 0
    # quadrant q = 2 * (y above centre) + (z above centre): those differing in one bit
    # share a boundary line
    for a, b in ((0, 1), (0, 2), (1, 3), (2, 3)):
        assert adj[a, b] == 1 and adj[4 + a, 4 + b] == 1
    assert hm.region_moments.shape == (8,) and (hm.region_moments > 0).all()
    # a fixed-orientation input gives the same model
    fixed_fwd = mne.convert_forward_solution(
        meg_fwd, surf_ori=True, force_fixed=True, verbose="error"
    )
    again = HeadModel.from_forward(fixed_fwd, labels)
    np.testing.assert_allclose(again.lead_field("meg").gain, hm.lead_field("meg").gain, rtol=1e-5)


def test_from_forward_errors(synthetic_forward):
    import mne

    (eeg_fwd, _), labels, meshes, *_ = synthetic_forward
    with pytest.raises(TypeError, match="fwd must be an mne.Forward"):
        HeadModel.from_forward("fwd.fif", labels)
    with pytest.raises(ValueError, match="labels is empty"):
        HeadModel.from_forward(eeg_fwd, [])
    overlapping = [*labels, mne.Label(labels[0].vertices[:3], hemi="lh", name="extra-lh")]
    with pytest.raises(ValueError, match="labels 'q0-lh' and 'extra-lh' overlap"):
        HeadModel.from_forward(eeg_fwd, overlapping)
    too_big = mne.Label(np.array([0, 5000]), hemi="rh", name="big-rh")
    with pytest.raises(ValueError, match="label 'big-rh' has vertices outside the rh surface"):
        HeadModel.from_forward(eeg_fwd, [*labels[:4], too_big])
    empty = mne.Label(np.zeros(0, int), hemi="rh", name="empty-rh")
    with pytest.raises(ValueError, match=r"label 'empty-rh' \(labels\[4\]\) has no vertices"):
        HeadModel.from_forward(eeg_fwd, [*labels[:4], empty])


def test_toy_formulas_agree_with_mne_sphere_forward(synthetic_forward):
    # The toy's analytic EEG and MEG formulas against MNE's own sphere-model forward on
    # the same sources and sensors: a homogeneous sphere for EEG (two shells of equal
    # conductivity), Sarvas for magnetometers (MNE integrates over the coil area, hence
    # a few per cent difference).
    import mne

    (eeg_fwd, meg_fwd), _, _, dev_head, head_mri = synthetic_forward
    homogeneous = mne.make_sphere_model(
        r0=(0.0, 0.0, 0.0),
        head_radius=0.09,
        relative_radii=(0.99, 1.0),
        sigmas=(0.33, 0.33),
        verbose="error",
    )
    trans = mne.transforms.Transform("head", "mri", head_mri)
    eeg = mne.make_forward_solution(
        eeg_fwd["info"], trans, eeg_fwd["src"], homogeneous, meg=False, verbose="error"
    )
    eeg = mne.convert_forward_solution(eeg, surf_ori=True, force_fixed=True, verbose="error")
    electrodes = np.array([ch["loc"][:3] for ch in eeg["info"]["chs"]])
    ours = _sphere_eeg_gain(eeg["source_rr"], eeg["source_nn"], electrodes, 0.09)
    theirs = eeg["sol"]["data"]
    ours, theirs = ours - ours.mean(axis=0), theirs - theirs.mean(axis=0)
    assert np.linalg.norm(ours - theirs) < 1e-5 * np.linalg.norm(theirs)

    meg = mne.convert_forward_solution(meg_fwd, surf_ori=True, force_fixed=True, verbose="error")
    mags = [i for i, t in enumerate(meg["info"].get_channel_types()) if t == "mag"]
    assert len(mags) >= 10
    locs = np.array([meg["info"]["chs"][i]["loc"] for i in mags])
    centres = mne.transforms.apply_trans(dev_head, locs[:, :3])
    coil_normals = locs[:, 9:12] @ dev_head[:3, :3].T
    ours = _sarvas_meg_gain(meg["source_rr"], meg["source_nn"], centres, coil_normals)
    theirs = meg["sol"]["data"][mags]
    assert np.linalg.norm(ours - theirs) < 0.05 * np.linalg.norm(theirs)


# ---------------------------------------------------------------- command line
def test_cli_headmodel_info_and_build_guard(tmp_path, capsys):
    from fairesi.cli import main

    assert main(["headmodel", "info", "toy"]) == 0
    out = capsys.readouterr().out
    assert "'toy': 50 regions, 50 source vertices" in out and "meg: 48 channels" in out
    assert main(["headmodel", "info", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    existing = tmp_path / "hm.npz"
    existing.write_bytes(b"keep me")
    assert main(["headmodel", "build", "--out", str(existing)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


# ---------------------------------------------------------------- building the default
def test_read_deepsif_anatomy_handles_unlabelled_vertices(tmp_path):
    import nibabel.freesurfer as nfs

    from fairesi.headmodel.anatomy import read_deepsif_anatomy

    rr, tris = _sphere_mesh([0, 0, 0], 50, 12)
    colors = np.array([[10 * k + 10, 0, 0, 0, 0] for k in range(3)], dtype=np.int32)
    colors[:, 4] = colors[:, 0]  # annotation value = R + G*2^8 + B*2^16
    # lh: regions '7' and '3' and an 'unknown' entry; one vertex unlabelled (-1)
    lh_codes = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, -1, 0, 1])
    rh_codes = np.zeros(12, dtype=int)
    for hemi, codes, names in (
        ("lh", lh_codes, [b"7", b"3", b"unknown"]),
        ("rh", rh_codes, [b"5", b"8", b"9"]),
    ):
        nfs.write_geometry(str(tmp_path / f"{hemi}.pial"), rr, tris)
        nfs.write_annot(str(tmp_path / f"{hemi}.nmm_994.annot"), codes, colors, names)
    anatomy = read_deepsif_anatomy(tmp_path)
    # regions that own vertices, ordered by numeric id
    assert anatomy["region_names"] == ["3-lh", "5-rh", "7-lh"]
    expected_lh = np.array([2, 2, 0, 0, -1, -1, 2, 0, -1, -1, 2, 0])
    np.testing.assert_array_equal(anatomy["vertex_labels"][0], expected_lh)
    np.testing.assert_array_equal(anatomy["vertex_labels"][1], np.ones(12))
    np.testing.assert_allclose(anatomy["rr_mm"][0], rr, rtol=1e-6)


def test_enclosing_sphere():
    from fairesi.headmodel.build import _enclosing_sphere

    rng = np.random.default_rng(0)
    centre = np.array([0.01, -0.02, 0.03])
    # points inside a sphere of radius 0.08, plus six on its surface pinning it down
    inside = centre + 0.07 * rng.uniform(-1, 1, (500, 3)) / np.sqrt(3)
    surface = centre + 0.08 * np.vstack([np.eye(3), -np.eye(3)])
    got_centre, radius = _enclosing_sphere(np.vstack([inside, surface]))
    np.testing.assert_allclose(got_centre, centre, atol=1e-4)
    assert abs(radius - 0.08) < 1e-4


@pytest.mark.skipif(
    not os.environ.get("FAIRESI_TEST_BUILD"),
    reason="rebuilds the default head model with MNE (~1 min); set FAIRESI_TEST_BUILD=1",
)
def test_rebuild_reproduces_shipped_default():
    from fairesi.headmodel.build import build_default_head_model

    built = build_default_head_model()
    shipped = HeadModel.default()
    assert built.region_names == shipped.region_names
    np.testing.assert_array_equal(built.vertex_region, shipped.vertex_region)
    for modality in ("eeg", "meg"):
        np.testing.assert_allclose(
            built.lead_field(modality).gain, shipped.lead_field(modality).gain, rtol=1e-4
        )


def test_from_forward_on_a_source_subset(synthetic_forward):
    # Sources on part of the surface only (as for a decimated source space): regions are
    # summed over their source vertices, geometry still comes from the full surface.
    import mne

    (eeg_fwd, _), labels, *_ = synthetic_forward
    full = HeadModel.from_forward(eeg_fwd, labels)
    subset = mne.forward.restrict_forward_to_label(eeg_fwd, labels[:7])
    with pytest.raises(ValueError, match=r"labels \['q3-rh'\] contain no source vertex"):
        HeadModel.from_forward(subset, labels)
    part = HeadModel.from_forward(subset, labels[:7])
    assert part.n_vertices == 324 - len(labels[7].vertices)
    # the average reference is over channels, so each region's column is unchanged
    np.testing.assert_allclose(
        part.lead_field("eeg").gain, full.lead_field("eeg").gain[:, :7], rtol=1e-5, atol=1e-2
    )
    np.testing.assert_allclose(part.region_centroids_mm, full.region_centroids_mm[:7], atol=1e-4)
    np.testing.assert_array_equal(part.region_areas_mm2, full.region_areas_mm2[:7])
