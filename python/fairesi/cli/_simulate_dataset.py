"""``fairesi simulate dataset`` (write paired samples to HDF5) and ``fairesi simulate merge``
(join the files of sample ranges written by separate workers).

Registered by :mod:`fairesi.cli.simulate` as one of its sub-commands (the leading
underscore keeps the CLI discovery from registering it as a top-level command).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from fairesi.cli import FairesiUserError
from fairesi.cli._dask import add_dask_arguments, dask_client

# fairesi.data.PRESETS and SPLITS, spelled out so that `fairesi --help` does not import
# torch and numba (tests/test_data.py checks that they agree).
CONFIGS = ("SimEEG", "SimEEGMEG", "SimMEG")
SPLITS = ("train", "val", "test")


@contextlib.contextmanager
def _sigterm_stops_cleanly() -> Iterator[None]:
    """SIGTERM (a batch scheduler's stop, ``kill``) raises ``fairesi.train.Terminated``, a
    ``KeyboardInterrupt``, inside the block: the file being written is removed, finished
    shards and the inputs stay, the lock is released, and the CLI exits with 143 and one
    line. Without this, SIGTERM killed the process and left its temporary files.

    A signal handler's exception that lands in a finalizer (h5py frees objects through
    weakref callbacks) is swallowed by Python; such a SIGTERM is sent again from a helper
    thread 10 ms later (raising it inside the hook would be swallowed as well), so it still
    stops the command, without an "Exception ignored" traceback. If the block finishes
    first, the command still ends as terminated (its output complete)."""
    import os
    import signal
    import sys
    import threading

    from fairesi.train.runtime import SigtermAsInterrupt, Terminated

    timers: list[threading.Timer] = []

    def redeliver(unraisable) -> None:
        if isinstance(unraisable.exc_value, Terminated):
            timer = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timers.append(timer)
            timer.start()
        else:
            previous_hook(unraisable)

    previous_hook = sys.unraisablehook
    sys.unraisablehook = redeliver
    signals = SigtermAsInterrupt()
    signals.install()
    finished = False
    try:
        yield
        finished = True
    finally:
        for timer in timers:
            timer.cancel()
        signals.restore()
        sys.unraisablehook = previous_hook
    if finished and timers:
        raise Terminated(f"received signal {int(signal.SIGTERM)}")


def register_dataset(sub: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` sub-command to ``fairesi simulate``'s sub-parsers."""
    from fairesi.simulate import default_bank_path

    p = sub.add_parser(
        "dataset",
        help="write simulated paired (sensor, source) samples to HDF5",
        description=(
            "Synthesise samples of one split of a SimMEG/SimEEG configuration (sources from "
            "the waveform bank, lead-field projection, white sensor noise, DeepSIF "
            "normalisation; docs/protocols.md) and write them to a chunked, gzip-compressed "
            "HDF5 file with the ground truth and all metadata. Sample i of a split depends "
            "only on (seed, split, i), so a file holds exactly what training on the fly sees. "
            "The file is written atomically; more than 4096 samples are first written as "
            "shards in OUT.shards/, so running an interrupted command again resumes it."
        ),
    )
    p.add_argument(
        "--config",
        choices=CONFIGS,
        default="SimMEG",
        help="dataset configuration: SimMEG (306 MEG channels, 500 samples), SimEEG "
        "(256 EEG channels, 260 samples) or SimEEGMEG (both of the same sources, EEG "
        "channels first, 500 samples) (default: SimMEG)",
    )
    p.add_argument("--snr", type=float, default=5.0, help="sensor SNR in dB (default: 5)")
    p.add_argument(
        "--n-sources", type=int, default=1, help="source patches per sample, N_s (default: 1)"
    )
    p.add_argument(
        "--n-rings", type=int, default=2, help="neighbour rings per patch, N_n (default: 2)"
    )
    p.add_argument(
        "--split", choices=SPLITS, default="test", help="which split to write (default: test)"
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="number of samples (default: the rest of the split from --start)",
    )
    p.add_argument(
        "--start",
        type=int,
        default=0,
        help="first sample index; disjoint [start, start + n) ranges are shards of one "
        "dataset (default: 0)",
    )
    p.add_argument(
        "--n-samples",
        type=int,
        default=47904,
        help="total samples of the configuration over the three splits (default: 47904)",
    )
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    p.add_argument(
        "--bank",
        type=Path,
        default=None,
        help=f"waveform bank file (default: {default_bank_path()}, built by "
        "`fairesi simulate bank`)",
    )
    p.add_argument(
        "--head-model",
        type=Path,
        default=None,
        help="head model file (HeadModel.save); default: the embedded fsaverage5/994 model",
    )
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    p.add_argument(
        "--batch-size", type=int, default=64, help="samples synthesised per step (default: 64)"
    )
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_dask_arguments(p, "write sample ranges in parallel, then merge them,")
    p.set_defaults(func=run_dataset)

    m = sub.add_parser(
        "merge",
        help="join dataset files of adjacent sample ranges into one file",
        description="Join files written by `fairesi simulate dataset --start S --n N` for "
        "adjacent ranges of one split (e.g. by the workers of a Dask or Ray cluster, see "
        "docs/scaling.md) into one file, identical to writing the whole range at once. "
        "The parts must share configuration, seed, split, head model and bank; they may "
        "be given in any order and are left in place. The output is written atomically.",
        epilog="Example: fairesi simulate merge parts/train-*.h5 --out train.h5",
    )
    m.add_argument("parts", nargs="+", type=Path, metavar="PART", help="dataset part files")
    m.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    m.set_defaults(func=run_merge)


