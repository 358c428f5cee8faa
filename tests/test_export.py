"""TorchScript export with fairesi_metadata.json, loading in Python, `fairesi export`.

The C++ runner's side of the round trip is in test_runner.py.
"""

import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch

from fairesi import export, ops
from fairesi.cli import main
from fairesi.data import normalise_input
from fairesi.export import (
    METADATA_FILE,
    _torch_deprecations_silenced,
    build_metadata,
    export_checkpoint,
    export_model,
    load_exported,
    read_metadata,
    with_refinement,
)
from fairesi.models import build_model
from fairesi.ops import SpectralTemporalRefine


def require_ops():
    """The op library is part of every build; only FAIRESI_NO_OPS=1 excuses its absence."""
    if os.environ.get("FAIRESI_NO_OPS") == "1":
        pytest.skip("FAIRESI_NO_OPS=1: op library disabled")
    assert ops.available(), "the fairesi op library (fairesi/lib/libfairesi_ops.so) is not built"


@pytest.fixture(scope="module")
def meg_model(toy_head_model):
    torch.manual_seed(0)
    model = build_model("fair_esi", toy_head_model, "meg", 120, preset="tiny", fused_refine=False)
    return model.eval()


def test_metadata_describes_head_model_and_data(toy_head_model):
    meta = build_metadata(toy_head_model, "eeg", 260, sfreq=500.0, model_name="fair_esi")
    lead_field = toy_head_model.lead_field("eeg")
    assert meta["ch_names"] == list(lead_field.ch_names)
    assert meta["ch_types"] == list(lead_field.ch_types)
    assert (meta["n_times"], meta["sfreq"], meta["modality"]) == (260, 500.0, "eeg")
    assert meta["n_regions"] == toy_head_model.n_regions == len(meta["region_names"])
    np.testing.assert_allclose(
        meta["region_centroids_mm"], toy_head_model.region_centroids_mm, rtol=1e-6
    )
    assert meta["normalisation"] == "deepsif"
    assert meta["output_layout"] == "regions x times"
    assert meta["torch_version"] == torch.__version__
    json.dumps(meta)  # JSON-able as stored
    with pytest.raises(ValueError, match="sfreq must be > 0"):
        build_metadata(toy_head_model, "eeg", 260, sfreq=0)
    with pytest.raises(ValueError, match="no .ecog. lead field"):
        build_metadata(toy_head_model, "ecog", 260)


