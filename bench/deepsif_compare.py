"""FAIR-ESI against DeepSIF at equal size and equal CPU time (the accuracy issue, item 3).

The networks, at the size presets of ``--size`` (``tests/test_baselines.py`` checks that
FAIR-ESI's and DeepSIF's parameter counts agree within 10%)::

    --size        cpu        wide
    fair_esi      'cpu'      'wide'          FAIR-ESI, the default reading of the refinement
    deepsif       'matched'  'wide-matched'  DeepSIF, FAIR-ESI's parameter count
    deepsif_rank  -          'wide-rank'     DeepSIF, FAIR-ESI's output rank (512)

An output made by a linear map of H features has rank <= H over the regions, and the rank
caps the precision (``bench/rank_probe.py``): at equal parameters DeepSIF's 3-layer LSTM
gets far less rank than FAIR-ESI's BiGRU (190 vs 512 at 'wide'), so 'wide' adds the
equal-rank row, which in turn has ~5x FAIR-ESI's parameters.

Each run trains for ``--minutes`` of wall-clock time on one thread (run the two networks
as two processes at once, ``--networks fair_esi`` and ``--networks deepsif``, so that both
see the same machine load: equal CPU time), on the same samples (same seed: the same
batches in the same order), under the paper's protocol (``SimConfig(protocol='paper')``),
for every ``--datasets`` entry at r = 5 dB, N_s = 1, N_n = 2 (paper Table II's rows
SimMEG 5/1/2 and SimEEG 5/1/2) and every ``--seed``. The recipe is the refinement study's
(``bench/refine_study.py``): trials of ``--n-times`` samples, batch 16, epochs of
``--epoch-samples`` freshly redrawn samples with a validation pass after each (the
learning curve), learning rate halved after 2 flat epochs.

Learning rate: on the first dataset and the first seed each network trains once per
``--lrs`` value (the paper's 1e-4 and our 1e-3); the value with the lower best validation
loss is then used for that network's other runs, and the report says which.

``--hyper KEY=VALUE`` sets FAIR-ESI hyper-parameters over its preset (for a size study,
e.g. ``--hyper gru_hidden=256``: its output is a linear map of ``2 * gru_hidden`` BiGRU
features to the regions, so of rank at most that, ``bench/rank_probe.py``); the report
names them, and the runs need an ``--out`` of their own.

The best checkpoint (by validation loss) of every run is scored on the first ``--n-eval``
test samples under both protocols (its own, 'paper', with DeepSIF's signed Otsu rule,
and 'strict', ours; ``fairesi.evaluate.evaluate_checkpoint``), cached in
``eval-<protocol>.npz``. The report (``OUT/compare.md``, ``OUT/curves.png``) gives mean ±
std per network beside the paper's rows, paired differences FAIR-ESI − DeepSIF (mean ±
s.e.) on the same samples, each run's budget and its learning curve. Runs live in
``OUT/<dataset>/seed<S>/<network>-lr<lr>/``; ``--minutes`` is each run's total budget, so
an interrupted run resumes from ``last.pt`` for what it has left, and a larger value
extends every run.

Run (installed package)::

    python bench/deepsif_compare.py --networks fair_esi --seed 0 --seed 1 --threads 1 &
    python bench/deepsif_compare.py --networks deepsif --seed 0 --seed 1 --threads 1 &
    wait; python bench/deepsif_compare.py --seed 0 --seed 1 --report-only

``--bf16`` trains under bfloat16 CPU autocast (``fairesi train --bf16``: ~2x faster
steps on CPUs with AVX512-BF16, ``bench/step_cost.py``).

At the 'wide' size, one process per network and seed (the runs of bench/RESULTS.md)::

    python bench/deepsif_compare.py --size wide --networks deepsif --lrs 1e-3 --seed 0 \
        --minutes 90 --threads 1 --out runs/cmp90cand_r512 &
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairesi.cli import FairesiUserError
from fairesi.cli.train import parse_hyper
from fairesi.evaluate import (
    TABLE_METRICS,
    evaluate_checkpoint,
    format_paired_table,
    reference_cells,
    table_cells,
)
from fairesi.io import atomic_path
from fairesi.models.registry import stored_hyper
from fairesi.paper import PAPER_FAIR_ESI, PAPER_TABLE2
from fairesi.train import TrainConfig, read_checkpoint, train
from refine_study import log_rows, parse_choices, study_recipe  # bench/, beside this script

#: network -> registry name
NETWORKS: dict[str, str] = {"fair_esi": "fair_esi", "deepsif": "deepsif", "deepsif_rank": "deepsif"}
#: --size -> network -> size preset (a dry run, ``--tiny``, uses 'tiny' for every network)
SIZES: dict[str, dict[str, str]] = {
    "cpu": {"fair_esi": "cpu", "deepsif": "matched"},
    "wide": {"fair_esi": "wide", "deepsif": "wide-matched", "deepsif_rank": "wide-rank"},
}
LABELS = {"fair_esi": "FAIR-ESI", "deepsif": "DeepSIF", "deepsif_rank": "DeepSIF (equal rank)"}
SNR_DB, N_SOURCES, N_RINGS = 5.0, 1, 2
PROTOCOLS = ("paper", "strict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Train FAIR-ESI and DeepSIF at equal size and equal CPU time on SimMEG "
        "and SimEEG 5/1/2 (paper protocol) and compare them on the same test samples.",
    )
    parser.add_argument(
        "--networks",
        default=None,
        help="comma-separated, of fair_esi, deepsif, deepsif_rank (default: all of --size)",
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="cpu", help="the presets' pairing (cpu)"
    )
    parser.add_argument("--datasets", default="SimMEG,SimEEG", help="comma-separated")
    parser.add_argument("--seed", type=int, action="append", help="seed(s) (default: 0)")
    parser.add_argument("--lrs", default="1e-3,1e-4", help="learning rates to choose from")
    parser.add_argument("--minutes", type=float, default=15.0, help="wall minutes per run")
    parser.add_argument("--max-steps", type=int, default=None, help="also stop at this step")
    parser.add_argument("--epoch-samples", type=int, default=4000, help="samples per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-times", type=int, default=128, help="samples per trial (128)")
    parser.add_argument("--n-val", type=int, default=256, help="validation samples (256)")
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=2,
        help="epochs without a better validation loss before the learning rate is halved (2)",
    )
    parser.add_argument("--n-eval", type=int, default=256, help="test samples per seed (256)")
    parser.add_argument("--tiny", action="store_true", help="'tiny' presets (a dry run)")
    parser.add_argument(
        "--hyper",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a FAIR-ESI hyper-parameter over its preset (repeatable; VALUE a Python literal, "
        "e.g. --hyper gru_hidden=256); DeepSIF keeps its preset",
    )
    parser.add_argument("--bank", default="default", help="'default', a file, or 'synthetic'")
    parser.add_argument("--head-model", default="default", help="'default', 'toy' or a file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train under bfloat16 CPU autocast (fairesi train --bf16); use an --out of its own",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/deepsif_compare"))
    parser.add_argument("--report-only", action="store_true", help="train nothing; report")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    sizes = SIZES[args.size]
    args.networks = parse_choices(
        parser, "--networks", args.networks or ",".join(sizes), list(sizes)
    )
    args.datasets = parse_choices(parser, "--datasets", args.datasets, ["SimMEG", "SimEEG"])
    try:
        args.lrs = [float(v) for v in args.lrs.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--lrs {args.lrs!r}: expected numbers separated by commas")
    if not args.lrs or min(args.lrs) <= 0:
        parser.error("--lrs: expected positive learning rates")
    args.seed = args.seed or [0]
    try:
        args.hyper = parse_hyper(args.hyper, literal_only=True)
    except FairesiUserError as err:
        parser.error(str(err))
    return args


def run_dir(args: argparse.Namespace, dataset: str, seed: int, network: str, lr: float) -> Path:
    """Where one run lives: ``OUT/<dataset>/seed<S>/<network>-lr<lr>/``."""
    return args.out / dataset / f"seed{seed}" / f"{network}-lr{lr:g}"


def run_config(args, dataset: str, seed: int, network: str, lr: float) -> TrainConfig:
    """One run's training configuration (the refinement study's recipe); only the network
    and its preset (and the learning rate) differ between the runs of one dataset and seed."""
    return study_recipe(
        args,
        model=NETWORKS[network],
        model_hyper={
            "preset": "tiny" if args.tiny else SIZES[args.size][network],
            **(args.hyper if network == "fair_esi" else {}),
        },
        dataset=dataset,
        snr_db=SNR_DB,
        n_sources=N_SOURCES,
        n_rings=N_RINGS,
        seed=seed,
        lr=lr,
        max_minutes=args.minutes,
        max_steps=args.max_steps,
        lr_patience=args.lr_patience,
        cpu_bf16=args.bf16,
        out_dir=str(run_dir(args, dataset, seed, network, lr)),
    )


def trained_minutes(path: Path) -> float:
    """Wall minutes a run has trained so far, over all its invocations."""
    rows = log_rows(path)
    return float(rows[-1]["wall_s"]) / 60 if rows else 0.0


def train_run(args, dataset: str, seed: int, network: str, lr: float) -> None:
    """Train one run up to ``args.minutes`` of wall time in all, resuming from its
    ``last.pt`` if present (an interrupted run gets only what it has left)."""
    config = run_config(args, dataset, seed, network, lr)
    path = Path(config.run.out_dir)
    left = args.minutes - trained_minutes(path)
    label = f"[{dataset} seed {seed}] {network} lr {lr:g}"
    if left < 0.5:  # done (the log's last rows may lag the stop by a few seconds)
        return
    print(f"{label}: training {left:.1f} min", flush=True)
    if not (path / "last.pt").exists():
        train(config.replace(max_minutes=left))
    else:
        train(
            resume=path / "last.pt",
            max_minutes=left,
            max_steps=args.max_steps,
            threads=args.threads,
            progress=not args.no_progress,
        )


def learning_curve(path: Path) -> list[dict[str, float]]:
    """The epoch rows of a run's log: step, wall_s (cumulative), val_loss, val_loss_zero."""
    keys = ("step", "wall_s", "val_loss", "val_loss_zero")
    return [{k: float(r[k]) for k in keys} for r in log_rows(path) if r["kind"] == "epoch"]


