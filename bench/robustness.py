"""Robustness bench (issue 18): every bad input of the issue, the fuzzers, and signals.

One command runs three groups of cases in a temporary folder and prints, per group, the
cases tried / handled / crashed / lost data:

``cli``
    The issue's bad inputs, each as its own ``fairesi`` (or ``fairesi-infer``) process: a
    garbage, truncated or pickled checkpoint, a directory as checkpoint, banks with a
    missing dataset, a corrupted chunk or NaN, a text file as .fif, head model or merge
    part, an output that is an input (however spelled), an output that is a folder or
    lies in a read-only folder (for every writer), counts below 1, an unknown --hyper key,
    CUDA on a CPU-only torch, a TOML type error, a crafted TorchScript archive and inputs
    that are not bounded files for the runner. Handled: the documented exit code (2 for
    the ``fairesi`` CLI, 2-5 for the runner) with one line on stderr and no traceback.
``fuzz``
    Mutated files (bit flips, truncations, appended or overwritten bytes, random bodies,
    empty files) for each reader: checkpoints (``load_checkpoint``), waveform banks
    (``WaveformBank.load``), dataset files (``DatasetFile`` and reading every row) in a
    worker process each, and ``.npy`` through ``bench/fuzz_npy.py`` (the runner's reader
    under AddressSanitizer/UBSan, every accepted file compared with ``numpy.load``).
    Handled: read correctly, or refused with a one-line ``ValueError``/``OSError``.
``signals``
    SIGTERM and SIGKILL while ``fairesi simulate dataset`` writes shards, while it merges
    them, while ``fairesi simulate merge`` merges parts, and while ``fairesi simulate bank``
    runs its networks and while it writes its file; then the same command again. Also
    SIGTERM and SIGKILL at every stage of ``fairesi train`` (inside a step, during
    validation, between an epoch's log row and its checkpoints, while ``best.pt`` and while
    ``last.pt`` is written), then ``fairesi train --resume``. Handled: the rerun succeeds
    with a result identical to an uninterrupted run (for training: weights, optimizer
    state, progress and log rows of ``best.pt``, ``last.pt``, ``train_log.csv``), with
    nothing left beside it.

Lost data: an input file changed or vanished, an existing output replaced by a failed
run, temporary files or locks left behind, or a resumed result that differs. The exit
status is 1 if any case crashed or lost data.

    python bench/robustness.py            # quick: cli + fuzz, under 2 minutes on 2 cores
    python bench/robustness.py --groups cli,fuzz,signals --fuzz-count 5000 --npy-count 5000

The default counts are small; the figures in ``bench/RESULTS.md`` say which were used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FUZZ_READERS = ("checkpoint", "bank", "dataset")


@dataclass
class Tally:
    """Cases of one group: how many were tried, handled, crashed, lost data."""

    tried: int = 0
    handled: int = 0
    crashed: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, handled: bool, lost: bool = False, note: str = "") -> None:
        """Record one case (a crash is a case that was not handled)."""
        self.tried += 1
        self.handled += int(handled)
        self.crashed += int(not handled)
        self.lost += int(lost)
        if note and (not handled or lost) and len(self.notes) < 12:
            self.notes.append(note)


def _env() -> dict[str, str]:
    """Environment of child processes: this checkout's package first on the path."""
    python = str(ROOT / "python")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([python, path]) if path else python}


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> sha256 of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _drop_permission_override() -> None:
    """In a child run as root: lose CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (PR_CAPBSET_DROP),
    so a read-only folder is read-only for it too."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        libc.prctl(24, capability, 0, 0, 0)


# ---------------------------------------------------------------------------------------
# Fixtures: small real files of every kind, made once.


def make_fixtures(work: Path) -> dict[str, Path]:
    """Write the small valid inputs every group starts from; returns their paths."""
    code = textwrap.dedent(
        f"""
        import numpy as np, torch
        from pathlib import Path
        from fairesi.headmodel import HeadModel
        from fairesi.simulate import WaveformBank
        from fairesi.data import SimConfig, Synthesizer, write_dataset
        from fairesi.train import TrainConfig, train
        from fairesi.export import export_checkpoint, read_metadata
        w = Path({str(work)!r})
        hm = HeadModel.toy()
        hm.save(w / "toy.npz")
        bank = WaveformBank.synthetic(hm.n_regions, n_spikes=64, segment_len=500, seed=0)
        bank.save(w / "bank.h5")
        synth = Synthesizer(hm, bank, SimConfig.preset("SimEEG", n_rings=1, n_samples=1200))
        write_dataset(w / "part0.h5", synth, "train", 4, start=0, progress=False)
        write_dataset(w / "part1.h5", synth, "train", 4, start=4, progress=False)
        train(TrainConfig.from_sources(preset="tiny", overrides=dict(
            out_dir=str(w / "run"), n_train_samples=16, n_val_samples=8, batch_size=8,
            max_steps=2, threads=1, progress=False)))
        export_checkpoint(w / "run" / "best.pt", w / "model.pt", fused_op=False)
        meta = read_metadata(w / "model.pt")
        x = np.random.default_rng(0).standard_normal((len(meta["ch_names"]), meta["n_times"]))
        np.save(w / "x.npy", (x * 1e-12).astype(np.float32))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"making the fixtures failed:\n{proc.stderr[-3000:]}")
    names = ("toy.npz", "bank.h5", "part0.h5", "part1.h5", "model.pt", "x.npy")
    fixtures = {name: work / name for name in names}
    fixtures["checkpoint"] = work / "run" / "best.pt"
    return fixtures


