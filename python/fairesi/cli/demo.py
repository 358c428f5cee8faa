"""``fairesi demo``: the whole pipeline end to end on the embedded default head model.

The demo runs the same commands a user would type, printing each one first, so its
output doubles as a tutorial:

1. ``fairesi headmodel info``       the embedded fsaverage5 / 994-region head model
2. ``fairesi simulate bank --quick`` Jansen-Rit spike/background waveform bank
3. ``fairesi train``                FAIR-ESI ('cpu' preset) on SimMEG r=5 dB, N_s=1, N_n=2
4. ``fairesi evaluate``             Table II metrics on the test split + a figure
5. ``fairesi export``               TorchScript archive with its metadata
6. ``fairesi-infer``                the C++ runner on one test epoch, no Python

Every step writes into ``--out``; a step whose output already exists is skipped, so an
interrupted demo resumes where it stopped (training resumes from its ``last.pt``).
The training budget is a few minutes, so the metrics show the pipeline working, not
the paper's accuracy (see bench/RESULTS.md for longer runs).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="run simulate -> train -> evaluate -> export -> infer on the default head model",
        description=__doc__.split("\n\n")[0]
        + " Each step prints the command it runs; outputs go to --out.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="output directory (default: demo-output)",
    )
    p.add_argument(
        "--train-minutes",
        type=float,
        default=4.0,
        help="wall-time budget of the training step in minutes (default: 4)",
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=256,
        help="test samples to evaluate (default: 256)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the whole demo (default: 0)")
    p.set_defaults(func=run_demo)


def _step(title: str, argv: list[str]) -> None:
    """Run one ``fairesi`` command in-process, echoing it as a shell line."""
    from fairesi.cli import FairesiUserError, main

    print(f"\n== {title}\n$ fairesi {shlex.join(argv)}", flush=True)
    rc = main(argv)
    if rc != 0:
        raise FairesiUserError(f"step '{title}' failed with exit code {rc}")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo pipeline; returns the exit code."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seed = str(args.seed)
    bank = out / "bank.h5"
    train_dir = out / "train"
    eval_dir = out / "eval"
    model = out / "model.pt"

    _step("head model", ["headmodel", "info"])
    if not bank.exists():
        _step("waveform bank", ["simulate", "bank", "--quick", "--seed", seed, "--out", str(bank)])
    train = ["train", "--preset", "cpu", "--head-model", "default", "--bank", str(bank)]
    # Short epochs, so that validation, the LR schedule and best.pt all happen in minutes.
    train += ["--seed", seed, "--n-train-samples", "256", "--n-val-samples", "64"]
    train += ["--max-minutes", str(args.train_minutes)]
    train += ["--out", str(train_dir)]
    last, best = train_dir / "last.pt", train_dir / "best.pt"
    if last.exists() and not best.exists():  # an interrupted demo: continue that run
        train = ["train", "--resume", str(last), "--max-minutes", str(args.train_minutes)]
    if not best.exists():
        _step("training", train)
    if not best.exists():  # the budget ran out before the first validation
        best = last
    _step(
        "evaluation",
        ["evaluate", str(best), "--n", str(args.eval_samples), "--out", str(eval_dir)],
    )
    _export_and_infer(out, best, model)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nfairesi demo finished in {minutes:.1f} min. Outputs in {out.resolve()}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".shards" not in str(p)):
        print(f"  {path.relative_to(out)}")
    return 0


def _export_and_infer(out: Path, checkpoint: Path, model: Path) -> None:
    """Export the checkpoint and run the C++ runner on one test epoch."""
    import numpy as np

    from fairesi.export import runner_path, test_epoch

    _step("export", ["export", str(checkpoint), "-o", str(model)])
    epoch = out / "epoch.npy"
    np.save(epoch, test_epoch(checkpoint))
    estimate = out / "estimate.npy"
    runner = runner_path()
    argv = [str(runner), str(model), str(epoch), str(estimate), "--timing"]
    print(f"\n== C++ runner (no Python)\n$ {shlex.join(argv)}", flush=True)
    subprocess.run(argv, check=True)
