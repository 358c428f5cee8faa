"""Real Dask engines (issue 19): a ``LocalCluster`` of 2 worker processes builds a small
waveform bank and writes a small dataset, both identical to the local builds; a worker
killed mid-build; an unreachable scheduler and workers of another version are refused.

The commands are those of ``docs/scaling.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import fairesi
import fairesi.simulate.bank as bank_module
from fairesi.cli import main
from fairesi.simulate import Connectome, WaveformBank, build_bank

pytest.importorskip("distributed")

from fairesi.cluster import ClusterError, check_workers, connect  # noqa: E402

# A small network and short runs: ~40 runs of a 30-region network, about a second.
BUILD = dict(
    run_duration_s=8.0,
    background_s=3.0,
    settings=((0.083, 1.5),),
    min_spikes=1,
    max_rounds=2,
    seed=11,
)


@pytest.fixture(scope="module")
def connectome() -> Connectome:
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(30, 3))
    return Connectome.from_geometry(70.0 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def client():
    """``--dask local:2``: 2 worker processes, one thread each. Spawned workers import
    fairesi from the same place as this process."""
    source = str(Path(fairesi.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, old) if p)
    try:
        with connect("local:2") as client:
            yield client
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_bank_on_two_workers_is_the_local_bank(client, connectome, tmp_path, monkeypatch):
    local = build_bank(connectome, n_threads=2, **BUILD)
    saved = []
    real_save = bank_module._save_shard

    def counting_save(store, name, result):
        saved.append(name)
        real_save(store, name, result)

    monkeypatch.setattr(bank_module, "_save_shard", counting_save)
    progress = []
    distributed = build_bank(
        connectome,
        client=client,
        shard_dir=tmp_path / "shards",
        progress=lambda done, total: progress.append((done, total)),
        **BUILD,
    )
    assert local.metadata["n_runs"] >= 30
    assert sorted(saved) == sorted(set(saved)) and len(saved) == local.metadata["n_runs"]
    assert progress[-1][0] == progress[-1][1] == local.metadata["n_runs"]
    local.save(tmp_path / "local.h5")
    distributed.save(tmp_path / "dask.h5")
    assert (tmp_path / "local.h5").read_bytes() == (tmp_path / "dask.h5").read_bytes()
    # Both workers took part.
    assert len(client.scheduler_info()["workers"]) == 2


def test_a_worker_killed_mid_build_loses_only_its_runs(client, connectome, tmp_path, monkeypatch):
    local = build_bank(connectome, n_threads=2, **BUILD)
    saved = []
    real_save = bank_module._save_shard

    def counting_save(store, name, result):
        saved.append(name)
        real_save(store, name, result)

    monkeypatch.setattr(bank_module, "_save_shard", counting_save)
    pids = _worker_pids(client)
    killed = {}

    def kill_a_busy_worker(done, total):
        if killed or done < 2:
            return
        busy = {w: keys for w, keys in client.processing().items() if keys}
        assert busy, "no worker has a run in progress: the test would kill nothing"
        worker = sorted(busy)[0]
        killed.update(worker=worker, pid=pids[worker], runs=len(busy[worker]))
        os.kill(pids[worker], signal.SIGKILL)

    bank = build_bank(
        connectome, client=client, shard_dir=tmp_path, progress=kill_a_busy_worker, **BUILD
    )
    assert killed["runs"] >= 1
    with pytest.raises(ProcessLookupError):  # it really died (the nanny starts a new one)
        os.kill(killed["pid"], 0)
    assert len(saved) == len(set(saved)) == local.metadata["n_runs"]
    for name in ("spikes", "spike_regions", "background"):
        np.testing.assert_array_equal(getattr(bank, name), getattr(local, name))
    assert bank.metadata == local.metadata
    client.wait_for_workers(2, timeout=60)  # for the tests that follow


def test_cli_bank_and_dataset_on_the_cluster_equal_one_writer(
    client, connectome, toy_head_model, tmp_path
):
    address = client.scheduler.address
    np.savez(
        tmp_path / "conn.npz",
        weights=connectome.weights.toarray(),
        tract_lengths=connectome.tract_lengths_mm.toarray(),
    )
    bank_argv = ["simulate", "bank", "--connectome", str(tmp_path / "conn.npz"), "--quick"]
    bank_argv += ["--duration", "6", "--background", "3", "--seed", "4", "--no-progress"]
    assert main([*bank_argv, "--out", str(tmp_path / "bank.h5"), "--dask", address]) == 0
    assert main([*bank_argv, "--out", str(tmp_path / "local.h5"), "--threads", "2"]) == 0
    banks = [WaveformBank.load(tmp_path / name) for name in ("bank.h5", "local.h5")]
    for name in ("spikes", "spike_regions", "background"):
        np.testing.assert_array_equal(getattr(banks[0], name), getattr(banks[1], name))
    for bank in banks:  # the only difference: how long the build took
        bank.metadata.pop("build_wall_s")
    assert banks[0].metadata == banks[1].metadata
    assert not (tmp_path / "bank.h5.shards").exists()

    # The dataset: parts written by the 2 workers, merged.
    toy_head_model.save(tmp_path / "head.npz")
    WaveformBank.synthetic(toy_head_model.n_regions, seed=0).save(tmp_path / "synthetic.h5")
    data_argv = ["simulate", "dataset", "--config", "SimEEG", "--split", "train"]
    data_argv += ["--start", "3", "--n", "37", "--n-samples", "1200", "--batch-size", "4"]
    data_argv += ["--bank", str(tmp_path / "synthetic.h5"), "--head-model"]
    data_argv += [str(tmp_path / "head.npz"), "--no-progress"]
    one, parts = tmp_path / "one.h5", tmp_path / "parts.h5"
    assert main([*data_argv, "--out", str(one)]) == 0
    assert main([*data_argv, "--out", str(parts), "--dask", address]) == 0
    assert not (tmp_path / "parts.h5.parts").exists()
    with h5py.File(one, "r") as a, h5py.File(parts, "r") as b:
        assert dict(a.attrs) == dict(b.attrs)
        assert sorted(a) == sorted(b)
        for name in a:
            x, y = a[name], b[name]
            assert np.array_equal(x[()], y[()]), name
            assert (x.dtype, x.chunks, x.compression, x.compression_opts, x.shuffle) == (
                y.dtype,
                y.chunks,
                y.compression,
                y.compression_opts,
                y.shuffle,
            ), name
            if x.chunks is not None:  # the stored (compressed) bytes too
                for i in range(x.id.get_num_chunks()):
                    offset = x.id.get_chunk_info(i).chunk_offset
                    assert x.id.read_direct_chunk(offset) == y.id.read_direct_chunk(offset)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_one_line_in_bounded_time(tmp_path, capsys):
    out = tmp_path / "bank.h5"
    argv = ["simulate", "bank", "--n-regions", "20", "--out", str(out), "--no-progress"]
    argv += ["--dask", f"tcp://127.0.0.1:{_free_port()}", "--dask-timeout", "2"]
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the Dask scheduler" in err
    assert list(tmp_path.iterdir()) == []  # no bank, no shards, no lock
    assert main([*argv[:-4], "--dask", "local:zero"]) == 2
    assert "expected local:N" in capsys.readouterr().err


def test_workers_of_another_version_are_refused(client, tmp_path, capsys):
    client.run(exec, "import fairesi; fairesi.__version__ = '0.0.0-other'")
    try:
        with pytest.raises(ClusterError, match=r"another fairesi version .* has 0\.0\.0-other"):
            check_workers(client)
        out = tmp_path / "bank.h5"
        argv = ["simulate", "bank", "--n-regions", "20", "--out", str(out), "--no-progress"]
        assert main([*argv, "--dask", client.scheduler.address]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "install the same version on every worker" in err
        assert list(tmp_path.iterdir()) == []
    finally:
        client.run(exec, f"import fairesi; fairesi.__version__ = {fairesi.__version__!r}")
    assert set(check_workers(client).values()) == {fairesi.__version__}


def test_without_dask_the_flag_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    out = tmp_path / "bank.h5"
    argv = ["simulate", "bank", "--n-regions", "20", "--out", str(out), "--no-progress"]
    assert main([*argv, "--dask", "local:2"]) == 2
    assert "pip install 'fairesi[dask]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