# ---------------------------------------------------------------------------------------
# cli: the bad inputs, one process each.


def _bad_files(where: Path, fx: dict[str, Path]) -> dict[str, Path]:
    """Bad input files derived from the fixtures."""
    import h5py

    files = {}
    rng = np.random.default_rng(0)
    files["garbage.pt"] = where / "garbage.pt"
    files["garbage.pt"].write_bytes(b"\x80\xb9" + rng.bytes(3000))
    data = fx["checkpoint"].read_bytes()
    files["truncated.pt"] = where / "truncated.pt"
    files["truncated.pt"].write_bytes(data[: len(data) // 2])
    files["pickled.pt"] = where / "pickled.pt"
    import torch

    torch.save({"model": Tally()}, files["pickled.pt"])
    files["text"] = where / "notes.txt"
    files["text"].write_text("not a data file\n")
    files["fif"] = where / "notes.fif"
    files["fif"].write_text("not a data file\n")
    for name in ("bank_missing.h5", "bank_nan.h5", "bank_chunk.h5"):
        files[name] = where / name
        shutil.copy(fx["bank.h5"], files[name])
    with h5py.File(files["bank_missing.h5"], "a") as f:
        del f["background"]
    with h5py.File(files["bank_nan.h5"], "a") as f:
        spikes = f["spikes"][()]
        spikes[3, 10] = np.nan
        f["spikes"][...] = spikes
    part = where / "part_chunk.h5"
    shutil.copy(fx["part1.h5"], part)
    with h5py.File(part, "r") as f:
        info = f["x"].id.get_chunk_info(0)
    raw = bytearray(part.read_bytes())
    raw[info.byte_offset + info.size // 2 : info.byte_offset + info.size // 2 + 16] = bytes(16)
    part.write_bytes(bytes(raw))
    files["part_chunk.h5"] = part
    crafted = where / "crafted.pt"
    import zipfile

    with zipfile.ZipFile(fx["model.pt"]) as src, zipfile.ZipFile(crafted, "w") as dst:
        for name in src.namelist():
            is_code = "/code/" in name and name.endswith(".py")
            dst.writestr(name, b"" if is_code else src.read(name))
    files["crafted.pt"] = crafted
    (where / "folder").mkdir()
    (where / "ro").mkdir()
    (where / "ro").chmod(0o555)
    files["toml"] = where / "bad.toml"
    files["toml"].write_text('batch_size = "big"\n')
    return files


def cli_cases(fx: dict[str, Path], bad: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(name, argv, expected exit code); argv[0] is 'fairesi' or 'fairesi-infer'."""
    ck, bank, toy = str(fx["checkpoint"]), str(fx["bank.h5"]), str(fx["toy.npz"])
    p0, p1, model, x = (
        str(fx["part0.h5"]),
        str(fx["part1.h5"]),
        str(fx["model.pt"]),
        str(fx["x.npy"]),
    )
    ds = ["simulate", "dataset", "--config", "SimEEG", "--n-rings", "1", "--n-samples", "1200"]
    ds += ["--n", "4", "--head-model", toy, "--no-progress"]
    cases = [
        ("evaluate garbage checkpoint", ["evaluate", str(bad["garbage.pt"])], 2),
        ("export garbage checkpoint", ["export", str(bad["garbage.pt"]), "-o", "m.pt"], 2),
        ("benchmark garbage checkpoint",
         ["benchmark", "--checkpoint", f"fair_esi={bad['garbage.pt']}", "--methods",
          "fair_esi", "--n", "2", "--out", "report"], 2),
        ("evaluate truncated checkpoint", ["evaluate", str(bad["truncated.pt"])], 2),
        ("evaluate pickled object", ["evaluate", str(bad["pickled.pt"])], 2),
        ("evaluate a directory", ["evaluate", str(fx["checkpoint"].parent)], 2),
        ("evaluate --device cuda", ["evaluate", ck, "--device", "cuda", "--n", "2"], 2),
        ("evaluate text head model", ["evaluate", ck, "--head-model", str(bad["text"])], 2),
        ("evaluate --threads 0", ["evaluate", ck, "--threads", "0"], 2),
        ("evaluate --threads -1", ["evaluate", ck, "--threads", "-1"], 2),
        ("evaluate --batch-size 0", ["evaluate", ck, "--batch-size", "0"], 2),
        ("train unknown --hyper", ["train", "--preset", "tiny", "--hyper", "d_model=64",
                                   "--out", "run-hyper", "--max-steps", "1"], 2),
        ("train TOML type error", ["train", "--config", str(bad["toml"]), "--out", "run-toml"], 2),
        ("train into an earlier run", ["train", "--preset", "tiny", "--out",
                                       str(fx["checkpoint"].parent), "--max-steps", "1"], 2),
        ("export --device cuda", ["export", ck, "-o", "m.pt2", "--device", "cuda"], 2),
        ("export -o checkpoint", ["export", ck, "-o", ck], 2),
        ("export -o folder", ["export", ck, "-o", "folder"], 2),
        ("dataset bank missing a dataset", [*ds, "--bank", str(bad["bank_missing.h5"]),
                                            "--out", "d.h5"], 2),
        ("dataset NaN bank", [*ds, "--bank", str(bad["bank_nan.h5"]), "--out", "d.h5"], 2),
        ("dataset --out = --bank", [*ds, "--bank", bank, "--out", bank], 2),
        ("dataset --out folder", [*ds, "--bank", bank, "--out", "folder"], 2),
        ("dataset --batch-size 0", [*ds, "--bank", bank, "--out", "d.h5", "--batch-size", "0"], 2),
        ("merge corrupt chunk", ["simulate", "merge", p0, str(bad["part_chunk.h5"]), "--out", "m.h5"], 2),
        ("merge text part", ["simulate", "merge", p0, str(bad["text"]), "--out", "m.h5"], 2),
        ("merge --out = part (absolute)", ["simulate", "merge", p0, p1, "--out",
                                           str(Path(p1).resolve())], 2),
        ("bank --threads 0", ["simulate", "bank", "--n-regions", "20", "--quick", "--threads",
                              "0", "--out", "b.h5"], 2),
        ("localize text .fif", ["localize", model, str(bad["fif"]), "-o", "est.h5"], 2),
    ]  # fmt: skip
    writers = {
        "export": ["export", ck, "-o", "ro/m.pt"],
        "simulate dataset": [*ds, "--bank", bank, "--out", "ro/d.h5"],
        "simulate merge": ["simulate", "merge", p0, p1, "--out", "ro/m.h5"],
        "simulate bank": ["simulate", "bank", "--n-regions", "20", "--quick", "--out", "ro/b.h5"],
        "train": ["train", "--preset", "tiny", "--out", "ro/run", "--max-steps", "1"],
        "evaluate": ["evaluate", ck, "--out", "ro/eval", "--n", "2"],
        "benchmark": ["benchmark", "--out", "ro/report"],
        "headmodel build": ["headmodel", "build", "--out", "ro/hm.npz"],
        "localize": ["localize", model, str(bad["fif"]), "-o", "ro/est.h5"],
        "demo": ["demo", "--out", "ro/demo"],
    }
    cases += [(f"read-only folder: {name}", argv, 2) for name, argv in writers.items()]
    infer = "fairesi-infer"
    cases += [
        ("infer output = input", [infer, model, x, x], 2),
        ("infer crafted archive", [infer, str(bad["crafted.pt"]), x, "y.npy"], 3),
        ("infer garbage model", [infer, str(bad["garbage.pt"]), x, "y.npy"], 3),
        ("infer a directory", [infer, model, "folder", "y.npy"], 4),
        ("infer /dev/zero", [infer, model, "/dev/zero", "y.npy"], 4),
        ("infer text input", [infer, model, str(bad["text"]), "y.npy"], 4),
        ("infer read-only folder", [infer, model, x, "ro/y.npy"], 5),
    ]
    return cases


def run_cli(work: Path, fx: dict[str, Path], tally: Tally) -> None:
    """Run every bad-input case; handled = the expected code with one line, no traceback."""
    where = work / "cli"
    where.mkdir()
    bad = _bad_files(where, fx)
    try:
        from fairesi.runner import runner_path

        runner = str(runner_path())
    except Exception:  # noqa: BLE001 - a build without the runner: its cases are skipped
        runner = None
    root = os.geteuid() == 0
    for name, argv, code in cli_cases(fx, bad):
        if argv[0] == "fairesi-infer":
            if runner is None:
                continue
            command = [runner, *argv[1:]]
        else:
            command = [sys.executable, "-m", "fairesi", *argv]
        before = {**_digest(fx["checkpoint"].parent.parent), **_digest(where)}
        proc = subprocess.run(
            command,
            cwd=where,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=_drop_permission_override if root and "ro/" in " ".join(argv) else None,
        )
        after = {**_digest(fx["checkpoint"].parent.parent), **_digest(where)}
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln or "Traceback" in ln]
        one_line = len(lines) == 1 and "Traceback" not in proc.stderr
        handled = proc.returncode == code and one_line
        changed = sorted(k for k in before if after.get(k) != before[k])
        litter = sorted(k for k in after.keys() - before.keys())
        tally.add(
            handled,
            lost=bool(changed or litter),
            note=f"{name}: exit {proc.returncode} (want {code}); {proc.stderr.strip()[-300:]!r}"
            + (f"; changed {changed}" if changed else "")
            + (f"; left {litter}" if litter else ""),
        )
    (where / "ro").chmod(0o755)


# ---------------------------------------------------------------------------------------
# fuzz: mutated files for every reader.


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption of a binary file."""
    kind = int(rng.integers(0, 7))
    raw = bytearray(data)
    if kind <= 1:  # flip a few bits
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(0, len(raw)))] ^= 1 << int(rng.integers(0, 8))
        return bytes(raw)
    if kind == 2:  # truncate
        return bytes(raw[: int(rng.integers(0, len(raw)))])
    if kind == 3:  # append junk
        return bytes(raw) + rng.bytes(int(rng.integers(1, 4096)))
    if kind == 4:  # overwrite a span with zeros or random bytes
        start = int(rng.integers(0, len(raw)))
        span = min(int(rng.integers(1, 512)), len(raw) - start)
        raw[start : start + span] = bytes(span) if rng.random() < 0.5 else rng.bytes(span)
        return bytes(raw)
    if kind == 5:  # the header survives, the rest is random
        keep = int(rng.integers(8, 512))
        return bytes(raw[:keep]) + rng.bytes(int(rng.integers(0, 4096)))
    return b"" if rng.random() < 0.2 else rng.bytes(int(rng.integers(1, 4096)))


def _reader(kind: str) -> Callable[[Path], None]:
    """The function a command uses to read a file of this kind (reads everything)."""
    if kind == "checkpoint":
        from fairesi.train import load_checkpoint

        return lambda path: load_checkpoint(path)
    if kind == "bank":
        from fairesi.simulate import WaveformBank

        return lambda path: WaveformBank.load(path)
    if kind == "dataset":
        from fairesi.data import DatasetFile

        def read(path: Path) -> None:
            data = DatasetFile(path)
            data.batch(range(len(data)))
            data.close()

        return read
    raise ValueError(f"unknown reader {kind!r}")


def fuzz_worker(kind: str, source: Path, start: int, count: int, seed: int, work: Path) -> None:
    """Read mutants ``start .. count - 1`` of ``source`` in this process, appending one JSON
    line per file to ``work/results.jsonl`` (mutant i depends only on (seed, i), so a
    worker killed on a hung file is restarted after it)."""
    import warnings

    warnings.simplefilter("ignore")
    read = _reader(kind)
    original = source.read_bytes()
    with open(work / "results.jsonl", "a") as results:
        for i in range(start, count):
            rng = np.random.default_rng([seed, i])
            path = work / f"{kind}-{i}{source.suffix}"
            data = original if rng.random() < 0.05 else mutate(original, rng)
            path.write_bytes(data)
            detail = ""
            try:
                read(path)
                outcome = "accepted"
            except (ValueError, OSError) as err:  # the CLI's one-line user errors
                outcome = "refused" if "\n" not in str(err).strip() else "multi-line"
            except Exception as err:  # noqa: BLE001 - what the bench is looking for
                outcome, detail = "crashed", f"{type(err).__name__}: {str(err)[:200]}"
            if path.read_bytes() != data:
                outcome = "lost"
            path.unlink()
            results.write(json.dumps({"i": i, "outcome": outcome, "detail": detail}) + "\n")
            results.flush()


def _fuzz_reader(kind: str, source: Path, count: int, seed: int, folder: Path,
                 stall_s: float) -> list[dict]:  # fmt: skip
    """Run the worker, restarting it after a file it hangs on (recorded as 'hung')."""
    log = folder / "results.jsonl"
    done: list[dict] = []
    while len(done) < count:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--fuzz-worker", kind, "--source", str(source),
             "--start", str(len(done)), "--fuzz-count", str(count), "--seed", str(seed),
             "--work", str(folder)],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        last, seen = time.monotonic(), len(done)
        while proc.poll() is None:
            time.sleep(0.1)
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) > seen:
                seen, last = len(lines), time.monotonic()
            elif time.monotonic() - last > stall_s:
                proc.kill()
                proc.wait()
                break
        done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if len(done) < count:  # the worker hung or died on file len(done)
            what = "hung" if proc.returncode == -signal.SIGKILL else f"died ({proc.returncode})"
            with open(log, "a") as results:
                entry = {"i": len(done), "outcome": "crashed", "detail": what}
                results.write(json.dumps(entry) + "\n")
            done.append(entry)
    return done


