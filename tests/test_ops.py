"""The fused spectral-temporal refinement op against the PyTorch reference.

The op library is part of every build, so its absence fails these tests; set
``FAIRESI_NO_OPS=1`` to run the suite on a build made without it (the tests are then
skipped, and the models use the reference).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fairesi import ops
from fairesi.ops import (
    SpectralTemporalRefine,
    make_refine,
    spectral_temporal_refine_reference,
)

if os.environ.get("FAIRESI_NO_OPS") == "1":
    pytest.skip("FAIRESI_NO_OPS=1: the op library is not used", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def test_library_is_loaded():
    assert ops.available(), (
        f"fairesi.ops could not load the op library: {ops._library.unavailable_reason()}; "
        "build the package with CMake"
    )
    assert ops.library_path() is not None
    assert ops._library.unavailable_reason() is None


def test_library_is_found_in_every_package_directory(monkeypatch, tmp_path):
    # An editable install keeps the Python files in python/fairesi/ and installs the built
    # library into site-packages/fairesi/lib/, a second entry of fairesi.__path__.
    import fairesi

    installed = tmp_path / "site-packages" / "fairesi"
    (installed / "lib").mkdir(parents=True)
    (installed / "lib" / ops._library.LIBRARY_FILE).write_bytes(b"")
    source = tmp_path / "src" / "fairesi"
    source.mkdir(parents=True)
    monkeypatch.setattr(fairesi, "__path__", [str(source), str(installed)])
    monkeypatch.setattr(ops._library.importlib.resources, "files", lambda name: source)
    assert ops._library.search_dirs() == [source.resolve() / "lib", installed.resolve() / "lib"]
    assert ops.library_path() == installed.resolve() / "lib" / ops._library.LIBRARY_FILE
    (installed / "lib" / ops._library.LIBRARY_FILE).unlink()
    assert ops.library_path() is None


def test_importing_ops_loads_no_network():
    # fairesi.ops is the layer below fairesi.models: importing it must not load the models
    # (nor what they need, e.g. scipy).
    code = (
        "import sys, fairesi.ops\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fairesi.models', 'scipy'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "python")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _op():
    return torch.ops.fairesi.spectral_temporal_refine


def _patches(shape, scale=1.0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("tau,alpha", [(0.1, 0.5), (0.1, 1.0), (0.1, 0.0), (1.0, 0.3)])
def test_forward_matches_reference_float32(scale, tau, alpha):
    # 3 x 5 x 7 = 105 patches: 13 full SIMD bundles of 8 and a partial one.
    x = _patches((3, 5, 7, 16), scale)
    out = _op()(x, tau, alpha)
    torch.testing.assert_close(out, spectral_temporal_refine_reference(x, tau, alpha))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.0])
def test_forward_matches_reference_float64(alpha):
    x = _patches((4, 9, 16), 3.0, torch.float64)
    out = _op()(x, 0.2, alpha)
    torch.testing.assert_close(
        out, spectral_temporal_refine_reference(x, 0.2, alpha), rtol=1e-12, atol=1e-14
    )


def test_spectral_view_by_hand():
    # A constant patch c: rfft puts 16c in the DC bin and 0 elsewhere. With tau = 1 the real
    # softmax is (e^{16c}, 1, ..., 1) / (e^{16c} + 8) and the imaginary one is uniform 1/9,
    # which irfft ignores in bins 0 and 8 and which cancels in bins 1..7 only through the
    # sine sums: y_n = (a_0 + (-1)^n a_8 + 2 sum_k (a_k cos - b_k sin)) / 16.
    c = 0.1
    x = torch.full((1, 16), c, dtype=torch.float64)
    out = _op()(x, 1.0, 1.0)
    a = torch.ones(9, dtype=torch.float64)
    a[0] = torch.exp(torch.tensor(16 * c, dtype=torch.float64))
    a = a / a.sum()
    n = torch.arange(16, dtype=torch.float64)
    k = torch.arange(1, 8, dtype=torch.float64)[:, None]
    angle = 2 * torch.pi * k * n / 16
    expected = (
        a[0]
        + a[8] * (-1.0) ** n
        + 2 * (a[1:8, None] * torch.cos(angle) - torch.sin(angle) / 9).sum(0)
    ) / 16
    torch.testing.assert_close(out[0], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(dtype):
    x = _patches((6, 11, 16), 2.0, dtype)
    out = _op()(x, 0.1, 0.5)
    assert out.dtype == dtype
    # The reference also computes in float32 and rounds once at the end.
    expected = spectral_temporal_refine_reference(x, 0.1, 0.5)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), expected.float(), rtol=eps, atol=1e-5)


def test_strided_inputs_are_accepted():
    signal = _patches((2, 3, 100), 2.0)
    patches = signal.unfold(-1, 16, 8)  # overlapping view, as FAIR-ESI's patching makes
    assert not patches.is_contiguous()
    out = _op()(patches, 0.1, 0.5)
    assert out.is_contiguous()
    torch.testing.assert_close(out, spectral_temporal_refine_reference(patches, 0.1, 0.5))
    transposed = _patches((16, 5), 2.0).t()
    torch.testing.assert_close(
        _op()(transposed, 0.1, 0.5), spectral_temporal_refine_reference(transposed, 0.1, 0.5)
    )


def test_non_finite_patches_give_nan_like_the_reference():
    # NaN and inf must not be hidden by the clamps of the vectorised exp.
    x = _patches((10, 16), 1.0)
    x[3, 5] = float("nan")
    x[7, 0] = float("inf")
    out = _op()(x, 0.1, 0.5)
    expected = spectral_temporal_refine_reference(x, 0.1, 0.5)
    assert torch.equal(out.isnan(), expected.isnan())
    assert out[3].isnan().all() and out[7].isnan().all()


def test_empty_input():
    x = torch.empty(0, 3, 16)
    assert _op()(x, 0.1, 0.5).shape == (0, 3, 16)


@pytest.mark.parametrize("tau,alpha", [(0.1, 0.5), (0.7, 0.3), (0.3, 1.0), (0.3, 0.0)])
def test_gradcheck_float64(tau, alpha):
    x = _patches((2, 5, 16), 1.0, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: _op()(p, tau, alpha), (x,))


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_backward_matches_reference_autograd(scale):
    # float32 op backward against autograd through the float64 reference.
    x = _patches((3, 7, 16), scale)
    grad = _patches((3, 7, 16), 1.0, seed=1)
    x_op = x.clone().requires_grad_()
    _op()(x_op, 0.1, 0.5).backward(grad)
    x_ref = x.double().requires_grad_()
    spectral_temporal_refine_reference(x_ref, 0.1, 0.5).backward(grad.double())
    torch.testing.assert_close(x_op.grad, x_ref.grad.float(), rtol=1e-4, atol=1e-4)


def test_backward_half_type():
    x = _patches((4, 16), 1.0, torch.bfloat16).requires_grad_()
    _op()(x, 0.1, 0.5).sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_opcheck():
    samples = [
        (_patches((3, 4, 16), 1.0), 0.1, 0.5),
        (_patches((2, 16), 5.0, torch.float64), 0.5, 1.0),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.fairesi.spectral_temporal_refine.default, args)
        x = args[0].clone().requires_grad_()
        torch.library.opcheck(torch.ops.fairesi.spectral_temporal_refine.default, (x, *args[1:]))
    grad = _patches((3, 4, 16), 1.0, seed=2)
    torch.library.opcheck(
        torch.ops.fairesi.spectral_temporal_refine_backward.default,
        (grad, _patches((3, 4, 16), 1.0), 0.1, 0.5),
    )


def test_torch_compile_traces_through_the_fake_kernel():
    # aot_eager runs Dynamo and AOTAutograd (fake tensors, the joint forward/backward
    # graph) without Inductor's C++ code generation, which is slow on a 2-core box.
    def f(p):
        return (_op()(p * 2.0, 0.1, 0.5) ** 2).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    x = _patches((2, 6, 16), 1.0)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    f(x1).backward()
    compiled(x2).backward()
    torch.testing.assert_close(x2.grad, x1.grad)


def test_script_save_load_run(tmp_path):
    module = ops.FusedSpectralTemporalRefine(0.1, 0.5)
    scripted = torch.jit.script(module)
    path = tmp_path / "refine.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    assert "fairesi.spectral_temporal_refine" in loaded.code
    x = _patches((2, 3, 5, 16), 2.0)
    torch.testing.assert_close(loaded(x), spectral_temporal_refine_reference(x, 0.1, 0.5))


def test_script_archive_needs_only_the_library(tmp_path):
    # A fresh process that loads just the .so (no fairesi import) runs the archive.
    path = tmp_path / "refine.pt"
    torch.jit.script(ops.FusedSpectralTemporalRefine(0.1, 0.5)).save(str(path))
    code = (
        "import sys, torch\n"
        f"torch.ops.load_library({str(ops.library_path())!r})\n"
        f"m = torch.jit.load({str(path)!r})\n"
        "print(float(m(torch.ones(1, 16)).sum()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(1.0)  # both views are distributions


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3, 15), 0.1, 0.5), "last dimension of 16"),
        ((torch.zeros(()), 0.1, 0.5), "last dimension of 16"),
        ((torch.zeros(3, 16, dtype=torch.int64), 0.1, 0.5), "float32, float64, float16"),
        ((torch.zeros(3, 16, dtype=torch.complex64), 0.1, 0.5), "float32, float64, float16"),
        ((torch.zeros(3, 16), 0.0, 0.5), "tau must be a finite number > 0"),
        ((torch.zeros(3, 16), -1.0, 0.5), "tau must be a finite number > 0"),
        ((torch.zeros(3, 16), float("nan"), 0.5), "tau must be a finite number > 0"),
        ((torch.zeros(3, 16), 0.1, 1.5), r"alpha must be in \[0, 1\]"),
    ],
)
def test_forward_input_checks(args, match):
    with pytest.raises(RuntimeError, match=match):
        _op()(*args)


def test_backward_input_checks():
    backward = torch.ops.fairesi.spectral_temporal_refine_backward
    x = torch.zeros(3, 16)
    with pytest.raises(RuntimeError, match="grad must have the shape of patches"):
        backward(torch.zeros(2, 16), x, 0.1, 0.5)
    with pytest.raises(RuntimeError, match="grad must have the dtype of patches"):
        backward(torch.zeros(3, 16, dtype=torch.float64), x, 0.1, 0.5)


def test_make_refine_selects_the_op():
    assert type(make_refine(0.1, 0.5)) is ops.FusedSpectralTemporalRefine
    assert type(make_refine(0.1, 0.5, fused=True)) is ops.FusedSpectralTemporalRefine
    assert type(make_refine(0.1, 0.5, fused=False)) is SpectralTemporalRefine
    assert type(make_refine(0.1, 0.5, patch_len=8)) is SpectralTemporalRefine
    with pytest.raises(ValueError, match="patch_len 16, got 8"):
        make_refine(0.1, 0.5, fused=True, patch_len=8)
    with pytest.raises(ValueError, match="alpha must be in"):
        ops.FusedSpectralTemporalRefine(0.1, 2.0)


def test_make_refine_without_library(monkeypatch):
    monkeypatch.setattr(ops._library, "_LOADED", False)
    monkeypatch.setattr(ops._library, "library_path", lambda: None)
    monkeypatch.delenv("FAIRESI_NO_OPS", raising=False)
    monkeypatch.setattr(ops.refine, "_warned_fallback", False)
    with pytest.warns(UserWarning, match="pure-PyTorch reference") as record:
        assert type(make_refine(0.1, 0.5)) is SpectralTemporalRefine
    assert "libfairesi_ops.so was not built" in str(record[0].message)
    assert "build the package" in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller of make_refine
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        assert type(make_refine(0.1, 0.5)) is SpectralTemporalRefine
        # Asking for the reference, or for a reading the op lacks, is no reason to warn.
        assert type(make_refine(0.1, 0.5, fused=False)) is SpectralTemporalRefine
    with pytest.raises(RuntimeError, match="fused op library is not loaded"):
        make_refine(0.1, 0.5, fused=True)


def test_make_refine_warning_names_fairesi_no_ops(monkeypatch):
    monkeypatch.setattr(ops._library, "_LOADED", False)
    monkeypatch.setattr(ops.refine, "_warned_fallback", False)
    monkeypatch.setenv("FAIRESI_NO_OPS", "1")
    with pytest.warns(UserWarning, match="FAIRESI_NO_OPS=1 is set.*unset FAIRESI_NO_OPS"):
        make_refine(0.1, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_refine(0.1, 0.5, patch_len=8)  # the op could not serve it anyway
        make_refine(0.1, 0.5, form="weights")
    with pytest.raises(RuntimeError, match="FAIRESI_NO_OPS=1 is set"):
        ops.FusedSpectralTemporalRefine(0.1, 0.5)


def test_fair_esi_fused_equals_reference():
    from fairesi.models.fair_esi import FairEsi, FairEsiConfig

    config = FairEsiConfig.preset("tiny", n_channels=6, n_regions=10, n_times=40)
    torch.manual_seed(0)
    fused = FairEsi(config)
    reference = FairEsi(
        FairEsiConfig.preset("tiny", n_channels=6, n_regions=10, n_times=40, fused_refine=False)
    )
    reference.load_state_dict(fused.state_dict())
    assert isinstance(fused.refine, ops.FusedSpectralTemporalRefine)
    assert type(reference.refine) is SpectralTemporalRefine
    x = _patches((3, 6, 40), 1.0)
    torch.testing.assert_close(fused(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    # Compile only, against the torch wheel's headers: catches CUDA errors on machines
    # without a GPU or a CUDA build of torch. The CPU wheel lacks the generated
    # cuda_cmake_macros.h, which only defines an export macro for Windows DLLs.
    include = Path(torch.__file__).parent / "include"
    cmd = [
        "nvcc",
        "-c",
        "-std=c++17",
        "-arch=sm_80",
        "-Xcompiler=-fPIC",
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        "-diag-suppress=3306",
        f"-I{include}",
        f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-I{ROOT / 'cpp' / 'ops'}",
        str(ROOT / "cpp" / "ops" / "cuda" / "refine_cuda.cu"),
        "-o",
        str(tmp_path / "refine_cuda.o"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "refine_cuda.o").stat().st_size > 0


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.0])
def test_cuda_forward_and_backward_match_cpu(dtype, alpha):
    # 1000 patches: several blocks of 128 threads and a partial last one.
    x = _patches((10, 100, 16), 3.0, dtype)
    grad = _patches((10, 100, 16), 1.0, dtype, seed=1)
    x_cpu = x.clone().requires_grad_()
    x_gpu = x.cuda().requires_grad_()
    out_cpu = _op()(x_cpu, 0.1, alpha)
    out_gpu = _op()(x_gpu, 0.1, alpha)
    out_cpu.backward(grad)
    out_gpu.backward(grad.cuda())
    tol = {} if dtype in (torch.float32, torch.float64) else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, **tol)
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, **tol)


@cuda
def test_cuda_gradcheck_and_opcheck():
    x = _patches((3, 5, 16), 1.0, torch.float64).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: _op()(p, 0.3, 0.5), (x,))
    torch.library.opcheck(
        torch.ops.fairesi.spectral_temporal_refine.default, (_patches((4, 16)).cuda(), 0.1, 0.5)
    )


@cuda
def test_cuda_strided_input():
    signal = _patches((2, 3, 100), 2.0).cuda()
    patches = signal.unfold(-1, 16, 8)
    torch.testing.assert_close(
        _op()(patches, 0.1, 0.5), spectral_temporal_refine_reference(patches, 0.1, 0.5)
    )