@pytest.mark.parametrize("fused", [False, True])
def test_torchscript_round_trip(meg_model, toy_head_model, tmp_path, fused):
    if fused:
        require_ops()
    path = tmp_path / "model.pt"
    export_model(meg_model, path, build_metadata(toy_head_model, "meg", 120), fused_op=fused)

    with zipfile.ZipFile(path) as archive:
        stored = [n for n in archive.namelist() if n.endswith(f"extra/{METADATA_FILE}")]
        meta = json.loads(archive.read(stored[0]))
    assert meta == read_metadata(path)
    assert meta["format"] == "torchscript"
    assert meta["needs_ops_library"] is fused

    exported = load_exported(path)
    graph_ops = {node.kind() for node in exported.module.inlined_graph.nodes()}
    assert ("fairesi::spectral_temporal_refine" in graph_ops) is fused

    x = torch.randn(3, 48, 120, generator=torch.Generator().manual_seed(1)) * 1e-12
    with torch.no_grad():
        expected = meg_model(normalise_input(x))
    torch.testing.assert_close(exported(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(exported(x[1]), expected[1], rtol=0, atol=1e-5)
    # float64 input is computed in float32, like the runner does.
    torch.testing.assert_close(exported(x.double()), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(channels, times\).*\(48, 120\)"):
        exported(x[:, :40])


def test_with_refinement_swaps_modules_without_touching_the_model(meg_model):
    require_ops()
    fused = with_refinement(meg_model, True)
    kinds = {type(m).__name__ for m in fused.modules() if isinstance(m, SpectralTemporalRefine)}
    assert kinds == {"FusedSpectralTemporalRefine"}
    assert type(meg_model.refine) is SpectralTemporalRefine  # the original is unchanged
    back = with_refinement(fused, False)
    assert type(back.refine) is SpectralTemporalRefine
    assert (back.refine.tau, back.refine.alpha) == (meg_model.refine.tau, meg_model.refine.alpha)
    x = torch.randn(2, 48, 120)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), meg_model(x), rtol=0, atol=1e-5)


def test_jit_deprecation_is_silenced_and_nothing_else(meg_model, toy_head_model, tmp_path):
    path = tmp_path / "model.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(meg_model, path, build_metadata(toy_head_model, "meg", 120), fused_op=False)
        load_exported(path)
    assert not [w for w in caught if "torch.jit" in str(w.message)], [
        str(w.message) for w in caught
    ]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _torch_deprecations_silenced():
            warnings.warn(
                "`torch.jit.script` is deprecated. Please switch", DeprecationWarning, stacklevel=1
            )
            warnings.warn("some other deprecation", DeprecationWarning, stacklevel=1)
            warnings.warn(
                "`torch.jit.script` is deprecated, as a UserWarning", UserWarning, stacklevel=1
            )
    assert [str(w.message) for w in caught] == [
        "some other deprecation",
        "`torch.jit.script` is deprecated, as a UserWarning",
    ]


def test_read_metadata_refuses_foreign_files(meg_model, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_metadata(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip archive at all")
    with pytest.raises(ValueError, match="not a TorchScript or AOTInductor archive"):
        read_metadata(junk)
    bare = tmp_path / "bare.pt"
    with _torch_deprecations_silenced():
        torch.jit.script(with_refinement(meg_model, False)).save(str(bare))
    with pytest.raises(ValueError, match=f"has no {METADATA_FILE}"):
        read_metadata(bare)


def test_export_rejects_bad_options(meg_model, toy_head_model, tmp_path):
    meta = build_metadata(toy_head_model, "meg", 120)
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_model(meg_model, tmp_path / "m.onnx", meta, format="onnx")
    with pytest.raises(ValueError, match="fused_op=True is for TorchScript"):
        export_model(meg_model, tmp_path / "m.pt2", meta, format="aoti", fused_op=True)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    """The shared 'tiny' training run's best.pt (toy head model, synthetic bank)."""
    return tiny_run / "best.pt"


def test_export_checkpoint_and_cli(checkpoint, tmp_path, capsys):
    from fairesi.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    path = export_checkpoint(checkpoint, tmp_path / "api.pt", fused_op=False)
    meta = read_metadata(path)
    config = ckpt.config
    assert meta["ch_names"] == config["head_model"]["ch_names"]
    assert meta["n_times"] == config["data"]["n_times"]
    assert meta["model"] == config["model"]["name"]

    epoch = export.test_epoch(checkpoint)  # (not imported by name: pytest would collect it)
    assert epoch.shape == (len(meta["ch_names"]), meta["n_times"])
    assert epoch.dtype == np.float32 and np.isfinite(epoch).all()
    with torch.no_grad():
        expected = ckpt.model(normalise_input(torch.from_numpy(epoch)[None]))[0]
    torch.testing.assert_close(
        load_exported(path)(torch.from_numpy(epoch)), expected, rtol=0, atol=1e-5
    )

    out = tmp_path / "cli.pt"
    assert main(["export", str(checkpoint), "-o", str(out), "--no-fused-op"]) == 0
    assert f"wrote {out} (torchscript" in capsys.readouterr().out
    assert read_metadata(out)["needs_ops_library"] is False

    assert main(["export", str(tmp_path / "nope.pt"), "-o", str(out)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.pt2"), "--fused-op"]) == 2
    assert "--fused-op applies to TorchScript" in capsys.readouterr().err
