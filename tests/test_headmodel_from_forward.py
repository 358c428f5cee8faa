"""``fairesi headmodel from-forward`` and the shipped DeepSIF anatomy.

The FreeSurfer subjects are synthetic and small (no download): "fsaverage" is a pair of
icosahedron-6 spheres (40,962 vertices per hemisphere, whose first 10,242 vertices are
the icosahedron-5 ones, as in the real fsaverage), "subj" a pair of icosahedron-5
spheres whose registered sphere is the same icosahedron. So on both, DeepSIF's
fsaverage5 regions must land on exactly the vertices they have in the default head
model, which the tests check against ``HeadModel.default().vertex_region``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mne
import numpy as np
import pytest

from _toy_subjects import N_EEG, eeg_forward, ico, write_annot, write_subject
from fairesi.cli import main
from fairesi.headmodel import HeadModel
from fairesi.headmodel.anatomy import SHIPPED_ANATOMY_DIR, find_anatomy_dir

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the shipped anatomy
def test_find_anatomy_dir_defaults_to_the_shipped_copy(monkeypatch, tmp_path):
    import fairesi

    monkeypatch.delenv("FAIRESI_ANATOMY_DIR", raising=False)
    found = find_anatomy_dir()
    assert found == SHIPPED_ANATOMY_DIR
    assert found.is_relative_to(Path(fairesi.__file__).parent)
    # the licence travels with the files
    assert (found.parent / "DEEPSIF_ANATOMY_LICENSE.txt").read_text().startswith("The Clear BSD")
    # $FAIRESI_ANATOMY_DIR still overrides, and is checked
    monkeypatch.setenv("FAIRESI_ANATOMY_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lacks"):
        find_anatomy_dir()
    for f in found.iterdir():
        shutil.copy(f, tmp_path)
    assert find_anatomy_dir() == tmp_path


def test_shipped_anatomy_is_the_default_models_parcellation():
    from fairesi.headmodel.anatomy import read_deepsif_anatomy

    anatomy = read_deepsif_anatomy(SHIPPED_ANATOMY_DIR)
    default = HeadModel.default()
    assert anatomy["region_names"] == default.region_names
    np.testing.assert_array_equal(np.concatenate(anatomy["vertex_labels"]), default.vertex_region)
    assert [len(rr) for rr in anatomy["rr_mm"]] == [10242, 10242]


def _git(*args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def test_shipped_anatomy_goes_into_the_wheel():
    # scikit-build-core puts every file of python/fairesi into the wheel except the ones
    # git ignores; the anatomy must be neither ignored nor left untracked.
    files = [f"python/fairesi/resources/anatomy/{f}" for f in ("lh.pial", "rh.pial")]
    files += [f"python/fairesi/resources/anatomy/{h}.nmm_994.annot" for h in ("lh", "rh")]
    ignored = _git("check-ignore", *files)
    if ignored is None:
        pytest.skip("not a git checkout")
    assert ignored.stdout == ""


def test_nothing_points_outside_the_repo():
    listed = _git("ls-files", "--cached", "--others", "--exclude-standard")
    if listed is None:
        pytest.skip("not a git checkout")
    offenders = []
    for name in listed.stdout.split():
        path = REPO / name
        if path.suffix not in {".py", ".md", ".toml", ".cff", ".txt", ".cfg", ".sh", ""}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        # spelled in pieces so that this file does not match itself
        for needle in ("../" + "shared", "shared" + "/data", "/work" + "/shared"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert offenders == []


# ---------------------------------------------------------------- synthetic subjects
@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Subjects dir with 'fsaverage' (ico-6) and 'subj' (ico-5), and forward files."""
    root = tmp_path_factory.mktemp("from_forward")
    subjects_dir = root / "subjects"
    write_subject(subjects_dir, "fsaverage", 6, 35.0)
    write_subject(subjects_dir, "subj", 5, 30.0)
    paths = {}
    for key, subject, spacing in (
        ("fsaverage", "fsaverage", "ico5"),
        ("sparse", "fsaverage", "ico3"),
        ("subj", "subj", "all"),
    ):
        fwd = eeg_forward(subjects_dir, subject, spacing)
        paths[key] = root / f"{key}-fwd.fif"
        mne.write_forward_solution(paths[key], fwd, verbose="error")
    return subjects_dir, paths


