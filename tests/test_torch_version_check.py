"""The op library's check of the torch it was built against (fairesi._build).

With another torch installed, importing the op library, ``fairesi train``, ``fairesi
localize`` (of a model that calls the op) and ``fairesi-infer`` say in one line which torch to
install, instead of libtorch's ``undefined symbol`` and a traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairesi import _build, runner
from fairesi.ops import _library

EXPECTED = (
    "fairesi was built against torch 2.13.x but torch 2.11.0 is installed; "
    "pip install 'torch==2.13.*' or rebuild fairesi"
)


def test_mismatch_message_is_one_line_naming_what_to_install():
    assert _build.torch_mismatch("2.13.0+cpu", "2.11.0") == EXPECTED
    assert _build.torch_mismatch("2.13.0", "3.13.0").startswith(
        "fairesi was built against torch 2.13.x but torch 3.13.0 is installed"
    )
    # The same minor release (any patch, CPU or CUDA build) fits; unknown versions pass.
    for built, installed in [("2.13.0+cpu", "2.13.1"), ("2.13.0", "2.13.0+cu128")]:
        assert _build.torch_mismatch(built, installed) is None
    assert _build.torch_mismatch(None, "2.11.0") is None
    assert _build.torch_mismatch("2.13.0", None) is None


def test_the_build_records_the_torch_it_compiled_against():
    path = _library.library_path()
    if path is None:
        assert os.environ.get("FAIRESI_NO_OPS") == "1", "the op library is not built"
        pytest.skip("FAIRESI_NO_OPS=1")
    recorded = _build.built_torch_version(path.parent)
    if recorded is None and "site-packages" not in path.parts:
        pytest.skip(f"{path} is an in-place build older than the record; rebuild it")
    assert recorded == torch.__version__
    _build.check_torch(path.parent, torch.__version__)  # no error: this is that torch


def test_check_reads_the_record(tmp_path):
    (tmp_path / _build.BUILD_INFO_FILE).write_text('{"torch_version": "2.13.0+cpu"}')
    assert _build.built_torch_version(tmp_path) == "2.13.0+cpu"
    with pytest.raises(_build.TorchVersionError) as err:
        _build.check_torch(tmp_path, "2.11.0", hint="or else")
    assert str(err.value) == f"{EXPECTED}; or else"
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)
    (tmp_path / _build.BUILD_INFO_FILE).write_text("not json")
    assert _build.built_torch_version(tmp_path) is None


def test_loading_the_library_under_another_torch_raises_one_line(monkeypatch):
    if _library.library_path() is None:
        pytest.skip("the op library is not built")
    monkeypatch.delenv(_library.NO_OPS_ENV, raising=False)
    monkeypatch.setattr(_build, "built_torch_version", lambda lib_dir: "2.11.0")
    with pytest.raises(_build.TorchVersionError) as err:
        _library._load()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"fairesi was built against torch 2.11.x but torch {torch.__version__} is installed; "
        "pip install 'torch==2.11.*' or rebuild fairesi; or set FAIRESI_NO_OPS=1"
    )
    # FAIRESI_NO_OPS=1 skips the library, and so the check.
    monkeypatch.setenv(_library.NO_OPS_ENV, "1")
    assert _library._load() is False


def test_fairesi_infer_under_another_torch(monkeypatch, capsys):
    monkeypatch.setattr(_build, "installed_torch_version", lambda: "2.11.0")
    lib_dir = Path(runner.__file__).resolve().parent / "lib"
    if _build.built_torch_version(lib_dir) is None:
        pytest.skip("no build record next to fairesi/runner.py (runner not built here)")
    assert runner.main(["--version"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "but torch 2.11.0 is installed; pip install 'torch==" in err


# A child process whose build record says torch 2.11: importing fairesi.ops then fails the
# way it would with a wheel built for 2.11 under this torch.
_CHILD = """
import sys
import fairesi._build as b
b.built_torch_version = lambda lib_dir: "2.11.0"
from fairesi.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_under_other_torch(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "FAIRESI_NO_OPS"}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_train_and_localize_say_one_line_not_a_traceback(tmp_path, toy_head_model):
    if _library.library_path() is None:
        pytest.skip("the op library is not built")
    import mne
    import numpy as np

    from fairesi.export import build_metadata, export_model
    from fairesi.models import build_model

    torch.manual_seed(0)
    model = build_model("fair_esi", toy_head_model, "meg", 32, preset="tiny").eval()
    export_model(model, tmp_path / "m.pt", build_metadata(toy_head_model, "meg", 32), fused_op=True)
    toy_head_model.save(tmp_path / "toy.npz")
    lead_field = toy_head_model.lead_field("meg")
    info = mne.create_info(lead_field.ch_names, 500.0, lead_field.ch_types)
    data = np.random.default_rng(0).standard_normal((len(info.ch_names), 64)) * 1e-12
    mne.EvokedArray(data, info, verbose="error").save(tmp_path / "rec-ave.fif", verbose="error")

    runs = {
        "train": ["train", "--preset", "tiny", "--max-steps", "1", "--out", tmp_path / "run"],
        "localize": [
            "localize", tmp_path / "m.pt", tmp_path / "rec-ave.fif", "-o", tmp_path / "est",
            "--head-model", tmp_path / "toy.npz",
        ],
    }  # fmt: skip
    for command, args in runs.items():
        proc = _cli_under_other_torch(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(
            f"fairesi {command}: error: fairesi was built against torch 2.11.x but torch "
        ), lines[0]
        assert "pip install 'torch==2.11.*'" in lines[0]
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob("est*"))
