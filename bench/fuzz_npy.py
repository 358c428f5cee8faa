"""Fuzz the runner's .npy reader under AddressSanitizer and UBSan.

Builds ``cpp/runner/fuzz_npy.cpp`` + ``cpp/runner/npy.cpp`` with
``-fsanitize=address,undefined``, writes ``--count`` mutated .npy files (bit flips,
truncations, appended bytes, edited headers and header lengths, random bodies) and feeds them
all to the driver in one process. The run passes when the driver exits cleanly (no
sanitizer report, no crash, no unexpected exception), every file got a verdict, and every
file the reader accepted is read identically by ``numpy.load`` (same shape, same float32
values), so the reader never accepts garbage.

    python bench/fuzz_npy.py --count 5000        # the full run (bench/RESULTS.md)

``tests/test_runner.py`` runs it with a smaller count.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "cpp" / "runner" / "fuzz_npy.cpp", ROOT / "cpp" / "runner" / "npy.cpp"]

# Header edits: (text to find, replacement) pairs applied to a valid header.
HEADER_EDITS = [
    ("'<f4'", "'<i4'"),
    ("'<f4'", "'<f2'"),
    ("'<f4'", "'|b1'"),
    ("'<f4'", "'<c8'"),
    ("'<f4'", "'O'"),
    ("'<f4'", "''"),
    ("'<f4'", "'<f4"),
    ("'<f8'", "'<f4'"),
    ("'<f4'", "'<f8'"),
    ("'>f8'", "'<f8'"),
    ("False", "True"),
    ("False", "Fals"),
    ("False", "0"),
    ("'shape'", "'shap'"),
    ("'descr'", "'d'"),
    ("{", "{'extra': 1, "),
    ("{", "["),
    ("}", ""),
    ("(", "["),
    (")", ""),
    (",)", ")"),
    ("), }", "))}"),
    ("(", "(-1, "),
    ("(", "(0, "),
    ("(", "(99999999999999999999, "),
    ("(", "(4294967296, 4294967296, "),
    ("(", "(1, 1, 1, 1, "),
    ("(", "(()"),
    (" ", "\\"),
    ("'", '"'),
    (", }", ", 'descr': '<f8', }"),
]


def build_driver(workdir: Path) -> Path:
    """Compile the sanitised driver into ``workdir``; returns its path."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"C++ compiler {compiler!r} not found (set CXX)")
    exe = workdir / "fuzz_npy"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-g",
            "-O1",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
            *map(str, SOURCES),
            "-o",
            str(exe),
        ],
        check=True,
    )
    return exe


def _valid_file(rng: np.random.Generator) -> bytes:
    """A valid .npy of a small float array: random rank, shape, dtype, byte order, version."""
    shape = tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(2, 4))))
    dtype = np.dtype(str(rng.choice(["<f4", ">f4", "<f8", ">f8"])))
    array = rng.standard_normal(shape).astype(dtype)
    buffer = io.BytesIO()
    version = [(1, 0), (2, 0), (3, 0)][int(rng.integers(0, 3))]
    np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


def _header_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the header dict of a valid file."""
    start = 10 if data[6] == 1 else 12
    length = int.from_bytes(data[8:start], "little")
    return start, start + length


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption of a valid .npy file."""
    kind = int(rng.integers(0, 7))
    raw = bytearray(data)
    if kind == 0:  # flip a few bits anywhere
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(0, len(raw)))] ^= 1 << int(rng.integers(0, 8))
        return bytes(raw)
    if kind == 1:  # truncate
        return bytes(raw[: int(rng.integers(0, len(raw)))])
    if kind == 2:  # append junk
        return bytes(raw) + rng.bytes(int(rng.integers(1, 64)))
    start, end = _header_bounds(data)
    if kind == 3:  # edit the header text, keeping its length field consistent
        header = data[start:end].decode("latin-1")
        old, new = HEADER_EDITS[int(rng.integers(0, len(HEADER_EDITS)))]
        header = header.replace(old, new, 1)
        size = len(header).to_bytes(2 if data[6] == 1 else 4, "little")
        return data[:8] + size + header.encode("latin-1") + data[end:]
    if kind == 4:  # random header length field
        width = 2 if data[6] == 1 else 4
        return data[:8] + rng.bytes(width) + data[8 + width :]
    if kind == 5:  # random version byte
        raw[6] = int(rng.integers(0, 256))
        return bytes(raw)
    # random body after a valid magic string
    return data[:8] + rng.bytes(int(rng.integers(0, 256)))


def _fnv1a(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def _numpy_reading(path: Path) -> str | None:
    """The driver's "ok" line for numpy's reading of ``path`` (None if numpy refuses it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float64 beyond float32 range: inf, like ours
            array = np.load(path, allow_pickle=False)
            data = array.astype("<f4").tobytes()
    except Exception:
        return None
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        return None
    dims = "x".join(str(n) for n in array.shape)
    return f"ok {dims} {_fnv1a(data):016x}"


def run(count: int, seed: int) -> dict[str, int | float]:
    """Fuzz ``count`` mutants; returns the tallies. Raises AssertionError on any failure."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fairesi-fuzz-") as tmp:
        workdir = Path(tmp)
        driver = build_driver(workdir)
        paths = []
        for i in range(count):
            path = workdir / f"{i}.npy"
            valid = _valid_file(rng)
            # One in ten stays valid, so acceptance is exercised too.
            path.write_bytes(valid if rng.random() < 0.1 else mutate(valid, rng))
            paths.append(path)
        listing = workdir / "files.txt"
        listing.write_text("\n".join(map(str, paths)) + "\n")
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86")
        proc = subprocess.run(
            [str(driver), str(listing)],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            check=False,
        )
        assert proc.returncode == 0, (
            f"the sanitised reader failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
        verdicts = proc.stdout.splitlines()
        assert len(verdicts) == count, f"{len(verdicts)} verdicts for {count} files"
        accepted = 0
        for path, verdict in zip(paths, verdicts, strict=True):
            if verdict.startswith("ok "):
                accepted += 1
                expected = _numpy_reading(path)
                assert verdict == expected, (
                    f"{path.name}: reader says {verdict!r}, numpy {expected!r}"
                )
            else:
                assert verdict.startswith("error input '"), f"{path.name}: {verdict!r}"
    return {
        "files": count,
        "accepted": accepted,
        "rejected": count - accepted,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="mutated files (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    tally = run(args.count, args.seed)
    print(
        f"fuzz_npy: {tally['files']} files, {tally['accepted']} accepted (each read as numpy "
        f"reads it), {tally['rejected']} rejected with a message, no sanitizer report, "
        f"{tally['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