def _expected_gain(fwd_path: Path, vertex_region: np.ndarray, n_regions: int) -> np.ndarray:
    """Average-referenced fixed-orientation gain summed by ``vertex_region``, done here."""
    fwd = mne.read_forward_solution(fwd_path, verbose="error")
    free = fwd["sol"]["data"].reshape(fwd["nchan"], -1, 3)
    normals = np.concatenate([s["nn"][s["vertno"]] for s in fwd["src"]])
    fixed = np.einsum("cvk,vk->cv", free, normals)
    onehot = np.zeros((len(vertex_region), n_regions))
    onehot[np.arange(len(vertex_region)), vertex_region] = 1.0
    gain = fixed @ onehot
    return gain - gain.mean(axis=0)


# ---------------------------------------------------------------- deepsif994
def test_nearest_seed_labels_on_an_icosahedron():
    from fairesi.headmodel.parcellation import nearest_seed_labels

    rr, tris = ico(6)
    seeds = np.random.default_rng(0).integers(0, 50, 10242)
    seeds[:3] = -1
    # a stray triangle that no seed reaches
    rr = np.vstack([rr, [[5, 5, 5], [6, 5, 5], [5, 6, 5]]])
    tris = np.vstack([tris, [[40962, 40963, 40964]]])
    got = nearest_seed_labels(seeds, rr, tris)
    np.testing.assert_array_equal(got[:10242], seeds)
    assert (got[40962:] == -1).all()
    # along the mesh or straight across the sphere: the nearest seed is nearly always
    # the same vertex (ties and near-ties differ)
    from scipy.spatial import cKDTree

    nearest = cKDTree(rr[:10242]).query(rr[10242:40962])[1]
    assert np.mean(got[10242:40962] == seeds[nearest]) > 0.95


