"""Ablation of FAIR-ESI's refinement views (paper Table IV) at a size that fits a CPU.

Six variants of ``fairesi.models.fair_esi.FairEsi`` differ only in the switches
``spectral`` / ``temporal`` / ``patchwise`` of ``FairEsiConfig``::

    none                no refinement (raw patches; conv blocks on the patch features only)
    spectral            spectral view only (alpha = 1)
    temporal            temporal view only (alpha = 0)
    spectral+temporal   both views, alpha-mixed, no key-patch attention
    patch-wise          key-patch attention only
    all                 the full model

Every variant is trained with ``fairesi.train.train`` on the same data configuration (paper:
SimMEG, r = 5 dB, N_s = 2, N_n = 2), the same seed (the same batches in the same order; the
refinement views have no parameters, so none / spectral / temporal / spectral+temporal
start from identical weights, as do patch-wise / all, while the attention's parameters
shift the initial draws of the layers after it) and the same number of optimizer steps.
The training split is used whole, so that for ``steps * batch_size`` below its size
(39,920 samples) no epoch ends: no validation, no learning-rate change, no early stop, and
the only difference between the runs is the switch. Each variant is then evaluated with
``fairesi.evaluate.evaluate_estimator`` on the same first ``--n-eval`` test samples, and
the Markdown table (mean ± std per metric, paper Table II/IV units) is printed and
written to ``OUT/ablation.md`` with the paper's Table IV row under each of ours. An
all-zero estimate on the same samples is a reference row: a model that learned nothing
scores its nMSE and its test loss (the training loss; it is also reported per variant,
with the training time per step and the late training loss). Paired differences against
the 'none' variant (same test samples) give the standard error that decides whether a
gap is more than noise.

Each variant lives in ``OUT/<variant>/`` (``last.pt``, ``train_log.csv``, ``eval.npz``),
so an interrupted ablation resumes: finished variants are skipped, an unfinished one
continues from its ``last.pt`` (exactly, see ``fairesi.train``).

Run (dev layout)::

    PYTHONPATH=python .venv/bin/python bench/ablation.py --steps 150 --n-times 128 \\
        --threads 1 --bank /path/to/bank.h5 --out runs/ablation
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairesi.cli.train import parse_hyper
from fairesi.evaluate import (
    TABLE_METRICS,
    evaluate_estimator,
    format_paired_table,
    reference_cells,
)
from fairesi.experiment import synthesizer
from fairesi.io import atomic_path
from fairesi.train import TrainConfig, load_checkpoint, read_checkpoint, train

#: variant name -> (spectral, temporal, patchwise), in the paper's row order.
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "none": (False, False, False),
    "spectral": (True, False, False),
    "temporal": (False, True, False),
    "spectral+temporal": (True, True, False),
    "patch-wise": (False, False, True),
    "all": (True, True, True),
}

#: The paper's Table IV (SimMEG, r = 5 dB, N_s = 2, N_n = 2) in table units: metric ->
#: (mean, std); precision/recall %, LE/SD mm, nMSE ×1e-4. The paper prints the
#: spectral+temporal recall as 67.943.
PAPER_TABLE_IV: dict[str, dict[str, tuple[float, float]]] = {
    "none": {
        "precision": (81.22, 13.48),
        "recall": (68.95, 23.46),
        "le_mm": (1.79, 1.74),
        "sd_mm": (2.32, 1.77),
        "nmse": (3.02, 2.94),
    },
    "spectral": {
        "precision": (80.83, 13.94),
        "recall": (67.63, 23.25),
        "le_mm": (1.80, 1.58),
        "sd_mm": (2.29, 1.63),
        "nmse": (3.04, 2.83),
    },
    "temporal": {
        "precision": (80.20, 14.15),
        "recall": (66.38, 23.20),
        "le_mm": (1.84, 1.54),
        "sd_mm": (2.29, 1.56),
        "nmse": (3.27, 4.16),
    },
    "spectral+temporal": {
        "precision": (83.99, 13.23),
        "recall": (67.943, 23.21),
        "le_mm": (1.53, 1.72),
        "sd_mm": (2.13, 1.85),
        "nmse": (2.95, 2.68),
    },
    "patch-wise": {
        "precision": (82.76, 13.42),
        "recall": (68.05, 23.36),
        "le_mm": (1.67, 1.94),
        "sd_mm": (1.94, 2.08),
        "nmse": (2.97, 2.83),
    },
    "all": {
        "precision": (88.30, 12.15),
        "recall": (67.94, 23.83),
        "le_mm": (1.23, 2.31),
        "sd_mm": (1.99, 2.20),
        "nmse": (2.60, 2.62),
    },
}

#: The paper's data configuration of Table IV.
DATASET, SNR_DB, N_SOURCES, N_RINGS = "SimMEG", 5.0, 2, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="FAIR-ESI refinement-view ablation (paper Table IV: none / spectral / "
        "temporal / spectral+temporal / patch-wise / all) on SimMEG r=5 dB, N_s=2, N_n=2: "
        "train every variant for the same number of steps on the same data, evaluate all "
        "on the same test samples, print and write a Markdown table beside the paper's.",
    )
    parser.add_argument(
        "--steps", type=int, default=150, help="optimizer steps per variant (default: 150)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step (default: 16)")
    parser.add_argument(
        "--preset",
        default="tiny",
        help="FairEsiConfig size preset: tiny, cpu or paper (default: tiny)",
    )
    parser.add_argument(
        "--hyper",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="FairEsiConfig override (repeatable), VALUE as a Python literal, e.g. "
        "--hyper latent=64; the ablation switches are set per variant",
    )
    parser.add_argument(
        "--n-times",
        type=int,
        default=500,
        help="samples per trial at 500 Hz (default: 500, the paper's SimMEG)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of data, initialisation, dropout (default: 0)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output directory")
    parser.add_argument(
        "--n-eval",
        type=int,
        default=256,
        help="evaluate on the first N test samples (default: 256)",
    )
    parser.add_argument(
        "--eval-batch-size", type=int, default=32, help="samples per forward pass in evaluation"
    )
    parser.add_argument(
        "--bank",
        default="default",
        help="waveform bank: 'default', a bank file, or 'synthetic' (tests only)",
    )
    parser.add_argument(
        "--head-model",
        default="default",
        help="'default' (994 regions), 'toy' (tests) or a head-model file",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all six)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    args.variants = [v for v in VARIANTS if v in chosen]  # the paper's row order
    if unknown or not args.variants:
        parser.error(f"--variants {unknown or '(empty)'}: expected some of {list(VARIANTS)}")
    for name in ("steps", "batch_size", "n_times", "n_eval", "eval_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    hyper = parse_hyper(args.hyper)
    switches = sorted({"spectral", "temporal", "patchwise", "preset"} & set(hyper))
    if switches:
        parser.error(f"--hyper {switches}: set per variant / by --preset, not as overrides")
    args.hyper = hyper
    return args


def variant_config(args: argparse.Namespace, name: str) -> TrainConfig:
    """The training run of one variant; only ``model_hyper``'s switches differ between them.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options.
    name : str
        A key of :data:`VARIANTS`.

    Returns
    -------
    config : TrainConfig
    """
    spectral, temporal, patchwise = VARIANTS[name]
    hyper = {
        "preset": args.preset,
        **args.hyper,
        "spectral": spectral,
        "temporal": temporal,
        "patchwise": patchwise,
    }
    return TrainConfig.from_flat(
        dict(
            model="fair_esi",
            model_hyper=hyper,
            dataset=DATASET,
            snr_db=SNR_DB,
            n_sources=N_SOURCES,
            n_rings=N_RINGS,
            n_times=args.n_times,
            # The whole training split, so that no epoch (validation, LR change, early stop)
            # ends within the step budget and all variants see identical optimisation.
            n_train_samples=None,
            n_val_samples=4 * args.batch_size,
            seed=args.seed,
            head_model=args.head_model,
            bank=args.bank,
            batch_size=args.batch_size,
            max_epochs=10_000,
            lr=args.lr,
            early_stop_patience=10_000,
            checkpoint_every=max(1, min(50, args.steps)),
            max_steps=args.steps,
            out_dir=str(args.out / name),
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
        )
    )


def train_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train one variant up to ``args.steps`` steps, resuming or skipping as its folder says.

    Returns
    -------
    info : dict
        ``steps`` (optimizer steps done) and the :func:`_log_figures` of its training log.
    """
    config = variant_config(args, name)
    out_dir = Path(config.run.out_dir)
    last = out_dir / "last.pt"
    if last.exists():
        saved = load_checkpoint(last).train_config
        differs = _defining_differences(saved, config)
        if differs:
            raise ValueError(
                f"{last} was trained with other settings ({differs}); use another --out"
            )
        done = int(read_checkpoint(last)["progress"]["step"])
        if done < args.steps:
            print(f"[{name}] resuming from step {done}", flush=True)
            train(
                resume=last,
                max_steps=args.steps,
                threads=args.threads,
                progress=not args.no_progress,
                device=args.device,
            )
        else:
            print(f"[{name}] already trained ({done} steps)", flush=True)
    else:
        print(f"[{name}] training {args.steps} steps", flush=True)
        train(config)
    steps = int(read_checkpoint(last)["progress"]["step"])
    return {"steps": steps, **_log_figures(out_dir, steps)}