def best_val(path: Path) -> float:
    """The lowest validation loss of a run (inf before its first epoch)."""
    return min((row["val_loss"] for row in learning_curve(path)), default=float("inf"))


def chosen_lr(args, network: str) -> float | None:
    """The learning rate of ``args.lrs`` with the lowest best validation loss on the first
    dataset and seed, or None while any of those runs is missing."""
    dirs = {lr: run_dir(args, args.datasets[0], args.seed[0], network, lr) for lr in args.lrs}
    if len(args.lrs) == 1:
        return args.lrs[0]
    if not all(learning_curve(d) for d in dirs.values()):
        return None
    return min(args.lrs, key=lambda lr: best_val(dirs[lr]))


def planned_runs(args, network: str) -> list[tuple[str, int, float]]:
    """(dataset, seed, lr) of every run of one network, the learning-rate choice first."""
    first = [(args.datasets[0], args.seed[0], lr) for lr in args.lrs]
    lr = chosen_lr(args, network)
    if lr is None:
        return first
    rest = [(d, s, lr) for d in args.datasets for s in args.seed]
    return first + [run for run in rest if run not in first]


def evaluate_run(args, path: Path, protocol: str) -> dict[str, np.ndarray] | None:
    """Per-sample metrics of a run's best checkpoint on the first ``n_eval`` test samples
    under ``protocol`` (cached in ``eval-<protocol>.npz`` with the checkpoint's step);
    None if the run has no best checkpoint yet. A run kept without its checkpoints (the
    copies in ``bench/data/``) is reported from its cache as it is."""
    best = path / "best.pt"
    cache = path / f"eval-{protocol}.npz"
    if not best.exists():
        return cached_eval(args, cache)
    step = int(read_checkpoint(best)["progress"]["step"])
    if (saved := cached_eval(args, cache, step)) is not None:
        return saved
    result = evaluate_checkpoint(
        best, n=args.n_eval, protocol=protocol, progress=not args.no_progress
    )
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, step=step, n_eval=args.n_eval, **result.per_sample)
    return result.per_sample