def run_fuzz(work: Path, fx: dict[str, Path], count: int, npy_count: int, seed: int,
             tallies: dict[str, Tally], stall_s: float = 90.0, jobs: int = 1,
             readers: tuple[str, ...] = FUZZ_READERS) -> None:  # fmt: skip
    """Each reader's fuzz in a worker process (a hard crash or a hang is counted); ``jobs``
    readers at once."""
    from concurrent.futures import ThreadPoolExecutor

    sources = {"checkpoint": fx["checkpoint"], "bank": fx["bank.h5"], "dataset": fx["part0.h5"]}
    for kind in readers:
        (work / f"fuzz-{kind}").mkdir()
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        futures = {
            kind: pool.submit(
                _fuzz_reader, kind, sources[kind], count, seed, work / f"fuzz-{kind}", stall_s
            )
            for kind in readers
        }
        npy = pool.submit(_fuzz_npy, npy_count, seed) if npy_count > 0 else None
        for kind, future in futures.items():
            _tally_reader(tallies[f"fuzz {kind}"], future.result())
        if npy is not None:
            _tally_npy(tallies["fuzz npy"], npy_count, *npy.result())


def _tally_reader(tally: Tally, results: list[dict]) -> None:
    """Count one reader's fuzz results."""
    outcomes = Counter(r["outcome"] for r in results)
    tally.tried += len(results)
    tally.handled += outcomes["accepted"] + outcomes["refused"]
    tally.crashed += outcomes["crashed"] + outcomes["multi-line"]
    tally.lost += outcomes["lost"]
    examples = sorted({r["detail"] for r in results if r["detail"]})[:5]
    tally.notes.append(
        f"{outcomes['accepted']} accepted, {outcomes['refused']} refused"
        + (f"; e.g. {examples}" if examples else "")
    )


