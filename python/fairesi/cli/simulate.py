"""``fairesi simulate``: Jansen-Rit source simulation.

Sub-commands:

``fairesi simulate bank``
    Simulate the network and write the spike/background waveform bank (HDF5).
``fairesi simulate dataset``
    Write paired (sensor, source) samples of a SimMEG/SimEEG split to HDF5
    (:mod:`fairesi.cli._simulate_dataset`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fairesi.cli import FairesiUserError
from fairesi.cli._dask import add_dask_arguments, dask_client
from fairesi.cli._simulate_dataset import _sigterm_stops_cleanly, register_dataset

QUICK = {"run_duration_s": 15.0, "settings_index": [2], "max_rounds": 1, "background_s": 20.0}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate`` and its sub-commands to the top-level parser."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate Jansen-Rit source activity (waveform bank)",
        description="Simulate Jansen-Rit neural-mass networks (C++/OpenMP simulator).",
    )
    sub = parser.add_subparsers(dest="simulate_command", metavar="WHAT")
    parser.set_defaults(func=lambda args: _print_help(parser))
    _register_bank(sub)
    register_dataset(sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _register_bank(sub: argparse._SubParsersAction) -> None:
    from fairesi.simulate import default_bank_path

    p = sub.add_parser(
        "bank",
        help="build the spike and background waveform bank",
        description=(
            "Simulate the Jansen-Rit network of a head model and write the waveform bank "
            "(spike segments of every region + background activity) to HDF5. Finished runs "
            "are kept in FILE.shards/ so an interrupted build resumes where it stopped; the "
            "bank file itself is written atomically. Recipes: 'grouped' (default: many "
            "well-separated excitable regions per run, minutes) or 'deepsif' (one run per "
            "source region, as DeepSIF: hours to days)."
        ),
    )
    p.add_argument(
        "--out",
        type=Path,
        default=default_bank_path(),
        help="output HDF5 file of the bank (default: $FAIRESI_CACHE or ~/.cache/fairesi, "
        "waveform_bank.h5)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--head-model",
        type=Path,
        default=None,
        help="head model file (HeadModel.save); default: the embedded fsaverage5/994 model",
    )
    p.add_argument(
        "--connectome",
        type=Path,
        default=None,
        help="user connectome (.npy weights, .npz with weights/tract_lengths, or TVB .zip); "
        "default: exponential distance rule on the head model's region centroids",
    )
    src.add_argument(
        "--n-regions",
        type=int,
        default=None,
        help="use the toy head model with this many regions instead (for trials)",
    )
    p.add_argument(
        "--recipe",
        choices=("grouped", "deepsif"),
        default="grouped",
        help="bank recipe (default: grouped)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds simulated per spike run (default 30 grouped, 200 deepsif)",
    )
    p.add_argument(
        "--background",
        type=float,
        default=None,
        help="seconds of background activity (default: 60; 20 with --quick)",
    )
    p.add_argument(
        "--min-spikes", type=int, default=5, help="spikes wanted per region (default: 5)"
    )
    p.add_argument(
        "--max-rounds",
        type=int,
        default=None,
        help="rounds of runs, the later ones for regions short of spikes (default: 3; 1 with "
        "--quick)",
    )
    p.add_argument(
        "--regions",
        type=str,
        default=None,
        help="only these source regions, e.g. '0-9,17' (default: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every noise stream (default: 0)")
    p.add_argument(
        "--threads", type=int, default=None, help="runs simulated at once (default: all cores)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small demo bank in 1-2 minutes: 15 s runs, one setting, one round, 20 s "
        "background (some regions may lack spikes); --duration, --background and "
        "--max-rounds given explicitly still apply",
    )
    add_dask_arguments(p, "run the network runs")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_bank)


def _parse_regions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    regions: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            regions.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise FairesiUserError(f"--regions {text!r}: expected a list like '0-9,17'") from None
    return regions


def _load_head_model(args: argparse.Namespace):
    try:
        from fairesi.headmodel import HeadModel
    except ImportError as err:
        raise FairesiUserError(f"the head model module is not available: {err}") from None
    if args.n_regions is not None:
        return HeadModel.toy(n_regions=args.n_regions)
    if args.head_model is not None:
        return HeadModel.load(args.head_model)
    return HeadModel.default()


def run_bank(args: argparse.Namespace) -> int:
    """Build the waveform bank as asked on the command line; returns the exit code."""
    from tqdm import tqdm

    from fairesi.io import exclusive_output
    from fairesi.simulate import DEEPSIF_SETTINGS, Connectome, build_bank
    from fairesi.simulate.bank import remove_shards

    if args.connectome is not None:
        connectome = Connectome.load(args.connectome)
    else:
        head_model = _load_head_model(args)
        connectome = Connectome.from_geometry(head_model.region_centroids_mm)
    options = {
        "recipe": args.recipe,
        "seed": args.seed,
        "run_duration_s": args.duration,
        "background_s": 60.0 if args.background is None else args.background,
        "min_spikes": args.min_spikes,
        "max_rounds": 3 if args.max_rounds is None else args.max_rounds,
        "regions": _parse_regions(args.regions),
        "n_threads": args.threads,
    }
    if args.quick:  # the quick values, except where an option was given explicitly
        given = {
            "run_duration_s": args.duration,
            "background_s": args.background,
            "max_rounds": args.max_rounds,
        }
        for key, value in given.items():
            options[key] = QUICK[key] if value is None else value
        options["settings"] = tuple(DEEPSIF_SETTINGS[i] for i in QUICK["settings_index"])
    shard_dir = args.out.with_name(args.out.name + ".shards")
    bar = tqdm(total=1, unit="run", desc="simulate bank", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    start = time.perf_counter()
    try:
        # The cluster is reached (or refused) before anything is written.
        with _sigterm_stops_cleanly(), dask_client(args) as client, exclusive_output(args.out):
            bank = build_bank(
                connectome, shard_dir=shard_dir, progress=progress, client=client, **options
            )
            bank.metadata["build_wall_s"] = round(time.perf_counter() - start, 1)
            bank.save(args.out)
    finally:
        bar.close()
    remove_shards(shard_dir)
    counts = bank.spikes_per_region()
    print(
        f"wrote {args.out}: {bank.spikes.shape[0]} spikes, {int((counts > 0).sum())}/"
        f"{bank.n_regions} regions with spikes (min {int(counts.min())}, median "
        f"{int(sorted(counts)[len(counts) // 2])}), {bank.background.shape[1] / bank.sfreq:g} s "
        f"background, {bank.metadata['build_wall_s']} s"
    )
    return 0
