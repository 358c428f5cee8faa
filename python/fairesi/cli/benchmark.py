"""``fairesi benchmark``: Table II, several methods on the same test samples."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` subcommand."""
    parser = subparsers.add_parser(
        "benchmark",
        help="evaluate networks and classical inverses side by side (paper Table II)",
        description="For each configuration, synthesise the test split exactly as `fairesi "
        "train --preset PRESET` does, run every method on its first N samples and write "
        "benchmark.md (one table per configuration: mean ± std of precision, recall, LE, SD "
        "and nMSE per method, next to the paper's Table II figures), benchmark.csv, "
        "per_sample.csv and one comparison figure per configuration.",
        epilog="Example: fairesi benchmark --preset tiny --config SimMEG:5:1:2 --methods "
        "deepsif,sLORETA,Champagne --train-missing --n 32 --out runs/bench-tiny",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="DATASET:SNR:NS:NN",
        help="a configuration, e.g. SimMEG:5:1:2 (dataset SimMEG, SimEEG or SimEEGMEG, SNR r "
        "in dB, sources N_s, rings N_n); repeat for several (default: the seven rows of "
        "Table II, or the fusion rows with --dataset SimEEGMEG)",
    )
    parser.add_argument(
        "--dataset",
        choices=("SimEEGMEG",),
        default=None,
        help="SimEEGMEG: the EEG + MEG fusion benchmark, 1 source, r in {-5, 0, 5} dB x "
        "{1, 2, 3} rings, methods mmdf_esi, fair_esi (fused), fair_esi@eeg, fair_esi@meg "
        "(FAIR-ESI on one modality of the same samples) and sLORETA on both modalities, "
        "with paired differences of each fused network to each single modality",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods: networks fair_esi, deepsif, convdip, mmdf_esi and "
        "classical MNE, dSPM, sLORETA, eLORETA, Champagne; NAME@eeg / NAME@meg sees one "
        "modality of a SimEEGMEG configuration (default: fair_esi,deepsif,convdip,sLORETA,"
        "Champagne)",
    )
    parser.add_argument(
        "--preset",
        default="cpu",
        help="training preset (tiny, cpu, wide, paper) that defines head model, waveform bank and "
        "data sizes, and trains missing networks (default: cpu)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="METHOD=PATTERN",
        help="checkpoint of a network, a path that may contain {config} (e.g. "
        "SimMEG_r5_Ns1_Nn2) and {method}; repeat per method (default: "
        "RUNS_DIR/{method}/{config}/best.pt)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs/benchmark"),
        help="root of the default checkpoint locations (default: runs/benchmark)",
    )
    parser.add_argument(
        "--train-missing",
        action="store_true",
        help="train (or resume) networks whose checkpoint is missing, into its directory",
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="wall-time limit of each such training run, minutes (default: none)",
    )
    parser.add_argument(
        "--head-model",
        default=None,
        help="'default', 'toy' or a head-model file (default: the preset's)",
    )
    parser.add_argument(
        "--bank",
        default=None,
        help="waveform bank: 'default', a file, or 'synthetic' (default: the preset's)",
    )
    parser.add_argument(
        "--shared-centres",
        action="store_true",
        help="the paper's protocol: every split draws its source centres from all regions "
        "(default: disjoint per-split pools); checkpoints must be trained so",
    )
    parser.add_argument(
        "--protocol",
        choices=("strict", "paper"),
        default="strict",
        help="'paper': the FAIR-ESI paper's protocol (DeepSIF's code: shared centres, its "
        "noise definition and patch growth, peaks anywhere, its signed Otsu rule, empty "
        "reconstructions left out of the means); 'strict' (default): ours. Checkpoints "
        "must be trained under the same protocol",
    )
    parser.add_argument(
        "--n", type=int, default=256, help="test samples per configuration (default: 256)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data seed; checkpoints must match (default: 0)"
    )
    parser.add_argument(
        "--champagne-iter",
        type=int,
        default=None,
        help="maximum Champagne iterations (default: the class's, 300)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="samples per estimator call (default: 32)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/benchmark/report"),
        help="output directory (default: runs/benchmark/report)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run, output_kinds={"out": "folder"})


def _checkpoint_patterns(items: list[str]) -> dict[str, str]:
    patterns: dict[str, str] = {}
    for item in items:
        method, sep, pattern = item.partition("=")
        if not sep or not method or not pattern:
            raise ValueError(f"--checkpoint {item!r} must be METHOD=PATH")
        patterns[method] = pattern
    return patterns


def run(args: argparse.Namespace) -> int:
    """Run ``fairesi benchmark``; returns the exit code."""
    import torch

    from fairesi.benchmark import (
        DEFAULT_METHODS,
        FUSION_METHODS,
        FUSION_ROWS,
        TABLE2_ROWS,
        TableRow,
        run_benchmark,
    )

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    fusion = args.dataset == "SimEEGMEG"
    default_rows = FUSION_ROWS if fusion else TABLE2_ROWS
    rows = [TableRow.parse(text) for text in args.config] if args.config else list(default_rows)
    methods = (
        [m.strip() for m in args.methods.split(",") if m.strip()]
        if args.methods
        else list(FUSION_METHODS if fusion else DEFAULT_METHODS)
    )
    overrides: dict[str, object] = {"progress": not args.no_progress, "device": args.device}
    if args.protocol != "strict":
        overrides["protocol"] = args.protocol
    if args.shared_centres:
        overrides["disjoint_centres"] = False
    for key, value in (
        ("head_model", args.head_model),
        ("bank", args.bank),
        ("max_minutes", args.train_minutes),
        ("threads", args.threads),
    ):
        if value is not None:
            overrides[key] = value
    classical = {}
    if args.champagne_iter is not None:
        classical["Champagne"] = {"max_iter": args.champagne_iter}
    result = run_benchmark(
        rows,
        methods,
        preset=args.preset,
        checkpoints=_checkpoint_patterns(args.checkpoint),
        runs_dir=args.runs_dir,
        train_missing=args.train_missing,
        train_overrides=overrides,
        classical_options=classical,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    paths = result.write(args.out)
    print(result.markdown(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
