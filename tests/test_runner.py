"""The C++ runner fairesi-infer: round trips against Python, bad input, fuzzing the reader.

Needs the built runner (installed in fairesi/bin by the package build, or an in-place
development build). A missing runner fails these tests; set FAIRESI_NO_RUNNER=1 to skip
them in a build configured without it.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fairesi import ops
from fairesi.data import normalise_input
from fairesi.export import (
    _torch_deprecations_silenced,
    build_metadata,
    export_model,
    load_exported,
    read_metadata,
    runner_path,
    with_refinement,
)
from fairesi.headmodel import HeadModel
from fairesi.models import build_model
from fairesi.ops import make_refine

pytestmark = pytest.mark.skipif(
    os.environ.get("FAIRESI_NO_RUNNER") == "1", reason="FAIRESI_NO_RUNNER=1"
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"SimMEG": ("meg", 500), "SimEEG": ("eeg", 260)}
# Raw sensor data in the units of the head model's lead fields (T for MEG).
SCALE = 1e-12


def have_ops() -> bool:
    """The op library is part of every build; only FAIRESI_NO_OPS=1 excuses its absence."""
    if os.environ.get("FAIRESI_NO_OPS") == "1":
        return False
    assert ops.available(), "the fairesi op library (fairesi/lib/libfairesi_ops.so) is not built"
    return True


def infer(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(runner_path()), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.fixture(scope="module")
def sim_head_model():
    """A small head model with the SimMEG (306) and SimEEG (256) channel counts."""
    return HeadModel.toy(n_regions=40, n_eeg=256, n_meg=306)


@pytest.fixture(scope="module", params=[(d, f) for d in DATASETS for f in (False, True)])
def exported(request, sim_head_model, tmp_path_factory):
    """(model, path of its TorchScript export, metadata) for a dataset, with/without the op."""
    dataset, fused = request.param
    if fused and not have_ops():
        pytest.skip("FAIRESI_NO_OPS=1")
    modality, n_times = DATASETS[dataset]
    torch.manual_seed(0)
    model = build_model(
        "fair_esi", sim_head_model, modality, n_times, preset="tiny", fused_refine=False
    ).eval()
    path = tmp_path_factory.mktemp(dataset) / "model.pt"
    export_model(model, path, build_metadata(sim_head_model, modality, n_times), fused_op=fused)
    return model, path, read_metadata(path)


def test_round_trip_python_torchscript_runner(exported, tmp_path):
    model, path, meta = exported
    n_channels, n_times = len(meta["ch_names"]), meta["n_times"]
    x = torch.randn(3, n_channels, n_times, generator=torch.Generator().manual_seed(2)) * SCALE
    with torch.no_grad():
        eager = model(normalise_input(x))  # (3, R, T)
    torchscript = load_exported(path)(x)

    np.save(tmp_path / "batch.npy", x.numpy())
    infer(path, tmp_path / "batch.npy", tmp_path / "batch_out.npy", "--batch")
    batch_out = np.load(tmp_path / "batch_out.npy")

    assert batch_out.dtype == np.float32 and batch_out.shape == (3, meta["n_regions"], n_times)
    assert eager.abs().max() > 1e-3  # a real output, not zeros
    torch.testing.assert_close(torchscript, eager, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(batch_out), eager, rtol=0, atol=1e-5)


class PatchMixer(nn.Module):
    """Small non-recurrent network with the refinement, for a quick AOTInductor compile."""

    def __init__(self, n_channels: int, n_regions: int) -> None:
        super().__init__()
        self.refine = make_refine(0.1, 0.5, fused=False)
        self.mix = nn.Linear(n_channels, n_regions)
        self.smooth = nn.Conv1d(n_regions, n_regions, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = nn.functional.pad(x, (0, 8)).unfold(-1, 16, 8)  # (B, C, Np, 16)
        level = self.refine(patches).mean(dim=(-2, -1)).unsqueeze(-1)  # (B, C, 1)
        return torch.tanh(self.smooth(self.mix((x + level).transpose(1, 2)).transpose(1, 2)))


def test_aoti_package_round_trip_without_op_library(sim_head_model, tmp_path):
    modality, n_times = DATASETS["SimEEG"]
    torch.manual_seed(0)
    model = PatchMixer(256, sim_head_model.n_regions).eval()
    if have_ops():  # exported from a fused model: the package must compile the reference in
        model = with_refinement(model, True)
    path = tmp_path / "model.pt2"
    export_model(model, path, build_metadata(sim_head_model, modality, n_times), format="aoti")
    meta = read_metadata(path)
    assert (meta["format"], meta["needs_ops_library"]) == ("aoti", False)

    x = torch.randn(2, 256, n_times, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        eager = model(normalise_input(x))
    torch.testing.assert_close(load_exported(path)(x), eager, rtol=0, atol=1e-5)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "x0.npy", x[0].numpy())
    # No op library at all: the refinement is compiled into the package.
    infer(path, tmp_path / "x.npy", tmp_path / "y.npy", "--batch", "--ops-library", "/nonexistent")
    infer(path, tmp_path / "x0.npy", tmp_path / "y0.npy")
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "y.npy")), eager, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "y0.npy")), eager[0], rtol=0, atol=1e-5
    )


@pytest.fixture(scope="module")
def meg_export(sim_head_model, tmp_path_factory):
    """A SimMEG TorchScript export without the op (the bad-input cases' model)."""
    torch.manual_seed(0)
    model = build_model("fair_esi", sim_head_model, "meg", 500, preset="tiny", fused_refine=False)
    path = tmp_path_factory.mktemp("meg") / "model.pt"
    meta = build_metadata(sim_head_model, "meg", 500)
    export_model(model.eval(), path, meta, fused_op=False)
    return model, path, meta


def test_single_epoch_float64_big_endian(meg_export, tmp_path):
    model, path, meta = meg_export
    x = np.random.default_rng(3).standard_normal((len(meta["ch_names"]), meta["n_times"]))
    x *= SCALE
    np.save(tmp_path / "f32.npy", x.astype("<f4"))
    np.save(tmp_path / "f64be.npy", x.astype(">f8"))
    infer(path, tmp_path / "f32.npy", tmp_path / "a.npy", "--threads", "1")
    infer(path, tmp_path / "f64be.npy", tmp_path / "b.npy")
    single = np.load(tmp_path / "a.npy")  # (C, T) in, (R, T) out
    with torch.no_grad():
        eager = model(normalise_input(torch.from_numpy(x.astype(np.float32))[None]))[0]
    torch.testing.assert_close(torch.from_numpy(single), eager, rtol=0, atol=1e-5)
    # float64 is rounded to float32 first, exactly as numpy's astype does.
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "b.npy")), eager, rtol=0, atol=1e-5
    )


