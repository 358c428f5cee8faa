"""Issue 18 (reliability): SIGTERM and damaged shards in the resumable writers, and user
errors that must be one line with exit 2 and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import fairesi
import fairesi.cli
import fairesi.data.h5
import fairesi.simulate.bank as bank_module
from fairesi.data import DatasetFile, SimConfig, Synthesizer, write_dataset
from fairesi.simulate import Connectome, WaveformBank, build_bank

# Runs `fairesi ARGS` with dataset shards of 6 samples, each synthesis step and each
# merged row slowed down by the given seconds (so that a signal lands where the test
# wants it), and prints how many steps it synthesised.
_SLOW_CLI = textwrap.dedent(
    """
    import sys, time
    import fairesi.data.h5 as h5
    from fairesi.data import Synthesizer

    h5._SHARD_SAMPLES = 6
    compose_delay, copy_delay = float(sys.argv[1]), float(sys.argv[2])
    compose, copy_rows, calls = Synthesizer._compose, h5._copy_rows, []

    def slow_compose(self, split, index, draw=0):
        calls.append(index.tolist())
        time.sleep(compose_delay)
        return compose(self, split, index, draw)

    def slow_copy(*args):
        time.sleep(copy_delay)
        return copy_rows(*args)

    Synthesizer._compose, h5._copy_rows = slow_compose, slow_copy
    from fairesi.cli import main

    code = main(sys.argv[3:])
    print("composed", sum(len(c) for c in calls), flush=True)
    sys.exit(code)
    """
)


def _env() -> dict[str, str]:
    """The environment of a child ``fairesi``: the package under test first on the path."""
    root = str(Path(fairesi.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def dataset_inputs(toy_head_model, tmp_path_factory):
    """(head model file, bank file, synthesizer) of the dataset CLI tests."""
    where = tmp_path_factory.mktemp("inputs")
    bank = WaveformBank.synthetic(toy_head_model.n_regions, n_spikes=64, segment_len=500, seed=0)
    toy_head_model.save(where / "toy.npz")
    bank.save(where / "bank.h5")
    config = SimConfig.preset("SimEEG", n_rings=1, n_samples=1200)
    return where / "toy.npz", where / "bank.h5", Synthesizer(toy_head_model, bank, config, seed=0)


def _dataset_argv(inputs, out: Path, n: int) -> list[str]:
    head, bank, _ = inputs
    return [
        "simulate", "dataset", "--config", "SimEEG", "--n-rings", "1", "--n-samples", "1200",
        "--split", "train", "--n", str(n), "--batch-size", "2", "--no-progress",
        "--head-model", str(head), "--bank", str(bank), "--out", str(out),
    ]  # fmt: skip


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the writer"
        time.sleep(0.02)


@pytest.mark.parametrize("stage", ["shards", "merge"])
def test_sigterm_stops_simulate_dataset_cleanly_and_a_rerun_resumes(
    dataset_inputs, tmp_path, stage
):
    """Case 8: SIGTERM while shards are written, or while they are merged, ends the
    command with 143 and one line; finished shards stay, no temporary file or lock is
    left, and running the command again resumes to the uninterrupted result."""
    out = tmp_path / "d.h5"
    shard_dir = tmp_path / "d.h5.shards"
    n = 30  # five shards of six samples
    argv = _dataset_argv(dataset_inputs, out, n)
    delays = ["0.05", "0"] if stage == "shards" else ["0", "0.05"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, *delays, *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if stage == "shards":
            _wait_for(lambda: len(list(shard_dir.glob("0*.h5"))) >= 2, proc)
        else:
            _wait_for(lambda: any(tmp_path.glob(".d.h5.*.part")), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["fairesi simulate: terminated; finished work was kept"], err
    kept = sorted(p.name for p in shard_dir.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5.shards"]  # no part, no lock
    assert all(not name.startswith(".") for name in kept), kept
    assert len(kept) >= 2 and (stage == "shards" or len(kept) == 5), kept

    rerun = subprocess.run(
        [sys.executable, "-c", _SLOW_CLI, "0", "0", *argv],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"composed {n - 6 * len(kept)}" in rerun.stdout  # kept shards are not redone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
    synth = dataset_inputs[2]
    got, expected = DatasetFile(out).batch(range(n)), synth.batch("train", torch.arange(n))
    assert torch.equal(got.x, expected.x) and torch.equal(got.target, expected.target)


def test_damaged_dataset_shards_are_written_again(dataset_inputs, tmp_path, monkeypatch, capsys):
    """Case 8: a truncated shard, one with a corrupt chunk and one of an empty file are
    discarded with a one-line warning each and written again, instead of failing."""
    monkeypatch.setattr(fairesi.data.h5, "_SHARD_SAMPLES", 3)
    synth = dataset_inputs[2]
    path = tmp_path / "train.h5"
    compose = Synthesizer._compose
    calls = []

    def interrupted(self, split, index, draw=0):
        calls.append(int(index[0]))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return compose(self, split, index, draw)

    monkeypatch.setattr(Synthesizer, "_compose", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, synth, "train", 10, batch_size=3, progress=False)
    shard_dir = tmp_path / "train.h5.shards"
    shards = sorted(shard_dir.iterdir())
    assert [p.name for p in shards] == ["000000000-3.h5", "000000003-3.h5", "000000006-3.h5"]
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])  # truncated
    with h5py.File(shards[1], "r") as f:
        info = f["x"].id.get_chunk_info(1)
    data = bytearray(shards[1].read_bytes())
    middle = info.byte_offset + info.size // 2
    data[middle : middle + 16] = bytes(16)  # a corrupt chunk: the file still opens
    shards[1].write_bytes(bytes(data))
    shards[2].write_bytes(b"")  # empty
    capsys.readouterr()

    counted = []

    def counting(self, split, index, draw=0):
        counted.append(int(index[0]))
        return compose(self, split, index, draw)

    monkeypatch.setattr(Synthesizer, "_compose", counting)
    write_dataset(path, synth, "train", 10, batch_size=3, progress=False)
    assert counted == [0, 3, 6, 9]  # the three damaged shards and the one never written
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3, warnings
    for shard, line in zip(shards, warnings, strict=True):
        assert line.startswith(f"fairesi: warning: dataset shard {shard} is corrupt"), line
        assert line.endswith("discarding it and writing it again"), line
    assert [p.name for p in tmp_path.iterdir()] == ["train.h5"]
    got, expected = DatasetFile(path).batch(range(10)), synth.batch("train", torch.arange(10))
    assert torch.equal(got.x, expected.x) and torch.equal(got.target, expected.target)


def test_damaged_bank_shards_are_run_again(tmp_path, monkeypatch, capsys):
    """Case 8: a resumed bank build whose shard .npz is truncated (or empty, or has a bad
    CRC) used to die with EOFError/BadZipFile; such a shard is run again, with one line."""
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(30, 3))
    connectome = Connectome.from_geometry(70.0 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True))
    build = dict(
        run_duration_s=8.0, background_s=3.0, settings=((0.083, 1.5),), min_spikes=1,
        max_rounds=2, seed=11, n_threads=2,
    )  # fmt: skip
    reference = build_bank(connectome, shard_dir=tmp_path, **build)
    shards = sorted(tmp_path.glob("*/*.npz"))
    assert len(shards) >= 3
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    shards[1].write_bytes(b"")
    with zipfile.ZipFile(shards[2]) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(shards[2].read_bytes())
    header = member.header_offset  # the local header: 30 bytes, the name, the extra field
    name_length = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    data[start + member.file_size // 2] ^= 0xFF  # inside the largest array: a bad CRC
    shards[2].write_bytes(bytes(data))
    capsys.readouterr()

    calls = []
    real = bank_module.simulate_network

    def counting(*args, **kwargs):
        calls.append(kwargs["run_offset"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bank_module, "simulate_network", counting)
    resumed = build_bank(connectome, shard_dir=tmp_path, **build)
    assert len(calls) == 3
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3, warnings
    assert all(
        "is corrupt or truncated" in line and "running it again" in line for line in warnings
    )
    np.testing.assert_array_equal(resumed.spikes, reference.spikes)
    np.testing.assert_array_equal(resumed.background, reference.background)
    assert all(p.is_file() for p in shards)  # the redone shards are kept again


def _drop_file_permission_override() -> None:
    """In a child run as root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set before exec, so that folder permissions apply to it as to any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_unprivileged(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``argv`` in ``cwd`` without the power to write in a read-only folder (even as root)."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_drop_file_permission_override if os.geteuid() == 0 else None,
    )


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write in (the test is skipped where that cannot be arranged)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = "open('ro/probe', 'w')"
        if _run_unprivileged([sys.executable, "-c", probe], tmp_path).returncode == 0:
            pytest.skip("this process cannot be kept from writing in a read-only folder")
        yield folder
    finally:
        folder.chmod(0o755)