def _fuzz_npy(npy_count: int, seed: int) -> tuple[dict | None, str]:
    """``bench/fuzz_npy.py`` on ``npy_count`` files: (its tallies, '') or (None, why)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import fuzz_npy

    try:
        return fuzz_npy.run(npy_count, seed), ""
    except (AssertionError, RuntimeError, subprocess.CalledProcessError) as err:
        return None, str(err)[:500]


def _tally_npy(tally: Tally, npy_count: int, result: dict | None, failure: str) -> None:
    """Count the ``.npy`` fuzz: one crash if the sanitised reader failed."""
    if result is None:
        tally.tried += npy_count
        tally.crashed += 1
        tally.handled += npy_count - 1
        tally.notes.append(f"fuzz_npy failed: {failure}")
        return
    tally.tried += result["files"]
    tally.handled += result["files"]
    tally.notes.append(
        f"{result['accepted']} accepted (read as numpy reads them), {result['rejected']} "
        "refused, no sanitizer report"
    )


# ---------------------------------------------------------------------------------------
# signals: SIGTERM and SIGKILL in every stage of the resumable writers, then a rerun.

_SLOW = textwrap.dedent(
    """
    import sys, time
    import fairesi.data.h5 as h5
    import fairesi.simulate.bank as bank
    from fairesi.data import Synthesizer

    h5._SHARD_SAMPLES = 6
    delay = float(sys.argv[1])
    compose, copy_rows, simulate = Synthesizer._compose, h5._copy_rows, bank._simulate_shard

    def slow_compose(self, split, index, draw=0):
        time.sleep(delay)
        return compose(self, split, index, draw)

    def slow_copy(*args):
        time.sleep(delay)
        return copy_rows(*args)

    def slow_simulate(*args):
        time.sleep(delay)
        return simulate(*args)

    Synthesizer._compose, h5._copy_rows, bank._simulate_shard = slow_compose, slow_copy, slow_simulate
    import h5py

    create_dataset = h5py.Group.create_dataset

    def slow_create(self, *args, **kwargs):  # a bank's final file written slowly
        dataset = create_dataset(self, *args, **kwargs)
        time.sleep(delay)
        return dataset

    h5py.Group.create_dataset = slow_create
    from fairesi.cli import main

    sys.exit(main(sys.argv[2:]))
    """
)


def _wait(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Wait until ``condition()``; False if the process ended or time ran out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether two files hold the same arrays, bit for bit (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind in "fc") for k in a
    )


def _count_signal_case(tally: Tally, label: str, landed: bool, clean_stop: bool,
                       proc: subprocess.Popen, err: str, rerun: subprocess.CompletedProcess,
                       identical: bool, left: list[str]) -> None:  # fmt: skip
    """Count one interrupted-then-rerun case: handled if the signal landed in its stage,
    the command stopped cleanly and the rerun succeeded; data lost if the result differs
    from the uninterrupted run's or anything was left beside it."""
    tally.add(
        landed and clean_stop and rerun.returncode == 0,
        lost=not identical or bool(left),
        note=f"{label}: signal landed {landed}, exit {proc.returncode}, rerun "
        f"{rerun.returncode}, identical {identical}, left {left}; {err.strip()[-200:]!r} "
        f"{rerun.stderr.strip()[-300:]!r}",
    )