def cached_eval(args, cache: Path, step: int | None = None) -> dict[str, np.ndarray] | None:
    """The per-sample metrics in ``cache`` if it holds ``args.n_eval`` samples (and, when
    given, was made from the checkpoint of ``step``); else None."""
    if not cache.exists():
        return None
    with np.load(cache) as saved:
        if int(saved["n_eval"]) != args.n_eval or step not in (None, int(saved["step"])):
            return None
        return {key: saved[key] for key, _, _ in TABLE_METRICS}


def run_summary(path: Path) -> dict[str, Any] | None:
    """Budget of one run: steps, wall minutes, s/step, parameters, best epoch and loss, and
    ``reading``: the refinement's ``key_energy`` it was built with ('-' for DeepSIF).

    What needs the checkpoint (steps, parameters, reading) is also written to
    ``run.json`` beside it, so that a copy of the run without its checkpoints still
    reports; None for a run that has neither.
    """
    record = path / "run.json"
    if (path / "last.pt").exists():
        last = read_checkpoint(path / "last.pt")
        facts = {
            "reading": stored_hyper(last["config"]["model"]).get("key_energy", "-"),
            "step": int(last["progress"]["step"]),
            "params": sum(int(np.prod(v.shape)) for v in last["state_dict"].values()),
        }
        with atomic_path(record) as tmp:
            Path(tmp).write_text(json.dumps(facts, indent=1) + "\n")
    elif record.exists():
        facts = json.loads(record.read_text())
    else:
        return None
    curve = learning_curve(path)
    wall = 60 * trained_minutes(path)
    step = facts["step"]
    best = min(curve, key=lambda r: r["val_loss"]) if curve else None
    return dict(
        reading=facts["reading"],
        step=step,
        wall_min=wall / 60,
        s_per_step=wall / step if step else float("nan"),
        params=facts["params"],
        best_step=int(best["step"]) if best else 0,
        best_val=best["val_loss"] if best else float("nan"),
        zero=curve[0]["val_loss_zero"] if curve else float("nan"),
    )