# Every writer of the CLI, its output in the read-only folder "ro" (the inputs need not
# exist: the output is checked first).
WRITERS = {
    "export": ["export", "ck.pt", "-o", "ro/model.pt"],
    "simulate-dataset": ["simulate", "dataset", "--bank", "bank.h5", "--out", "ro/d.h5"],
    "simulate-merge": ["simulate", "merge", "part.h5", "--out", "ro/d.h5"],
    "simulate-bank": ["simulate", "bank", "--n-regions", "20", "--quick", "--out", "ro/b.h5"],
    "train": ["train", "--preset", "tiny", "--out", "ro/run"],
    "evaluate": ["evaluate", "ck.pt", "--out", "ro/eval"],
    "benchmark": ["benchmark", "--out", "ro/report"],
    "headmodel-build": ["headmodel", "build", "--out", "ro/hm.npz"],
    "localize": ["localize", "model.pt", "rec.fif", "-o", "ro/sub/est.h5"],
    "localize-plot": ["localize", "model.pt", "rec.fif", "-o", "est.h5", "--plot", "ro/p.png"],
    "demo": ["demo", "--out", "ro/demo"],
}


@pytest.mark.parametrize("argv", WRITERS.values(), ids=WRITERS.keys())
def test_a_read_only_output_folder_is_refused_before_any_work(read_only_folder, argv):
    """Case 6: every writer used to end with a PermissionError traceback (exit 1), some
    only after all their work; now one line, exit 2, nothing written anywhere."""
    where = read_only_folder.parent
    proc = _run_unprivileged([sys.executable, "-m", "fairesi", *argv], where)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not writable (permission denied)" in lines[0], proc.stderr
    assert lines[0].startswith(f"fairesi {argv[0]}: error: ")
    assert list(read_only_folder.iterdir()) == []
    assert sorted(p.name for p in where.iterdir()) == ["ro"]