def _defining_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Names of the settings that define a run (not ``RUN_CONTROL``) and differ."""
    flat_a = {**a.flat(), **a.data.to_dict()}
    flat_b = {**b.flat(), **b.data.to_dict()}
    return sorted(k for k in flat_a if k not in TrainConfig.RUN_CONTROL and flat_a[k] != flat_b[k])


def _log_figures(out_dir: Path, steps: int) -> dict[str, float]:
    """Training time and late loss of a variant, from its ``train_log.csv``.

    Returns
    -------
    figures : dict
        ``s_per_step``: wall seconds per step over the logged steps (the log's ``wall_s``
        restarts at 0 in every resumed invocation, so the segments are added up);
        ``train_wall_s``: that times ``steps``; ``train_loss``: mean logged training loss
        over the last 20% of the steps. NaN where nothing was logged.
    """
    with open(out_dir / "train_log.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["kind"] == "train"]
    wall_s, segment_end, previous = 0.0, 0.0, -1.0
    for row in rows:
        now = float(row["wall_s"])
        if now < previous:
            wall_s += segment_end
        segment_end = previous = now
    wall_s += segment_end
    last_step = int(rows[-1]["step"]) if rows else 0
    s_per_step = wall_s / last_step if last_step else math.nan
    losses = [float(row["loss"]) for row in rows if int(row["step"]) > 0.8 * steps]
    return {
        "s_per_step": s_per_step,
        "train_wall_s": s_per_step * steps,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
    }


def mean_test_loss(estimator, synth, *, n: int, batch_size: int) -> float:
    """The training loss (``fairesi.train.source_loss``) of an estimator on the first ``n``
    test samples.

    Parameters
    ----------
    estimator : callable
        ``x (B, C, T) -> estimate (B, R, T)``, normalised units like ``Batch.target``.
    synth : fairesi.data.Synthesizer
        The data configuration.
    n, batch_size : int
        Samples and samples per call.

    Returns
    -------
    loss : float
        Mean over samples of the sum over regions and time of ``(estimate - target) ** 2``.
    """
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = synth.batch("test", torch.arange(start, min(start + batch_size, n)))
            error = estimator(batch.x).float() - batch.target
            total += float(error.double().pow(2).sum())
    return total / n


def evaluate_variant(args: argparse.Namespace, name: str, synth) -> dict[str, np.ndarray]:
    """Per-sample metrics of one trained variant on the first ``n_eval`` test samples.

    Cached in ``OUT/<variant>/eval.npz`` together with the step count it belongs to.
    """
    out_dir = args.out / name
    cache = out_dir / "eval.npz"
    steps = int(read_checkpoint(out_dir / "last.pt")["progress"]["step"])
    if cache.exists():
        with np.load(cache) as saved:
            if int(saved["steps"]) == steps and int(saved["n_eval"]) == args.n_eval:
                return {key: saved[key] for key, _, _ in TABLE_METRICS}
    checkpoint = load_checkpoint(out_dir / "last.pt", map_location=args.device)
    if checkpoint.config["data"] != synth.config.to_dict():
        raise ValueError(f"{out_dir / 'last.pt'} was trained on another data configuration")
    result = evaluate_estimator(
        checkpoint.model,
        synth,
        split="test",
        n=args.n_eval,
        batch_size=args.eval_batch_size,
        progress=not args.no_progress,
    )
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, steps=steps, n_eval=args.n_eval, **result.per_sample)
    return result.per_sample


def _summary(values: np.ndarray, factor: float) -> tuple[float, float, int]:
    defined = values[~np.isnan(values)] * factor
    if defined.size == 0:
        return math.nan, math.nan, 0
    return float(defined.mean()), float(defined.std()), int(defined.size)


def _cell(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def format_tables(
    per_variant: dict[str, dict[str, np.ndarray]],
    zero: dict[str, np.ndarray],
    train_info: dict[str, dict[str, Any]],
    n_params: dict[str, int],
    test_losses: dict[str, float],
) -> str:
    """The ablation as Markdown: metrics beside Table IV, paired gaps, training figures.

    Parameters
    ----------
    per_variant : dict
        Variant name -> ``localization_metrics`` per-sample arrays (same test samples).
    zero : dict
        The same for the all-zero estimate.
    train_info : dict
        Variant name -> :func:`train_variant` output.
    n_params : dict
        Variant name -> number of model parameters.
    test_losses : dict
        Variant name (and 'zero') -> :func:`mean_test_loss` on the test samples.

    Returns
    -------
    markdown : str
    """
    header = ["Views (S/T/P)", "run"] + [label for _, label, _ in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in per_variant.items():
        views = "/".join("✓" if on else "-" for on in VARIANTS[name])
        ours = [_cell(*_summary(metrics[key], factor)[:2]) for key, _, factor in TABLE_METRICS]
        paper = reference_cells(PAPER_TABLE_IV[name])
        lines.append(f"| {name} ({views}) | ours | " + " | ".join(ours) + " |")
        lines.append(f"| {name} ({views}) | paper | " + " | ".join(paper) + " |")
    zero_cells = [_cell(*_summary(zero[key], factor)[:2]) for key, _, factor in TABLE_METRICS]
    lines.append("| all-zero estimate | ours | " + " | ".join(zero_cells) + " |")
    tables = ["\n".join(lines)]

    # Same test samples for every variant: the paired difference to 'none' has a much
    # smaller standard error than the two stds suggest.
    if "none" in per_variant and len(per_variant) > 1:
        others = {name: m for name, m in per_variant.items() if name != "none"}
        tables.append(
            "Paired difference to 'none' on the same samples, mean ± standard error:\n\n"
            + format_paired_table(per_variant["none"], others, base_label="none").rstrip("\n")
        )

    lines = [
        "| variant | parameters | steps | train wall (s) | s/step | train loss, last 20% "
        "of steps | test loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in train_info.items():
        lines.append(
            f"| {name} | {n_params[name]:,} | {info['steps']} | {info['train_wall_s']:.0f} | "
            f"{info['s_per_step']:.2f} | {info['train_loss']:.4g} | {test_losses[name]:.4g} |"
        )
    lines.append(f"| all-zero estimate | 0 | | | | | {test_losses['zero']:.4g} |")
    tables.append(
        "Training (loss = squared error on normalised targets summed over regions and time, "
        "per sample, as in training; only a test loss below the all-zero estimate's shows "
        "more than the zero solution learned):\n\n" + "\n".join(lines)
    )
    return "\n\n".join(tables) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the ablation; returns the exit code."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    train_info = {name: train_variant(args, name) for name in args.variants}

    reference = variant_config(args, args.variants[0])
    synth = synthesizer(
        reference.data,
        head_model=args.head_model,
        bank=args.bank,
        seed=args.seed,
        device=args.device,
    )
    head_model = synth.head_model
    per_variant = {name: evaluate_variant(args, name, synth) for name in args.variants}

    def zero_estimate(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], head_model.n_regions, x.shape[2])

    zero = evaluate_estimator(
        zero_estimate, synth, n=args.n_eval, batch_size=args.eval_batch_size, progress=False
    ).per_sample
    n_params, test_losses = {}, {}
    for name in args.variants:
        model = load_checkpoint(args.out / name / "last.pt", map_location=args.device).model
        n_params[name] = sum(p.numel() for p in model.parameters())
        test_losses[name] = mean_test_loss(
            model, synth, n=args.n_eval, batch_size=args.eval_batch_size
        )
    test_losses["zero"] = mean_test_loss(
        zero_estimate, synth, n=args.n_eval, batch_size=args.eval_batch_size
    )

    cfg = synth.config
    intro = (
        f"FAIR-ESI refinement-view ablation: {DATASET} r={SNR_DB:g} dB, N_s={N_SOURCES}, "
        f"N_n={N_RINGS}; head model {head_model.name!r} ({head_model.n_regions} regions, "
        f"{synth.n_channels} channels), n_times={cfg.n_times}, bank {args.bank!r}; model "
        f"preset {args.preset!r} {args.hyper or ''}; {args.steps} steps x batch "
        f"{args.batch_size}, lr {args.lr:g}, seed {args.seed}; test: first {args.n_eval} "
        f"samples; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.machine()}; wall {time.monotonic() - started:.0f} s (this invocation). "
        "Views S/T/P = spectral / temporal / patch-wise; paper rows: Table IV "
        "(SimMEG, 500 samples, fully trained)."
    )
    report = intro + "\n\n" + format_tables(per_variant, zero, train_info, n_params, test_losses)
    print(report, flush=True)
    with atomic_path(args.out / "ablation.md") as tmp:
        Path(tmp).write_text(report)
    with atomic_path(args.out / "ablation.json") as tmp:
        Path(tmp).write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "train": train_info,
                    "n_params": n_params,
                    "test_losses": test_losses,
                    "summary": {
                        name: {
                            key: _summary(metrics[key], factor) for key, _, factor in TABLE_METRICS
                        }
                        for name, metrics in {**per_variant, "zero": zero}.items()
                    },
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