def complete_seeds(args, dataset: str) -> list[int]:
    """The seeds of ``args.seed`` whose run of every network (at its chosen learning rate)
    has a best checkpoint on ``dataset``, or (a copy without checkpoints) the evaluations
    under both protocols: the samples a paired comparison can use."""
    lrs = {network: chosen_lr(args, network) for network in args.networks}
    return [
        seed
        for seed in args.seed
        if all(
            lr is not None and _evaluable(run_dir(args, dataset, seed, network, lr))
            for network, lr in lrs.items()
        )
    ]


def _evaluable(run: Path) -> bool:
    return (run / "best.pt").exists() or all(
        (run / f"eval-{protocol}.npz").exists() for protocol in PROTOCOLS
    )


def _pool(metrics: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([m[key] for m in metrics]) for key, _, _ in TABLE_METRICS}


def report(args) -> str:
    """Markdown: per dataset, mean ± std under both protocols beside the paper's rows,
    paired differences FAIR-ESI − DeepSIF, the runs' budgets and learning curves."""
    header = ["network (lr)", "protocol"] + [label for _, label, _ in TABLE_METRICS]
    out = []
    budget = [
        "| run | refinement key | parameters | steps | wall (min) | s/step | best val (step) "
        "| all-zero |",
        "|---|---|---|---|---|---|---|---|",
    ]
    curves = []
    for network in args.networks:
        for lr in args.lrs:
            run = run_dir(args, args.datasets[0], args.seed[0], network, lr)
            if learning_curve(run):
                curves.append(
                    f"- lr choice, {network} lr {lr:g}: best validation loss {best_val(run):.1f}"
                )
        lr = chosen_lr(args, network)
        curves.append(f"- {network}: learning rate {'not chosen yet' if lr is None else f'{lr:g}'}")
    for dataset in args.datasets:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        seeds = complete_seeds(args, dataset)
        # (network, protocol) -> one per-sample dict per seed of `seeds`
        by_seed: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {}
        for network in args.networks:
            lr = chosen_lr(args, network)
            if lr is None:
                continue
            runs = [run_dir(args, dataset, s, network, lr) for s in seeds]
            for protocol in PROTOCOLS:
                metrics = [evaluate_run(args, r, protocol) for r in runs]
                if not metrics or any(m is None for m in metrics):
                    continue
                by_seed[network, protocol] = metrics
                cells = table_cells(_pool(metrics))
                lines.append(
                    f"| {LABELS[network]} (ours, {lr:g}) | {protocol} | " + " | ".join(cells) + " |"
                )
            for seed in args.seed:
                run = run_dir(args, dataset, seed, network, lr)
                if (s := run_summary(run)) is not None:
                    budget.append(
                        f"| {dataset} seed {seed} {network} lr {lr:g} | {s['reading']} | "
                        f"{s['params']:,} | {s['step']:,} | {s['wall_min']:.1f} | "
                        f"{s['s_per_step']:.2f} | {s['best_val']:.1f} ({s['best_step']:,}) | "
                        f"{s['zero']:.1f} |"
                    )
                    curve = " ".join(f"{r['val_loss']:.0f}" for r in learning_curve(run))
                    curves.append(f"- {dataset} seed {seed} {network}: {curve}")
        key = (dataset, SNR_DB, N_SOURCES, N_RINGS)
        lines.append(
            "| FAIR-ESI (paper's Table II) | paper | "
            + " | ".join(reference_cells(PAPER_FAIR_ESI[key]))
            + " |"
        )
        lines.append(
            "| DeepSIF (paper's Table II) | paper | "
            + " | ".join(reference_cells(PAPER_TABLE2[key]["deepsif"]))
            + " |"
        )
        n = args.n_eval * len(seeds)
        out.append(
            f"### {dataset} {SNR_DB:g}/{N_SOURCES}/{N_RINGS}: {n} test samples "
            f"({args.n_eval} per seed, seeds {seeds}: those every network has finished), "
            "mean ± std\n\n" + "\n".join(lines)
        )
        for baseline in ("deepsif", "deepsif_rank"):
            for protocol in PROTOCOLS:
                if ("fair_esi", protocol) not in by_seed or (baseline, protocol) not in by_seed:
                    continue
                fair, sif = by_seed["fair_esi", protocol], by_seed[baseline, protocol]
                rows = {f"FAIR-ESI − {LABELS[baseline]}, {protocol}": _pool(fair)}
                bases = {}  # each seed's row pairs with that seed's DeepSIF samples
                for seed, base, other in zip(seeds, sif, fair, strict=True):
                    if len(seeds) > 1:
                        rows[f"seed {seed} alone"] = other
                        bases[f"seed {seed} alone"] = base
                table = format_paired_table(
                    _pool(sif), rows, base_label=LABELS[baseline], row_bases=bases
                )
                out.append(
                    f"Paired difference on the same {n} samples ({dataset}, "
                    f"{protocol} protocol), mean ± s.e.:\n\n" + table.rstrip()
                )
    out.append("Training budget of each run (wall time on one thread):\n\n" + "\n".join(budget))
    out.append(
        "Learning rate and validation loss after each epoch "
        f"({args.epoch_samples} samples):\n\n" + "\n".join(curves)
    )
    return "\n\n".join(out) + "\n"