def run_signals(work: Path, fx: dict[str, Path], tally: Tally) -> None:
    """Interrupt each stage with SIGTERM and SIGKILL, rerun, compare with one clean run."""
    toy, bank = str(fx["toy.npz"]), str(fx["bank.h5"])
    dataset = ["simulate", "dataset", "--config", "SimEEG", "--n-rings", "1", "--n-samples",
               "1200", "--n", "30", "--batch-size", "2", "--head-model", toy, "--bank", bank,
               "--no-progress"]  # fmt: skip
    bank_argv = ["simulate", "bank", "--n-regions", "24", "--quick", "--threads", "1",
                 "--no-progress"]  # fmt: skip
    merge = ["simulate", "merge", str(fx["part0.h5"]), str(fx["part1.h5"])]
    stages = {
        "dataset shards": (dataset, "d.h5", lambda w: len(list(w.glob("d.h5.shards/0*.h5"))) >= 2),
        "dataset merge": (dataset, "d.h5", lambda w: any(w.glob(".d.h5.*.part"))),
        "bank runs": (bank_argv, "b.h5", lambda w: len(list(w.glob("b.h5.shards/*/*.npz"))) >= 2),
        "bank file": (bank_argv, "b.h5", lambda w: any(w.glob(".b.h5.*.part"))),
        "merge": (merge, "m.h5", lambda w: any(w.glob(".m.h5.*.part"))),
    }
    for stage, (argv, out_name, ready) in stages.items():
        reference_dir = work / f"signals-{stage.replace(' ', '-')}-reference"
        reference_dir.mkdir()
        run = [sys.executable, "-c", _SLOW, "0", *argv, "--out"]
        subprocess.run([*run, out_name], cwd=reference_dir, env=_env(), check=True,
                       capture_output=True)  # fmt: skip
        reference = _h5_arrays(reference_dir / out_name)
        delay = "0.3" if stage.startswith("bank") else "0.05"
        if stage == "merge":
            delay = "0.5"
        for sig in (signal.SIGTERM, signal.SIGKILL):
            where = work / f"signals-{stage.replace(' ', '-')}-{sig.name}"
            where.mkdir()
            slow = [sys.executable, "-c", _SLOW, delay, *argv, "--out", out_name]
            proc = subprocess.Popen(slow, cwd=where, env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            landed = _wait(lambda where=where, ready=ready: ready(where), proc)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            clean_stop = sig == signal.SIGKILL or (
                proc.returncode == 128 + signal.SIGTERM
                and not any(where.glob(".*.part"))
                and not any(where.glob(".*.lock"))
            )
            rerun = subprocess.run([*run, out_name], cwd=where, env=_env(), capture_output=True,
                                   text=True)  # fmt: skip
            identical = rerun.returncode == 0 and _same_arrays(
                reference, _h5_arrays(where / out_name)
            )
            left = sorted(p.name for p in where.iterdir() if p.name != out_name)
            _count_signal_case(tally, f"{stage} {sig.name}", landed, clean_stop, proc, err,
                               rerun, identical, left)  # fmt: skip


# Training: each stage is held (sleep) at its N-th occurrence after a marker file says so,
# and the signal is sent then; everything else runs at full speed.
_TRAIN_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import fairesi.train.loop as loop
    import fairesi.train.runtime as runtime

    stage, nth = sys.argv[1], int(sys.argv[2])
    seen = {"n": 0}

    def hold(name):
        if name != stage:
            return
        seen["n"] += 1
        if seen["n"] == nth:
            Path("stage-reached").write_text(stage)
            time.sleep(120)

    step, validate = loop.Trainer.train_step, loop.Trainer.validate
    write_checkpoint, log_write = loop.write_checkpoint, runtime.TrainingLog.write

    def held_step(self, batch):
        hold("step")  # before the step: its batch is replayed on resume
        return step(self, batch)

    def held_validate(self):
        hold("validate")
        return validate(self)

    def held_write(path, payload):
        hold(Path(path).name)  # before best.pt / last.pt is written
        return write_checkpoint(path, payload)

    def held_log(self, **row):
        log_write(self, **row)
        if row.get("kind") == "epoch":
            hold("epoch row")  # the epoch's row written, its best.pt / last.pt not yet
    loop.Trainer.train_step, loop.Trainer.validate = held_step, held_validate
    loop.write_checkpoint, runtime.TrainingLog.write = held_write, held_log
    from fairesi.cli import main

    sys.exit(main(sys.argv[3:]))
    """
)
#: Training stages: name -> the occurrence at which the signal lands.
TRAIN_STAGES = {"step": 5, "validate": 2, "epoch row": 2, "best.pt": 1, "last.pt": 3}
#: Columns of train_log.csv that are timings, not results.
_TIMING_COLUMNS = ("samples_per_s", "wall_s")


def _train_result(run: Path) -> dict[str, object]:
    """What a training run produced, without timings: weights and progress of best.pt and
    last.pt, and the log's rows."""
    import csv

    from fairesi.train import read_checkpoint

    result: dict[str, object] = {}
    for name in ("best.pt", "last.pt"):
        payload = read_checkpoint(run / name)
        result[name] = (
            {k: v.numpy() for k, v in payload["state_dict"].items()},
            payload["progress"],
            payload["optimizer"]["state"],
        )
    with open(run / "train_log.csv", newline="") as f:
        result["log"] = [
            {k: v for k, v in row.items() if k not in _TIMING_COLUMNS} for row in csv.DictReader(f)
        ]
    return result


def _same_train_result(a: dict[str, object], b: dict[str, object]) -> bool:
    import torch

    def same(x: object, y: object) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and torch.equal(x, y)
        if isinstance(x, np.ndarray):
            return isinstance(y, np.ndarray) and np.array_equal(x, y)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y, strict=True))
        return x == y

    return same(a, b)