def _bad_model_files(model, good: Path, meta: dict, where: Path) -> dict[str, Path]:
    files = {"missing": where / "missing.pt", "empty": where / "empty.pt"}
    files["empty"].write_bytes(b"")
    files["corrupt"] = where / "corrupt.pt"
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated"] = where / "truncated.pt"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size * 3 // 5])
    with _torch_deprecations_silenced():
        scripted = torch.jit.script(with_refinement(model, False))
    files["no_metadata"] = where / "no_metadata.pt"
    scripted.save(str(files["no_metadata"]))
    files["bad_metadata"] = where / "bad_metadata.pt"
    broken = {k: v for k, v in meta.items() if k != "n_times"}
    scripted.save(
        str(files["bad_metadata"]), _extra_files={"fairesi_metadata.json": json.dumps(broken)}
    )
    # Crafted archives whose TorchScript source does not compile: libtorch raises a
    # torch::jit::ErrorReport (not a c10::Error) whose first line is the bare error or empty.
    for key, source in (("bad_code", b"def forward(self x):\n  return ((\n"), ("no_code", b"")):
        files[key] = where / f"{key}.pt"
        with zipfile.ZipFile(good) as archive, zipfile.ZipFile(files[key], "w") as crafted:
            for name in archive.namelist():
                is_code = "/code/" in name and name.endswith(".py")
                crafted.writestr(name, source if is_code else archive.read(name))
    return files