def run_dataset(args: argparse.Namespace) -> int:
    """Write the dataset file asked for on the command line; returns the exit code."""
    from functools import partial

    from fairesi.data import SimConfig, Synthesizer, write_dataset, write_dataset_dask
    from fairesi.headmodel import HeadModel
    from fairesi.io import check_not_an_input, exclusive_output
    from fairesi.simulate import WaveformBank, default_bank_path

    if args.batch_size < 1:
        raise FairesiUserError(f"--batch-size must be >= 1, got {args.batch_size}")
    bank_path = args.bank if args.bank is not None else default_bank_path()
    if not bank_path.is_file():
        hint = (
            "; build the default bank with `fairesi simulate bank` (or pass --bank FILE)"
            if args.bank is None
            else ""
        )
        raise FileNotFoundError(f"waveform bank {bank_path} does not exist{hint}")
    check_not_an_input(args.out, {"--bank": bank_path, "--head-model": args.head_model})
    config = SimConfig.preset(
        args.config,
        snr_db=args.snr,
        n_sources=args.n_sources,
        n_rings=args.n_rings,
        n_samples=args.n_samples,
    )
    head_model = HeadModel.default() if args.head_model is None else HeadModel.load(args.head_model)
    synth = Synthesizer(head_model, WaveformBank.load(bank_path), config, seed=args.seed)
    n = synth.split_size(args.split) - args.start if args.n is None else args.n
    with _sigterm_stops_cleanly(), dask_client(args) as client, exclusive_output(args.out):
        write = write_dataset if client is None else partial(write_dataset_dask, client=client)
        write(
            args.out,
            synth,
            args.split,
            n,
            start=args.start,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    print(
        f"wrote {args.out}: {args.split} samples {args.start}..{args.start + n - 1} of "
        f"{args.config} (snr {args.snr:g} dB, "
        f"{args.n_sources} source(s), {args.n_rings} ring(s), seed {args.seed})"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """Merge the dataset parts named on the command line; returns the exit code."""
    from fairesi.data import DatasetFile, merge_datasets
    from fairesi.io import check_not_an_input, exclusive_output

    check_not_an_input(args.out, {f"part {p}": p for p in args.parts})
    with _sigterm_stops_cleanly(), exclusive_output(args.out):
        merge_datasets(args.parts, args.out)
    merged = DatasetFile(args.out)
    first = int(merged.attrs["first_sample"])
    print(
        f"wrote {args.out}: {merged.split} samples {first}..{first + len(merged) - 1} "
        f"from {len(args.parts)} part(s)"
    )
    return 0
