"""Small synthetic FreeSurfer subjects and EEG forward solutions for the head-model tests
(no download). Surfaces are icosahedra: icosahedron k has 10 * 4**k + 2 vertices and its
first vertices are those of every coarser one, as on fsaverage."""

from __future__ import annotations

from pathlib import Path

import mne
import nibabel.freesurfer as nfs
import numpy as np

from fairesi.headmodel.toy import _fibonacci_sphere

N_EEG = 16


def ico(grade: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosahedron of order ``grade``: vertices (n, 3) and triangles (m, 3)."""
    from mne.surface import _get_ico_surface

    surface = _get_ico_surface(grade)
    return surface["rr"].copy(), surface["tris"].copy()


def write_subject(subjects_dir: Path, subject: str, grade: int, radius_mm: float) -> None:
    """Subject whose ?h.white are icosahedron spheres (radius mm, centres x = -+40 mm) and
    whose ?h.sphere / ?h.sphere.reg are the same icosahedron (radius 100)."""
    surf = subjects_dir / subject / "surf"
    surf.mkdir(parents=True)
    rr, tris = ico(grade)
    for hemi, x in (("lh", -40.0), ("rh", 40.0)):
        nfs.write_geometry(str(surf / f"{hemi}.white"), rr * radius_mm + [x, 0.0, 10.0], tris)
        for name in ("sphere", "sphere.reg"):
            nfs.write_geometry(str(surf / f"{hemi}.{name}"), rr * 100.0, tris)


def eeg_forward(subjects_dir: Path, subject: str, spacing: str) -> mne.Forward:
    """Free-orientation EEG forward (N_EEG electrodes, 3-shell sphere, identity trans)."""
    src = mne.setup_source_space(
        subject,
        spacing=spacing,
        surface="white",
        subjects_dir=subjects_dir,
        add_dist=False,
        verbose="error",
    )
    names = [f"E{i + 1}" for i in range(N_EEG)]
    info = mne.create_info(names, 500.0, "eeg")
    positions = 0.095 * _fibonacci_sphere(N_EEG, z_min=-0.1)
    montage = mne.channels.make_dig_montage(
        ch_pos=dict(zip(names, positions, strict=True)), coord_frame="head"
    )
    info.set_montage(montage)
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=0.095, verbose="error")
    trans = mne.transforms.Transform("head", "mri", np.eye(4))
    return mne.make_forward_solution(info, trans, src, sphere, mindist=0.0, verbose="error")


def write_annot(subjects_dir: Path, subject: str, parc: str, grade: int = 5) -> list[str]:
    """Octant annotation with an 'unknown' cap; returns the region names per hemisphere."""
    names = ["unknown", *[f"oct{k}" for k in range(8)]]
    colors = np.array([[10 * k + 5, 20, 30, 0, 0] for k in range(len(names))], dtype=np.int32)
    colors[:, 4] = colors[:, 0] + colors[:, 1] * 2**8 + colors[:, 2] * 2**16
    rr, _ = ico(grade)
    codes = 1 + (rr[:, 0] > 0) + 2 * (rr[:, 1] > 0) + 4 * (rr[:, 2] > 0)
    codes[rr[:, 2] < -0.9] = 0  # the 'unknown' cap
    label_dir = subjects_dir / subject / "label"
    label_dir.mkdir(exist_ok=True)
    for hemi in ("lh", "rh"):
        nfs.write_annot(str(label_dir / f"{hemi}.{parc}.annot"), codes, colors, names)
    return names[1:]