def _npy_files(where: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    good = (rng.standard_normal((306, 500)) * SCALE).astype(np.float32)
    arrays = {
        "int32": good.astype(np.int32),
        "fortran": np.asfortranarray(good),
        "channels": good[:300],
        "times": good[:, :400],
        "batch_without_flag": good[None],
        "one_dim": good[0],
        "four_dim": good[None, None],
        "nan": np.where(np.arange(good.size).reshape(good.shape) == 777, np.nan, good),
        "inf": np.where(np.arange(good.size).reshape(good.shape) == 5, -np.inf, good),
        "overflow": np.where(
            np.arange(good.size).reshape(good.shape) == 9, 1e300, good.astype(np.float64)
        ),
        "good": good,
    }
    files = {}
    for name, array in arrays.items():
        files[name] = where / f"{name}.npy"
        np.save(files[name], array)
    data = files["good"].read_bytes()
    files["truncated"] = where / "truncated.npy"
    files["truncated"].write_bytes(data[:-100])
    files["trailing"] = where / "trailing.npy"
    files["trailing"].write_bytes(data + b"\0" * 8)
    files["text"] = where / "text.npy"
    files["text"].write_text("306 500\n1 2 3\n")
    files["missing"] = where / "missing.npy"
    return files


# (case id, model file key, input file key, extra args, exit code, message fragment)
BAD_CASES = [
    ("model-missing", "missing", "good", [], 3, "missing.pt': no such file"),
    ("model-empty", "empty", "good", [], 3, "empty.pt': empty file"),
    ("model-corrupt", "corrupt", "good", [], 3, "not a readable TorchScript (.pt) or AOTInductor"),
    ("model-truncated", "truncated", "good", [], 3, "not a readable TorchScript"),
    ("model-no-metadata", "no_metadata", "good", [], 3, "has no fairesi_metadata.json"),
    ("model-bad-metadata", "bad_metadata", "good", [], 3, "JSON object has no key 'n_times'"),
    # The whole message, on one line: the error and the source it points at (issue 18).
    ("model-bad-code", "bad_code", "good", [], 3, "found 'ident' here: | Serialized"),
    ("model-bad-code-source", "bad_code", "good", [], 3, "def forward(self x): | ~ <--- HERE"),
    ("model-no-code", "no_code", "good", [], 3, "(Unknown type name '__torch__."),
    ("device-cuda", "good", "good", ["--device", "cuda"], 3, "no CUDA or no GPU"),
    ("device-bad", "good", "good", ["--device", "tpu"], 3, "device 'tpu' is not supported"),
    ("input-missing", "good", "missing", [], 4, "missing.npy': cannot open"),
    ("input-text", "good", "text", [], 4, "not a .npy file"),
    ("input-int32", "good", "int32", [], 4, "data type '<i4' is not supported"),
    ("input-fortran", "good", "fortran", [], 4, "Fortran order; save it in C order"),
    ("input-channels", "good", "channels", [], 4, "has 300 channels; the meg model expects 306"),
    ("input-times", "good", "times", [], 4, "has 400 time samples; the model expects 500"),
    ("input-3d-no-batch", "good", "batch_without_flag", [], 4, "use --batch"),
    ("input-2d-batch", "good", "good", ["--batch"], 4, "expected (batch, 306, 500)"),
    ("input-1d", "good", "one_dim", [], 4, "wrong number of dimensions"),
    ("input-4d", "good", "four_dim", ["--batch"], 4, "wrong number of dimensions"),
    ("input-truncated", "good", "truncated", [], 4, "truncated data: shape (306, 500)"),
    ("input-trailing", "good", "trailing", [], 4, "8 unexpected bytes after the data"),
    ("input-nan", "good", "nan", [], 4, "(epoch 0, channel 1, time 277) is NaN or infinite"),
    ("input-inf", "good", "inf", [], 4, "(epoch 0, channel 0, time 5) is NaN or infinite"),
    ("input-overflow", "good", "overflow", [], 4, "beyond the float32 range"),
    ("usage-option", "good", "good", ["--fast"], 2, "unknown option '--fast'"),
    ("usage-threads", "good", "good", ["--threads", "0"], 2, "--threads expects an integer >= 1"),
]


@pytest.fixture(scope="module")
def bad_files(meg_export, tmp_path_factory):
    model, good, meta = meg_export
    where = tmp_path_factory.mktemp("bad")
    models = _bad_model_files(model, good, meta, where)
    models["good"] = good
    return models, _npy_files(where)


@pytest.mark.parametrize(
    "model_key, input_key, extra, code, message",
    [c[1:] for c in BAD_CASES],
    ids=[c[0] for c in BAD_CASES],
)
def test_bad_input_gives_one_line_error_and_no_output(
    bad_files, tmp_path, model_key, input_key, extra, code, message
):
    models, inputs = bad_files
    out = tmp_path / "out" / "sources.npy"
    out.parent.mkdir()
    proc = infer(models[model_key], inputs[input_key], out, *extra, check_rc=code)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairesi-infer: error: "), proc.stderr
    assert message in lines[0]
    assert list(out.parent.iterdir()) == []  # no output, no temporary left behind


def test_failures_keep_an_existing_output(bad_files, tmp_path):
    models, inputs = bad_files
    out = tmp_path / "sources.npy"
    out.write_bytes(b"previous result")
    infer(models["good"], inputs["nan"], out, check_rc=4)
    assert out.read_bytes() == b"previous result"
    infer(models["good"], inputs["good"], out)
    assert np.load(out).shape == (40, 500)


def test_unwritable_output(bad_files, tmp_path):
    models, inputs = bad_files
    proc = infer(models["good"], inputs["good"], tmp_path / "no" / "dir" / "o.npy", check_rc=5)
    assert "cannot create a file in" in proc.stderr and "No such file or directory" in proc.stderr
    (tmp_path / "taken").mkdir()
    proc = infer(models["good"], inputs["good"], tmp_path / "taken", check_rc=5)
    assert "cannot rename the finished file onto it (Is a directory)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_model_needing_missing_op_library(sim_head_model, bad_files, tmp_path):
    if not have_ops():
        pytest.skip("FAIRESI_NO_OPS=1")
    models, inputs = bad_files
    model = build_model("fair_esi", sim_head_model, "meg", 500, preset="tiny", fused_refine=False)
    path = tmp_path / "fused.pt"
    export_model(model.eval(), path, build_metadata(sim_head_model, "meg", 500), fused_op=True)
    out = tmp_path / "out.npy"
    proc = infer(path, inputs["good"], out, "--ops-library", tmp_path / "nope.so", check_rc=3)
    assert "calls fairesi::spectral_temporal_refine and needs the fairesi op library" in proc.stderr
    assert "nope.so' does not exist" in proc.stderr
    assert not out.exists()
    # The default location next to the installed runner has it.
    infer(path, inputs["good"], out)


def test_metadata_timing_and_console_script(meg_export, bad_files, tmp_path):
    _, path, _ = meg_export
    _, inputs = bad_files
    printed = json.loads(infer(path, "--print-metadata").stdout)
    assert printed == read_metadata(path)

    proc = infer(path, inputs["good"], tmp_path / "o.npy", "--timing", "--repeat", "3")
    timing = json.loads(proc.stdout)
    assert (timing["format"], timing["batch"], timing["repeat"]["runs"]) == ("torchscript", 1, 3)
    assert 0 < timing["repeat"]["p50_ms"] <= timing["repeat"]["p99_ms"]
    assert timing["total_ms"] >= timing["load_model_ms"] + timing["infer_ms"]

    # `fairesi infer` and the fairesi-infer console script hand everything to the runner.
    out = tmp_path / "via_cli.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "fairesi", "infer", str(path), str(inputs["good"]), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "o.npy"))
    for command in (
        [sys.executable, "-c", "from fairesi.runner import main; main()", "--version"],
        [sys.executable, "-m", "fairesi", "infer", "--version"],  # options reach the runner
    ):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("fairesi-infer (libtorch"), command
    proc = subprocess.run(
        [sys.executable, "-m", "fairesi", "infer", "--timing", "--print-metadata", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout) == printed


SDK_PROJECT = """cmake_minimum_required(VERSION 3.20)
project(embed LANGUAGES CXX)
find_package(fairesi CONFIG REQUIRED)
add_executable(embed example_embed.cpp)
target_link_libraries(embed PRIVATE fairesi::runner)
file(WRITE "${CMAKE_BINARY_DIR}/ops_library.txt" "${fairesi_OPS_LIBRARY}")
"""


def test_installed_sdk_builds_the_embedding_example(sim_head_model, tmp_path):
    """docs/embedding.md: find_package(fairesi) -> fairesi::runner, outside this project."""
    from fairesi.runner import cmake_prefix_path

    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed to build fairesi and to use its C++ SDK"
    prefix = cmake_prefix_path()
    assert (prefix / "include" / "fairesi" / "runner.hpp").is_file()
    assert (prefix / "lib" / "libfairesi_runner.a").is_file()
    project = tmp_path / "project"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(SDK_PROJECT)
    shutil.copy(ROOT / "cpp" / "runner" / "example_embed.cpp", project)
    # Installed, the package finds the torch next to it; a source-tree build needs torch's.
    prefixes = [str(prefix), torch.utils.cmake_prefix_path]
    build = tmp_path / "build"
    for command in (
        [cmake, "-S", project, "-B", build, f"-DCMAKE_PREFIX_PATH={';'.join(prefixes)}"],
        [cmake, "--build", build, "-j", "2"],
    ):
        proc = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ops_library = (build / "ops_library.txt").read_text()
    assert ops_library == str(prefix / "lib" / "libfairesi_ops.so")

    torch.manual_seed(0)
    model = build_model("fair_esi", sim_head_model, "meg", 500, preset="tiny", fused_refine=False)
    path = tmp_path / "model.pt"
    fused = have_ops()
    export_model(model.eval(), path, build_metadata(sim_head_model, "meg", 500), fused_op=fused)
    argv = [str(build / "embed"), str(path)] + ([ops_library] if fused else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = read_metadata(path)["region_names"]
    assert proc.stdout.startswith("strongest region: ")
    assert proc.stdout.split(": ", 1)[1].split(" at (")[0] in names


def test_npy_reader_fuzzed_under_address_sanitizer():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz_npy.py"), "--count", "400", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "400 files" in proc.stdout and "no sanitizer report" in proc.stdout


def test_fused_eeg_meg_model_runs_in_the_runner(tmp_path):
    """A fused (EEG+MEG) export takes one input of C_eeg + C_meg channels, EEG first; the
    runner normalises each modality block on its own, like the training data (<= 1e-5)."""
    head = HeadModel.toy()
    torch.manual_seed(0)
    model = build_model("mmdf_esi", head, "eeg+meg", 64, preset="tiny").eval()
    path = tmp_path / "fused.pt"
    export_model(model, path, build_metadata(head, "eeg+meg", 64), fused_op=False)
    meta = read_metadata(path)
    assert meta["normalisation"] == "deepsif-per-modality" and meta["channel_groups"] == [32, 48]
    x = torch.randn(2, 80, 64, generator=torch.Generator().manual_seed(5))
    x[:, 32:] *= SCALE  # MEG in T, EEG in V: very different scales
    with torch.no_grad():
        eager = model(torch.cat([normalise_input(b) for b in x.split([32, 48], dim=1)], dim=1))
    np.save(tmp_path / "x.npy", x.numpy())
    infer(path, tmp_path / "x.npy", tmp_path / "y.npy", "--batch")
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "y.npy")), eager, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(load_exported(path)(x), eager, rtol=0, atol=1e-5)


def test_the_runner_never_writes_over_its_input(meg_export, tmp_path):
    """fairesi-infer M in.npy in.npy used to overwrite its own input (issue 18, case 2):
    refused (exit 2, one line) for any spelling of the input, the model too."""
    model, path, meta = meg_export
    x = np.random.default_rng(0).standard_normal((306, 500)).astype(np.float32) * SCALE
    source = tmp_path / "in.npy"
    np.save(source, x)
    before = source.read_bytes()
    (tmp_path / "link.npy").symlink_to(source)
    for output in (source, tmp_path / "." / "in.npy", tmp_path / "link.npy", path):
        proc = infer(path, source, output, check_rc=2)
        assert "is the input" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == before


def test_inputs_that_are_not_bounded_files_are_refused(meg_export, tmp_path):
    """A shape whose size overflows 64 bits, a directory and /dev/zero: exit 4 with one
    line, nothing written (issue 18, case 11)."""
    model, path, meta = meg_export
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (17179869184, 1073741824), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    huge = tmp_path / "huge.npy"
    huge.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    cases = {
        huge: "is too large (more than 2^34 values)",
        tmp_path: "not a regular file",
        Path("/dev/zero"): "not a regular file",
    }
    for source, message in cases.items():
        proc = infer(path, source, tmp_path / "out.npy", check_rc=4)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.npy").exists()