def test_from_forward_on_fsaverage_uses_the_shipped_regions(subjects, tmp_path, capsys):
    subjects_dir, paths = subjects
    out = tmp_path / "head.npz"
    # no subjects directory needed on fsaverage
    assert main(["headmodel", "from-forward", str(paths["fsaverage"]), "-o", str(out)]) == 0
    assert "994 regions, 20484 source vertices" in capsys.readouterr().out
    hm = HeadModel.load(out)
    default = HeadModel.default()
    assert hm.name == "fsaverage_deepsif994"
    assert hm.region_names == default.region_names
    # the source space is fsaverage's ico-5 vertices, i.e. fsaverage5's vertices
    assert [v.tolist() for v in hm.vertno] == [list(range(10242))] * 2
    np.testing.assert_array_equal(hm.vertex_region, default.vertex_region)
    expected = _expected_gain(paths["fsaverage"], default.vertex_region, 994)
    gain = hm.lead_field("eeg").gain
    np.testing.assert_allclose(gain, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert list(hm.lead_fields) == ["eeg"] and hm.lead_field("eeg").n_channels == N_EEG
    assert hm.metadata["parcellation"] == "deepsif994" and hm.metadata["subject"] == "fsaverage"
    # regions are patches of the mesh, so most of them have neighbours
    degree = np.asarray(hm.adjacency.sum(axis=1)).ravel()
    assert np.median(degree) >= 3
    # refuses to overwrite, and keeps the file
    before = out.read_bytes()
    assert main(["headmodel", "from-forward", str(paths["fsaverage"]), "-o", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_from_forward_morphs_deepsif994_to_another_subject(subjects, tmp_path, monkeypatch, capsys):
    subjects_dir, paths = subjects
    monkeypatch.delenv("SUBJECTS_DIR", raising=False)
    out = tmp_path / "subj.npz"
    args = ["headmodel", "from-forward", str(paths["subj"]), "-o", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--subjects-dir" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert main([*args, "--subjects-dir", str(subjects_dir / "nowhere")]) == 2
    assert "subjects directory" in capsys.readouterr().err
    # SUBJECTS_DIR works like --subjects-dir; 'subj' lies on the same sphere as
    # fsaverage's first 10,242 vertices, so the morph maps every region onto itself
    monkeypatch.setenv("SUBJECTS_DIR", str(subjects_dir))
    assert main(args) == 0
    hm = HeadModel.load(out)
    default = HeadModel.default()
    assert hm.name == "subj_deepsif994" and hm.region_names == default.region_names
    np.testing.assert_array_equal(hm.vertex_region, default.vertex_region)
    expected = _expected_gain(paths["subj"], default.vertex_region, 994)
    gain = hm.lead_field("eeg").gain
    np.testing.assert_allclose(gain, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_from_forward_morph_needs_fsaverage(subjects, tmp_path, capsys):
    subjects_dir, paths = subjects
    lonely = tmp_path / "subjects"
    shutil.copytree(subjects_dir / "subj", lonely / "subj")
    args = ["headmodel", "from-forward", str(paths["subj"]), "-o", str(tmp_path / "x.npz")]
    assert main([*args, "--subjects-dir", str(lonely)]) == 2
    err = capsys.readouterr().err
    assert "fsaverage" in err and "fetch_fsaverage" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- aparc
def test_from_forward_aparc_uses_the_subjects_annotation(subjects, tmp_path, capsys):
    subjects_dir, paths = subjects
    out = tmp_path / "aparc.npz"
    args = ["headmodel", "from-forward", str(paths["subj"]), "-o", str(out)]
    args += ["--parcellation", "aparc", "--subjects-dir", str(subjects_dir)]
    if not (subjects_dir / "subj" / "label").exists():
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "lh.aparc.annot does not exist" in err and not out.exists()
    octants = write_annot(subjects_dir, "subj", "aparc")
    assert main(args) == 0
    captured = capsys.readouterr()
    hm = HeadModel.load(out)
    assert hm.region_names == [f"{o}-{h}" for h in ("lh", "rh") for o in octants]
    assert hm.name == "subj_aparc" and hm.metadata["parcellation"] == "aparc"
    # the 'unknown' cap's sources belong to no region, and the user is told
    rr, _ = ico(5)
    cap = np.tile(rr[:, 2] < -0.9, 2)
    assert (hm.vertex_region[cap] == -1).all() and (hm.vertex_region[~cap] >= 0).all()
    assert f"{cap.sum()} of 20484 source vertices lie in no aparc region" in captured.err
    codes = 1 + (rr[:, 0] > 0) + 2 * (rr[:, 1] > 0) + 4 * (rr[:, 2] > 0) - 1
    expected_region = np.concatenate([codes, codes + 8])
    expected_region[cap] = -1
    np.testing.assert_array_equal(hm.vertex_region, expected_region)


# ---------------------------------------------------------------- bad input
def test_from_forward_refuses_bad_input_in_one_line(subjects, tmp_path, capsys):
    subjects_dir, paths = subjects
    out = tmp_path / "out.npz"

    def run(*argv: str) -> str:
        assert main(["headmodel", "from-forward", *argv, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and not out.exists()
        return err

    assert "does not exist" in run(str(tmp_path / "missing-fwd.fif"))
    raw = tmp_path / "rec_raw.fif"
    info = mne.create_info(["E1", "E2"], 500.0, "eeg")
    mne.io.RawArray(np.zeros((2, 50)), info, verbose="error").save(raw, verbose="error")
    assert "is not an MNE forward solution" in run(str(raw))
    text = tmp_path / "notes-fwd.fif"
    text.write_text("not a fif file")
    assert "is not an MNE forward solution" in run(str(text))
    # 642 sources per hemisphere cannot cover 994 regions
    err = run(str(paths["sparse"]))
    assert "contain no source vertex of the forward solution" in err
    assert "denser source space" in err
    # the fsaverage forward is not 'subj': its surfaces have other sizes
    err = run(str(paths["fsaverage"]), "--subject", "subj", "--subjects-dir", str(subjects_dir))
    assert "surface vertices" in err and "another subject" in err
    # a subject called fsaverage whose surfaces are not icosahedral
    from fairesi.headmodel.parcellation import is_fsaverage

    with pytest.raises(ValueError, match="icosahedral fsaverage surface"):
        is_fsaverage("fsaverage", [10242, 9000])
    assert not is_fsaverage("sample", [1, 2])


def test_cli_parcellation_choices_match_the_library():
    from fairesi.cli.headmodel import PARCELLATIONS as CLI_CHOICES
    from fairesi.headmodel.parcellation import PARCELLATIONS

    assert CLI_CHOICES == PARCELLATIONS
