"""``fairesi demo``: the whole pipeline end to end on the embedded default head model.

The demo runs the same commands a user would type, printing each one first, so its
output doubles as a tutorial:

1. ``fairesi headmodel info``        the embedded fsaverage5 / 994-region head model
2. ``fairesi simulate bank``         the Jansen-Rit waveform bank the shipped models were
                                     trained and scored with (built once, then cached)
3. ``fairesi evaluate --pretrained`` the shipped MEG model on fresh test samples of
                                     SimMEG r=5 dB, N_s=1, N_n=2, under both protocols,
                                     beside the paper's figures
4. ``fairesi train --init-from``     fine-tune it for a few minutes on that configuration
                                     (from scratch when no model ships)
5. ``fairesi evaluate``              the fine-tuned checkpoint on the same test samples
6. ``fairesi export``                TorchScript archive with its metadata
7. ``fairesi-infer``                 the C++ runner on one test epoch, no Python

Every step writes into ``--out`` (the bank into the cache); a step whose output already
exists is skipped, so an interrupted demo resumes where it stopped (training resumes from
its ``last.pt``). Each table says which model its numbers come from: the shipped model's
are its real accuracy; the fine-tuning run only shows the training pipeline at work.
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
        default=2.0,
        help="wall-time budget of the fine-tuning step in minutes (default: 2)",
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=128,
        help="test samples of each evaluation (default: 128)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the whole demo (default: 0)")
    p.set_defaults(func=run_demo, output_kinds={"out": "folder"})


def _step(title: str, argv: list[str]) -> None:
    """Run one ``fairesi`` command in-process, echoing it as a shell line."""
    from fairesi.cli import FairesiUserError, main

    print(f"\n== {title}\n$ fairesi {shlex.join(argv)}", flush=True)
    rc = main(argv)
    if rc != 0:
        raise FairesiUserError(f"step '{title}' failed with exit code {rc}")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo pipeline; returns the exit code."""
    from fairesi.models import available_pretrained
    from fairesi.simulate import default_bank_path

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seed, n_eval = str(args.seed), str(args.eval_samples)
    train_dir = out / "train"
    model = out / "model.pt"
    table = ["--snr-db", "5", "--n-sources", "1", "--n-rings", "2"]

    _step("head model", ["headmodel", "info"])
    if not default_bank_path().exists():
        _step("waveform bank (once; cached for every later run)", ["simulate", "bank"])
    shipped = "meg" in available_pretrained()
    if shipped:
        for protocol in ("paper", "strict"):
            _step(
                f"the shipped MEG model ('meg') on {n_eval} fresh test samples, {protocol} "
                "protocol: its real accuracy",
                ["evaluate", "--pretrained", "meg", "--config", "5/1/2", "--n", n_eval]
                + ["--protocol", protocol, "--out", str(out / f"eval-pretrained-{protocol}")],
            )
        train = ["train", "--init-from", "pretrained:meg", "--protocol", "paper", *table]
        title = f"fine-tuning the shipped model for {args.train_minutes:g} minutes"
    else:
        print("\n(no pretrained model ships with this installation: training from scratch)")
        train = ["train", "--preset", "cpu", "--protocol", "paper", *table]
        title = f"training from scratch for {args.train_minutes:g} minutes"
    # Short epochs, so that validation, the LR schedule and best.pt all happen in minutes.
    train += ["--seed", seed, "--n-train-samples", "256", "--n-val-samples", "64"]
    train += ["--batch-size", "16", "--lr", "1e-4" if shipped else "1e-3"]
    train += ["--max-minutes", str(args.train_minutes), "--out", str(train_dir)]
    last, best = train_dir / "last.pt", train_dir / "best.pt"
    if last.exists() and not best.exists():  # an interrupted demo: continue that run
        train = ["train", "--resume", str(last), "--max-minutes", str(args.train_minutes)]
    if not best.exists():
        _step(title, train)
    if not best.exists():  # the budget ran out before the first validation
        best = last
    _step(
        "the run's own checkpoint on its test split (pipeline check, not the shipped "
        "model's accuracy)",
        ["evaluate", str(best), "--n", n_eval, "--out", str(out / "eval-train")],
    )
    _export_and_infer(out, best, model)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nfairesi demo finished in {minutes:.1f} min. Outputs in {out.resolve()}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".shards" not in str(p)):
        print(f"  {path.relative_to(out)}")
    if shipped:
        print(
            "eval-pretrained-*/: the shipped model 'meg' (its accuracy; model card: "
            "`python -c \"import fairesi.models as m; print(m.pretrained('meg').card)\"`); "
            "eval-train/: the short fine-tuning run."
        )
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