def test_an_output_below_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "eval"
    assert fairesi.cli.main(["evaluate", "missing.pt", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt is a file, not a folder" in err[0], err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# Each writer's output spelled as an existing thing of the wrong kind: "dir" a folder
# where a file is written, "file.txt" a file where a folder is written.
WRONG_KIND = {
    "export": (["export", "ck.pt", "-o", "dir"], "an existing folder"),
    "simulate-dataset": (
        ["simulate", "dataset", "--bank", "b.h5", "--out", "dir"],
        "an existing folder",
    ),
    "simulate-merge": (["simulate", "merge", "part.h5", "--out", "dir"], "an existing folder"),
    "simulate-bank": (["simulate", "bank", "--quick", "--out", "dir"], "an existing folder"),
    "headmodel-build": (["headmodel", "build", "--out", "dir"], "an existing folder"),
    "headmodel-from-forward": (
        ["headmodel", "from-forward", "f.fif", "-o", "dir"],
        "an existing folder",
    ),
    "localize-plot": (
        ["localize", "m.pt", "r.fif", "-o", "e.h5", "--plot", "dir"],
        "an existing folder",
    ),
    "train": (["train", "--preset", "tiny", "--out", "file.txt"], "an existing file"),
    "evaluate": (["evaluate", "ck.pt", "--out", "file.txt"], "an existing file"),
    "benchmark": (["benchmark", "--out", "file.txt"], "an existing file"),
    "demo": (["demo", "--out", "file.txt"], "an existing file"),
}


@pytest.mark.parametrize("argv, message", WRONG_KIND.values(), ids=WRONG_KIND.keys())
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(
    tmp_path, monkeypatch, capsys, argv, message
):
    """Issue 18 case 6: `evaluate --out` naming a file and `headmodel build --out` naming a
    folder failed only after all the work; now every writer refuses either at once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("mine")
    assert fairesi.cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert err[0].startswith(f"fairesi {argv[0]}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file.txt"]
    assert list((tmp_path / "dir").iterdir()) == []
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_localize_still_writes_into_a_folder_output(tmp_path):
    """localize's -o may name a folder (it writes FOLDER/estimate-lh.stc ...): the
    wrong-kind check leaves it alone."""
    from fairesi.cli import check_common_options

    args = fairesi.cli.build_parser().parse_args(["localize", "m.pt", "r.fif", "-o", str(tmp_path)])
    check_common_options(args)  # no error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "missing.pt", "--threads", "0"], "--threads must be >= 1, got 0"),
        (["evaluate", "missing.pt", "--threads", "-1"], "--threads must be >= 1, got -1"),
        (["benchmark", "--threads", "0"], "--threads must be >= 1, got 0"),
        (["evaluate", "missing.pt", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["localize", "m.pt", "r.fif", "-o", "e.h5", "--batch-size", "-2"], "got -2"),
    ],
)
def test_counts_below_one_are_refused_first(tmp_path, monkeypatch, capsys, argv, message):
    """Cases 6 and 12: --threads 0/-1 was a RuntimeError traceback from torch, and
    --batch-size 0 said "range() arg 3 must not be zero"; now refused before anything
    else (the missing checkpoint is not even looked at)."""
    monkeypatch.chdir(tmp_path)
    assert fairesi.cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_hyper_parameter_is_one_line(tmp_path, capsys):
    """Case 6: an unknown --hyper key was a TypeError traceback; nothing is written."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--hyper", "d_model=64", "--out", str(out)]
    assert fairesi.cli.main([*argv, "--max-steps", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "fairesi train: error: unknown FAIR-ESI hyper-parameters ['d_model']" in err[-1]
    assert "expected some of [" in err[-1] and "'embed_dim'" in err[-1]
    assert not out.exists() or list(out.iterdir()) == []


def test_export_refuses_a_folder_output_and_a_missing_device_first(tiny_run, tmp_path, capsys):
    """Case 6: `export -o DIR` failed with IsADirectoryError after the whole export, and
    `--device cuda` on a CPU-only torch with an AssertionError traceback."""
    folder = tmp_path / "models"
    folder.mkdir()
    checkpoint = str(tiny_run / "best.pt")
    assert fairesi.cli.main(["export", checkpoint, "-o", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the output {folder} is an existing folder" in err[0], err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "models"
    ]  # no lock, no part
    assert (
        fairesi.cli.main(["export", checkpoint, "-o", str(tmp_path / "m.pt2"), "--device", "tpu"])
        == 2
    )
    assert "--device 'tpu' is not supported" in capsys.readouterr().err
    if not torch.cuda.is_available():
        argv = ["export", checkpoint, "-o", str(tmp_path / "m.pt2"), "--device", "cuda"]
        assert fairesi.cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CUDA is not available here" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_dataset_and_bank_refuse_a_folder_output_before_any_work(dataset_inputs, tmp_path, capsys):
    """Case 6: `--out` naming an existing folder was refused only by the final rename,
    after all the work; now at once, with nothing written."""
    folder = tmp_path / "out"
    folder.mkdir()
    head, bank, _ = dataset_inputs
    for argv in (
        _dataset_argv(dataset_inputs, folder, 4),
        ["simulate", "bank", "--n-regions", "20", "--quick", "--no-progress", "--out", str(folder)],
        ["simulate", "merge", str(bank), "--out", str(folder)],
    ):
        assert fairesi.cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"the output {folder} is an existing folder" in err[0], err
    assert list(folder.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_garbage_checkpoint_is_one_line(tmp_path, capfd):
    """Case 6: a garbage file that starts like a pickle made torch print a two-line
    warning before the one-line error."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\xb9" + np.random.default_rng(0).bytes(3000))
    for argv in (
        ["evaluate", str(garbage)],
        ["export", str(garbage), "-o", str(tmp_path / "m.pt")],
    ):
        assert fairesi.cli.main(argv) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is corrupt or truncated" in err[0], err


def test_a_damaged_pickle_inside_a_checkpoint_is_one_line(tmp_path):
    """Fuzzing (bench/robustness.py) found checkpoints whose damaged pickle made the
    weights-only unpickler raise IndexError, a traceback: now the one-line refusal."""
    from fairesi.train.checkpoint import read_checkpoint

    whole = tmp_path / "whole.pt"
    torch.save({"format": "x", "state_dict": {"w": torch.zeros(2)}}, whole)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(whole) as src, zipfile.ZipFile(damaged, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"\x80\x02." if name.endswith("data.pkl") else src.read(name))
    with pytest.raises(ValueError, match=r"damaged.pt is corrupt or truncated .*IndexError"):
        read_checkpoint(damaged)


def test_a_damaged_dataset_file_is_refused_with_one_line(dataset_inputs, tmp_path):
    """Fuzzing found dataset files whose damaged metadata made h5py raise KeyError or
    RuntimeError, and damaged region indices would fail inside torch's scatter."""
    synth = dataset_inputs[2]
    path = write_dataset(tmp_path / "d.h5", synth, "train", 3, progress=False)
    regions = tmp_path / "regions.h5"
    shutil.copy(path, regions)
    with h5py.File(regions, "a") as f:
        f["target_regions"][1, 0] = 10_000
    with pytest.raises(ValueError, match=r"target_regions of rows \[0, 1, 2\]\.\.\. lie outside"):
        DatasetFile(regions).batch(range(3))
    missing = tmp_path / "missing.h5"
    shutil.copy(path, missing)
    with h5py.File(missing, "a") as f:
        del f["x"]
    with pytest.raises(ValueError, match="missing.h5 is damaged: its metadata cannot be read"):
        DatasetFile(missing)
    garbled = tmp_path / "garbled.h5"
    shutil.copy(path, garbled)
    with h5py.File(garbled, "a") as f:
        f.attrs["config"] = "{not json"
    with pytest.raises(ValueError, match=r"garbled.h5 is damaged: .*JSONDecodeError"):
        DatasetFile(garbled)


def test_sigterm_stops_simulate_bank_cleanly_and_a_rerun_resumes(tmp_path):
    """Found by bench/robustness.py: `simulate bank` died on SIGTERM without cleaning up;
    now exit 143, one line, finished runs kept, no part or lock, and the rerun resumes."""
    script = textwrap.dedent(
        """
        import sys, time
        import fairesi.simulate.bank as bank
        simulate, runs = bank._simulate_shard, []

        def slow(*args):
            runs.append(1)
            time.sleep(float(sys.argv[1]))
            return simulate(*args)

        bank._simulate_shard = slow
        from fairesi.cli import main
        code = main(sys.argv[2:])
        print("runs", len(runs), flush=True)
        sys.exit(code)
        """
    )
    argv = ["simulate", "bank", "--n-regions", "24", "--quick", "--threads", "1"]
    argv += ["--no-progress", "--out", str(tmp_path / "b.h5")]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "0.3", *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shards = tmp_path / "b.h5.shards"
    try:
        _wait_for(lambda: len(list(shards.glob("*/*.npz"))) >= 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["fairesi simulate: terminated; finished work was kept"]
    kept = [p.name for p in shards.glob("*/*")]
    assert len(kept) >= 2 and all(not name.startswith(".") for name in kept), kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5.shards"]
    rerun = subprocess.run(
        [sys.executable, "-c", script, "0", *argv],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    total = int(rerun.stdout.split("runs ")[1].split()[0])
    reference = tmp_path / "reference"
    reference.mkdir()
    fresh = subprocess.run(
        [sys.executable, "-c", script, "0", *argv[:-1], str(reference / "b.h5")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert total == int(fresh.stdout.split("runs ")[1].split()[0]) - len(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5", "reference"]
    resumed, whole = WaveformBank.load(tmp_path / "b.h5"), WaveformBank.load(reference / "b.h5")
    np.testing.assert_array_equal(resumed.spikes, whole.spikes)
    np.testing.assert_array_equal(resumed.background, whole.background)


def test_the_robustness_bench_runs_and_counts(tmp_path):
    """bench/robustness.py at tiny counts: the table is printed and every case handled."""
    script = Path(__file__).resolve().parents[1] / "bench" / "robustness.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--groups",
            "fuzz",
            "--fuzz-count",
            "4",
            "--npy-count",
            "0",
            "--jobs",
            "2",
        ],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        line.split()[1]: line.split()[2:]
        for line in proc.stdout.splitlines()
        if line.startswith("fuzz ")
    }
    for reader in ("checkpoint", "bank", "dataset"):
        assert rows[reader] == ["4", "4", "0", "0"], proc.stdout
    assert proc.stdout.splitlines()[0].split() == [
        "group",
        "tried",
        "handled",
        "crashed",
        "lost",
        "data",
    ]


# A 6 kB HDF5 file whose damaged global heap makes libhdf5 loop forever (ignoring
# signals) when its variable-length attribute 'bank_metadata' is read; found by fuzzing.
HEAP_LOOP = Path(__file__).parent / "data" / "hdf5_heap_loop.h5"


def test_an_hdf5_file_that_hangs_libhdf5_is_refused(tmp_path, monkeypatch, capsys):
    """The robustness bench's one crash: a damaged dataset on which libhdf5 never returned.
    Every HDF5 reader now reads the metadata in a child first and refuses the file when
    the child does not finish; the test's own process would hang if it read the file."""
    import fairesi.io

    monkeypatch.setattr(fairesi.io, "HDF5_METADATA_TIMEOUT_S", 1.0)
    damaged = tmp_path / "damaged.h5"
    shutil.copy(HEAP_LOOP, damaged)
    for read in (
        DatasetFile,
        WaveformBank.load,
        lambda p: fairesi.data.h5.merge_datasets([p], tmp_path / "m.h5"),
    ):
        started = time.monotonic()
        with pytest.raises(ValueError, match="did not finish reading its metadata within 1 s"):
            read(damaged)
        assert time.monotonic() - started < 10
    assert (
        fairesi.cli.main(["simulate", "merge", str(damaged), "--out", str(tmp_path / "d.h5")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged.h5 is damaged: libhdf5 did not finish" in err[0], err
    assert damaged.read_bytes() == HEAP_LOOP.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5"]


def test_a_healthy_hdf5_file_is_checked_once(tmp_path, monkeypatch):
    """The child reads a healthy file's metadata once per process (same inode, size,
    time); a changed file is read again."""
    import fairesi.io

    path = tmp_path / "ok.h5"
    with h5py.File(path, "w") as f:
        f.attrs["text"] = "a variable-length string"
        f.create_dataset("names", data=np.array(["EEG 001", "EEG 002"], dtype=h5py.string_dtype()))
    forks = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    fairesi.io.check_hdf5_metadata(path)
    fairesi.io.check_hdf5_metadata(path)
    assert len(forks) == 1
    with h5py.File(path, "a") as f:
        f.attrs["more"] = 1
    fairesi.io.check_hdf5_metadata(path)
    assert len(forks) == 2


def test_resuming_drops_the_log_row_of_an_uncommitted_epoch(tmp_path):
    """kill -9 between an epoch's log row and its last.pt, with last.pt saved at that very
    step (by a SIGTERM during the epoch's validation): the resumed run commits the epoch
    again, so its first row must go, or the log holds the epoch twice."""
    from fairesi.train.runtime import LOG_FIELDS, TrainingLog

    rows = [
        {"epoch": 0, "step": 10, "kind": "train", "loss": 2.0},
        {"epoch": 0, "step": 12, "kind": "epoch", "loss": 1.5, "val_loss": 1.4},
        {"epoch": 1, "step": 20, "kind": "train", "loss": 1.0},
    ]
    log = TrainingLog(tmp_path, None)
    for row in rows:
        log.write(**row)
    log.close()
    TrainingLog(tmp_path, (12, 0)).close()  # last.pt: step 12, epoch 0 not committed
    kept = (tmp_path / "train_log.csv").read_text().splitlines()
    assert kept[0].split(",") == list(LOG_FIELDS)
    assert [line.split(",")[:3] for line in kept[1:]] == [["0", "10", "train"]]
    TrainingLog(tmp_path, (10, 0)).close()
    assert len((tmp_path / "train_log.csv").read_text().splitlines()) == 2


def test_an_internal_error_keeps_its_traceback_and_says_how_to_report_it(monkeypatch, capsys):
    """Issue 18: a bug (not a user error) shows its traceback, then one line that says it
    is a bug and how to report it; exit 1."""
    import fairesi.cli.evaluate

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fairesi.cli.evaluate, "run", broken)
    assert fairesi.cli.main(["evaluate", "ck.pt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: a bug" in err
    assert err[-1].startswith("fairesi evaluate: internal error (a bug in fairesi ")
    assert "please report it" in err[-1]


def test_a_sigterm_that_surfaces_inside_h5py_still_reads_as_terminated(monkeypatch, capsys):
    """Seen under load: SIGTERM landed while h5py iterated attributes in a C callback, and
    the handler's Terminated came out as h5py's SystemError (a traceback, exit 1). The
    CLI now finds the signal behind the error: one line, exit 143."""
    import fairesi.cli.evaluate
    from fairesi.train.runtime import Terminated

    def interrupted_inside_a_callback(args):
        try:
            raise Terminated("received signal 15")
        except Terminated as err:
            raise SystemError("FastRLock.__exit__ returned a result with an exception set") from err

    monkeypatch.setattr(fairesi.cli.evaluate, "run", interrupted_inside_a_callback)
    assert fairesi.cli.main(["evaluate", "ck.pt"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fairesi evaluate: terminated; finished work was kept"], err


def _swallowed_sigterm() -> None:
    """What h5py does to a SIGTERM handled in a weakref callback: the handler's exception
    is raised in a finalizer, where Python reports it as unraisable and goes on."""
    from fairesi.train.runtime import Terminated

    class Finalised:
        def __del__(self):
            raise Terminated("received signal 15")

    Finalised()


def test_a_sigterm_swallowed_by_a_finalizer_still_stops_simulate_dataset():
    """Seen under load: the redelivered SIGTERM was raised inside the unraisable hook
    itself, swallowed again, and the merge went on to exit 0. Now it is sent again from a
    thread and lands in ordinary code."""
    from fairesi.cli._simulate_dataset import _sigterm_stops_cleanly
    from fairesi.train.runtime import Terminated

    reached = []
    with pytest.raises(Terminated), _sigterm_stops_cleanly():
        _swallowed_sigterm()
        for _ in range(200):  # the work goes on ...
            time.sleep(0.01)
        reached.append("end")  # ... but is stopped before its end
    assert reached == []


def test_a_sigterm_swallowed_just_before_the_end_still_reads_as_terminated():
    from fairesi.cli._simulate_dataset import _sigterm_stops_cleanly
    from fairesi.train.runtime import Terminated

    with pytest.raises(Terminated), _sigterm_stops_cleanly():
        _swallowed_sigterm()  # the block ends at once, before the signal is sent again


def test_a_bank_with_damaged_metadata_is_one_line(tmp_path, capsys):
    """Found by the 5,000-file fuzz of banks: h5py's RuntimeError ('bad symbol table node
    signature') and KeyError on damaged metadata were tracebacks; now one line."""
    path = tmp_path / "bank.h5"
    WaveformBank.synthetic(20, n_spikes=8, segment_len=100, n_background_samples=200).save(path)
    raw = path.read_bytes()
    at = raw.index(b"SNOD")  # the root group's symbol-table node
    path.write_bytes(raw[:at] + b"XXXX" + raw[at + 4 :])
    with pytest.raises(ValueError, match="bank.h5 is damaged: it cannot be read"):
        WaveformBank.load(path)
    argv = ["simulate", "dataset", "--bank", str(path), "--n", "2", "--out", str(tmp_path / "d.h5")]
    assert fairesi.cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged: it cannot be read" in err[0], err


def test_hyper_values_are_literals_or_kept_as_strings():
    """`--hyper norm=all` keeps the bare word; `literal_only` (the bench scripts) refuses it."""
    from fairesi.cli import FairesiUserError
    from fairesi.cli.train import parse_hyper

    items = ["gru_hidden=256", "norm=all", "latent=None", "gru_hidden=192"]
    assert parse_hyper(items) == {"gru_hidden": 192, "norm": "all", "latent": None}
    assert parse_hyper(["norm='all'"], literal_only=True) == {"norm": "all"}
    with pytest.raises(FairesiUserError, match="must be a Python literal"):
        parse_hyper(["norm=all"], literal_only=True)
    for bad in ("gru_hidden", "=3"):
        with pytest.raises(FairesiUserError, match="expects KEY=VALUE"):
            parse_hyper([bad])