def plot_curves(args, path: Path) -> Path | None:
    """Validation loss against training minutes of every run, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.datasets), figsize=(5 * len(args.datasets), 3.6))
    axes = np.atleast_1d(axes)
    drawn = False
    for ax, dataset in zip(axes, args.datasets, strict=True):
        zeros: dict[int, float] = {}  # seed -> validation loss of the all-zero estimate
        for network, colour in zip(args.networks, ("C0", "C1", "C2"), strict=False):
            for lr in args.lrs:
                for seed, style in zip(args.seed, ("-", "--", ":", "-."), strict=False):
                    curve = learning_curve(run_dir(args, dataset, seed, network, lr))
                    if not curve:
                        continue
                    drawn = True
                    ax.plot(
                        [r["wall_s"] / 60 for r in curve],
                        [r["val_loss"] for r in curve],
                        style,
                        color=colour,
                        alpha=1.0 if lr == chosen_lr(args, network) else 0.35,
                        label=f"{LABELS[network]} lr {lr:g} seed {seed}",
                    )
                    zeros[seed] = curve[0]["val_loss_zero"]
        for seed, zero in zeros.items():
            ax.axhline(zero, color="grey", lw=0.8, ls=":")
            ax.annotate(f"all-zero, seed {seed}", (0, zero), fontsize=6, color="grey")
        ax.set(
            title=f"{dataset} {SNR_DB:g}/{N_SOURCES}/{N_RINGS}, paper protocol",
            xlabel="training wall time (min, one thread)",
            ylabel="validation loss",
        )
        ax.legend(fontsize=6)
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Train the missing runs, then write ``OUT/compare.md``; returns the exit code."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    if not args.report_only:
        for network in args.networks:
            done: set[tuple[str, int, float]] = set()
            # The learning-rate runs first; the rest once they have chosen.
            while todo := [r for r in planned_runs(args, network) if r not in done]:
                for dataset, seed, lr in todo:
                    train_run(args, dataset, seed, network, lr)
                    done.add((dataset, seed, lr))
    intro = (
        f"FAIR-ESI vs DeepSIF: r={SNR_DB:g} dB, N_s={N_SOURCES}, N_n={N_RINGS}, paper "
        f"protocol, n_times={args.n_times}, presets "
        + ", ".join(f"{n} {'tiny' if args.tiny else SIZES[args.size][n]!r}" for n in args.networks)
        + (f" (FAIR-ESI with {args.hyper})" if args.hyper else "")
        + f", batch {args.batch_size}, {args.minutes:g} wall minutes per run"
        + (", bfloat16 CPU autocast" if args.bf16 else ", float32")
        + ", learning rate "
        f"chosen from {args.lrs}; torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), {platform.machine()}; wall {time.monotonic() - started:.0f} s (this "
        "invocation)."
    )
    text = intro + "\n\n" + report(args)
    print(text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "compare.md") as tmp:
        Path(tmp).write_text(text)
    plot_curves(args, args.out / "curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