def run_train_signals(work: Path, tally: Tally) -> None:
    """SIGTERM and SIGKILL at every stage of training, then ``--resume``; the result must
    equal an uninterrupted run's (weights, optimizer state, progress, log rows)."""
    argv = ["train", "--preset", "tiny", "--n-train-samples", "48", "--n-val-samples", "16",
            "--batch-size", "8", "--epochs", "3", "--checkpoint-every", "4", "--seed", "0",
            "--threads", "1", "--no-progress", "--out", "run"]  # fmt: skip
    resume = ["train", "--resume", "--out", "run", "--threads", "1", "--no-progress"]
    reference_dir = work / "signals-train-reference"
    reference_dir.mkdir()
    subprocess.run([sys.executable, "-m", "fairesi", *argv], cwd=reference_dir, env=_env(),
                   check=True, capture_output=True)  # fmt: skip
    reference = _train_result(reference_dir / "run")
    for stage, nth in TRAIN_STAGES.items():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            where = work / f"signals-train-{stage.replace(' ', '-')}-{sig.name}"
            where.mkdir()
            held = [sys.executable, "-c", _TRAIN_STAGE, stage, str(nth), *argv]
            proc = subprocess.Popen(held, cwd=where, env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            marker = where / "stage-reached"
            landed = _wait(marker.exists, proc)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            marker.unlink(missing_ok=True)
            clean_stop = sig == signal.SIGKILL or (
                proc.returncode == 128 + signal.SIGTERM and not any(where.rglob(".*.lock"))
            )
            rerun = subprocess.run([sys.executable, "-m", "fairesi", *resume], cwd=where,
                                   env=_env(), capture_output=True, text=True)  # fmt: skip
            identical = rerun.returncode == 0 and _same_train_result(
                reference, _train_result(where / "run")
            )
            expected = {"best.pt", "last.pt", "train_log.csv", "tensorboard"}
            left = sorted(p.name for p in (where / "run").iterdir() if p.name not in expected)
            _count_signal_case(tally, f"train {stage} {sig.name}", landed, clean_stop, proc,
                               err, rerun, identical, left)  # fmt: skip


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one line per group and the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fuzz-count",
        type=int,
        default=50,
        help="mutated files per reader: checkpoint, bank, dataset (default 50)",
    )
    parser.add_argument(
        "--npy-count",
        type=int,
        default=200,
        help="mutated .npy files for the runner's reader (default 200)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="fuzzed readers run at once (default 1)"
    )
    parser.add_argument(
        "--groups",
        default="cli,fuzz",
        help="comma-separated groups to run: cli, fuzz, signals (default: cli,fuzz; "
        "signals adds the SIGTERM/SIGKILL cases, about 1.5 minutes)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every failure noted")
    parser.add_argument(
        "--readers",
        default=",".join(FUZZ_READERS),
        help="comma-separated fuzzed readers (default: checkpoint,bank,dataset; --npy-count 0 "
        "leaves out the .npy reader)",
    )
    parser.add_argument("--fuzz-worker", choices=FUZZ_READERS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--stall",
        type=float,
        default=90.0,
        help="seconds a reader may spend on one fuzzed file before it is killed and the "
        "file counted as a crash (default 90; fairesi's own HDF5 guard refuses a file after "
        "60)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.fuzz_worker:
        fuzz_worker(
            args.fuzz_worker, args.source, args.start, args.fuzz_count, args.seed, args.work
        )
        return 0
    groups = args.groups.split(",")
    start = time.perf_counter()
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="fairesi-robustness-") as tmp:
        work = Path(tmp)
        fixtures = make_fixtures(work)
        if "cli" in groups:
            tallies["cli bad inputs"] = Tally()
            run_cli(work, fixtures, tallies["cli bad inputs"])
        if "fuzz" in groups:
            readers = tuple(r for r in args.readers.split(",") if r in FUZZ_READERS)
            for kind in (*readers, "npy") if args.npy_count > 0 else readers:
                tallies[f"fuzz {kind}"] = Tally()
            run_fuzz(
                work, fixtures, args.fuzz_count, args.npy_count, args.seed, tallies, args.stall,
                args.jobs, readers,
            )  # fmt: skip
        if "signals" in groups:
            tallies["signals + rerun"] = Tally()
            run_signals(work, fixtures, tallies["signals + rerun"])
            tallies["train signals"] = Tally()
            run_train_signals(work, tallies["train signals"])
    print(f"{'group':<18} {'tried':>6} {'handled':>8} {'crashed':>8} {'lost data':>10}")
    total = Tally()
    for name, tally in tallies.items():
        print(f"{name:<18} {tally.tried:>6} {tally.handled:>8} {tally.crashed:>8} {tally.lost:>10}")
        for field_name in ("tried", "handled", "crashed", "lost"):
            setattr(total, field_name, getattr(total, field_name) + getattr(tally, field_name))
    print(f"{'total':<18} {total.tried:>6} {total.handled:>8} {total.crashed:>8} {total.lost:>10}")
    for name, tally in tallies.items():
        for note in tally.notes if args.verbose or tally.crashed or tally.lost else []:
            print(f"  {name}: {note}")
        if not (args.verbose or tally.crashed or tally.lost) and tally.notes and "fuzz" in name:
            print(f"  {name}: {tally.notes[-1]}")
    print(f"{time.perf_counter() - start:.0f} s")
    return 1 if total.crashed or total.lost else 0


if __name__ == "__main__":
    sys.exit(main())
