"""`make wheel`: a manylinux wheel that pins its torch, installed into a fresh venv.

Builds the wheel with ``make wheel`` (reusing build/, so after ``make install`` only the
packaging runs), checks its tag, its torch pin and what auditwheel grafted, installs it into
a new virtual environment (pip resolves torch from the pin) and runs ``fairesi-infer`` and
``fairesi localize`` there on a tiny model that calls the fused op, against the results of
this checkout. Set FAIRESI_NO_WHEEL=1 to skip (e.g. without make or network access).
"""

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from fairesi import ops
from fairesi.export import build_metadata, export_model, load_exported
from fairesi.localize import localize
from fairesi.models import build_model

pytestmark = pytest.mark.skipif(
    os.environ.get("FAIRESI_NO_WHEEL") == "1", reason="FAIRESI_NO_WHEEL=1"
)

ROOT = Path(__file__).resolve().parents[1]
N_TIMES = 32


def _run(cmd, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FAIRESI_NO_OPS")}
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel() -> Path:
    """dist/fairesi-*-manylinux_*.whl, built by `make wheel` with this interpreter's venv."""
    _run(["make", "-C", ROOT, "wheel", f"VENV={sys.prefix}"])
    wheels = sorted((ROOT / "dist").glob("fairesi-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (torch and the rest resolved by pip)."""
    where = tmp_path_factory.mktemp("wheel_venv") / "venv"
    _run([sys.executable, "-m", "venv", where])
    _run([where / "bin/python", "-m", "pip", "install", "--quiet", "--no-compile", wheel])
    return where


def test_wheel_is_manylinux_and_pins_the_torch_it_was_built_against(wheel):
    assert re.fullmatch(r"fairesi-[^-]+-cp3\d+-cp3\d+-manylinux_2_\d+_x86_64\.whl", wheel.name)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        record = json.loads(archive.read("fairesi/lib/fairesi_build.json"))
    major, minor = version("torch").split(".")[:2]
    requires = re.findall(r"^Requires-Dist: (torch\b.*)$", meta.decode(), flags=re.M)
    assert requires == [f"torch=={major}.{minor}.*"]
    assert record == {"torch_version": torch.__version__}
    for part in ("fairesi/lib/libfairesi_ops.so", "fairesi/bin/fairesi-infer"):
        assert part in names
    # Nothing of torch's (nor libgomp, taken from torch) is grafted into the wheel.
    grafted = [n for n in names if n.startswith("fairesi.libs/")]
    assert not [n for n in grafted if re.search(r"lib(torch|c10|gomp)", n)], grafted


@pytest.fixture(scope="module")
def tiny_export(toy_head_model, tmp_path_factory):
    """A tiny MEG FAIR-ESI export calling the fused op (or not, with FAIRESI_NO_OPS=1 here),
    a recording for it and the toy head model."""
    where = tmp_path_factory.mktemp("wheel_model")
    torch.manual_seed(0)
    model = build_model("fair_esi", toy_head_model, "meg", N_TIMES, preset="tiny").eval()
    path = where / "model.pt"
    export_model(model, path, build_metadata(toy_head_model, "meg", N_TIMES, sfreq=500.0))
    toy_head_model.save(where / "toy.npz")
    lead_field = toy_head_model.lead_field("meg")
    info = mne.create_info(lead_field.ch_names, 500.0, lead_field.ch_types)
    data = np.random.default_rng(0).standard_normal((len(info.ch_names), 64)) * 1e-12
    mne.EvokedArray(data, info, verbose="error").save(where / "rec-ave.fif", verbose="error")
    np.save(where / "epoch.npy", data[:, :N_TIMES].astype(np.float32))
    return where


def test_runner_and_localize_from_the_installed_wheel(venv, tiny_export, toy_head_model):
    where = tiny_export
    bin_dir = venv / "bin"
    # The venv runs the installed wheel (not this checkout) with the torch pip chose for it.
    probe = _run(
        [
            bin_dir / "python",
            "-c",
            "import fairesi, fairesi.ops, torch; "
            "print(fairesi.__file__, torch.__version__, fairesi.ops.available())",
        ],
        cwd=where,
    ).stdout.split()
    assert str(venv) in probe[0] and "site-packages" in probe[0]
    assert probe[1].split(".")[:2] == torch.__version__.split(".")[:2]
    assert probe[2] == "True"
    exported = load_exported(where / "model.pt")
    assert exported.metadata["needs_ops_library"] == ops.available()

    _run([bin_dir / "fairesi-infer", "model.pt", "epoch.npy", "out.npy"], cwd=where)
    x = torch.from_numpy(np.load(where / "epoch.npy"))
    expected = exported(x[None])[0]
    torch.testing.assert_close(torch.from_numpy(np.load(where / "out.npy")), expected)

    _run(
        [bin_dir / "fairesi", "localize", "model.pt", "rec-ave.fif", "-o", "est"]
        + ["--head-model", "toy.npz"],
        cwd=where,
    )
    ours = localize(where / "model.pt", mne.read_evokeds(where / "rec-ave.fif", verbose="error")[0],
                    head_model=toy_head_model)  # fmt: skip
    theirs = mne.read_source_estimate(where / "est", subject=ours.subject)
    np.testing.assert_allclose(theirs.data, ours.data, rtol=1e-4, atol=1e-6)
