"""Study of the readings of FAIR-ESI's refinement (paper Eq. 1 and the temporal view).

The paper's ``T(x, tau)`` names no axis for its sum and does not say whether the softmax
replaces or weights the features (``fairesi.ops.refine``). Each variant below is one
admitted reading or block option, as ``FairEsiConfig`` overrides of the full model (all
three views on)::

    literal     softmax within each patch, replacing it (the paper read literally)
    weights     P * L * softmax(P / tau), likewise on the spectrum's real/imaginary parts
    residual    literal + P (``refine_residual``)
    patches     softmax across the patches of a channel
    channels    softmax across the channels
    norm-all    literal, LayerNorm over (channel, patch, feature) instead of per position
    sensors     literal, sensors as the conv channels instead of a conv over the sensors
    none        no spectral/temporal view, key-patch attention on (Table IV's patch-wise
                row -/-/P, a reference)

and the rest of Table IV's rows with the default (residual) reading, so that with
'residual' (all three views, S/T/P) and 'none' (-/-/P) they make its ablation::

    t4-none                 no view at all (-/-/-)
    t4-spectral             spectral view only, residual (S/-/-)
    t4-temporal             temporal view only, residual (-/T/-)
    t4-spectral+temporal    both views, residual, no key-patch attention (S/T/-)

and two readings of the key-patch choice (Eq. 2 computes the energy of ``P^L``, the
refined patches, whose softmaxes reorder the energies)::

    key-input           residual, each key patch chosen by the energy of the input
                        patches P (``key_energy='input'``)
    key-input-literal   literal, likewise
    key-input-weights   weights, likewise

Every variant trains the same recipe with the same seed (same batches in the same
order): SimMEG r = 5 dB, N_s = 2, N_n = 2 (paper Table IV) under the paper's protocol
(``SimConfig(protocol='paper')``: shared centres, DeepSIF's noise definition and patch
growth, free peak position; metrics with DeepSIF's signed Otsu rule), ``--redraw`` (every epoch a
fresh realisation of the epoch's samples), epochs of ``--epoch-samples`` samples with a
validation pass after each (the learning curve), learning rate halved on a validation
plateau, up to ``--steps`` optimizer steps. The best checkpoint by validation loss is then
evaluated on the same first ``--n-eval`` test samples; paired differences (mean ± s.e.)
against 'literal' decide the ranking. Runs for several ``--seed`` values go into
``OUT/seed<S>/<variant>/`` and resume where they stopped; the report pools the seeds.

With ``--until-flat W`` a run trains in chunks of ``--chunk`` steps until its validation
loss has flattened, :func:`flattened`: the learning rate was halved before its last ``W``
steps and their best validation loss is less than ``--flat-tol`` (relative) below the best
before them; ``--steps`` is then only a cap. The report gives the step at which each run
stopped and why. Where the plateau schedule halves the rate differs from run to run, and
so does the step at which a run counts as flat; ``--anneal-steps N`` instead fixes the
schedule for every variant: the rate stays at ``--lr`` and decays linearly to zero over
the last ``N`` of exactly ``--steps`` steps.

Run (installed package)::

    python bench/refine_study.py --seed 0 --threads 1 --out runs/refine_study
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairesi.evaluate import TABLE_METRICS, evaluate_estimator, format_paired_table, table_cells
from fairesi.experiment import synthesizer
from fairesi.io import atomic_path
from fairesi.train import TrainConfig, load_checkpoint, read_checkpoint, train

#: variant -> FairEsiConfig overrides (all three views on unless said otherwise).
#: Every variant names refine_residual and key_energy, whose defaults changed after the
#: study began (runs that predate them rebuild with the old defaults,
#: fairesi.models.registry.LEGACY_DEFAULTS and ADDED_LATER).
_READINGS: dict[str, dict[str, Any]] = {
    "literal": {"refine_residual": False},
    "weights": {"refine_form": "weights", "refine_residual": False},
    "residual": {"refine_residual": True},
    "patches": {"refine_axis": "patches", "refine_residual": False},
    "channels": {"refine_axis": "channels", "refine_residual": False},
    "norm-all": {"norm": "all", "refine_residual": False},
    "sensors": {"conv_layout": "sensors", "refine_residual": False},
    "none": {"spectral": False, "temporal": False, "refine_residual": False},
    "t4-none": {"spectral": False, "temporal": False, "patchwise": False, "refine_residual": False},
    "t4-spectral": {"temporal": False, "patchwise": False, "refine_residual": True},
    "t4-temporal": {"spectral": False, "patchwise": False, "refine_residual": True},
    "t4-spectral+temporal": {"patchwise": False, "refine_residual": True},
    "key-input": {"refine_residual": True, "key_energy": "input"},
    "key-input-literal": {"refine_residual": False, "key_energy": "input"},
    "key-input-weights": {
        "refine_form": "weights",
        "refine_residual": False,
        "key_energy": "input",
    },
}
VARIANTS: dict[str, dict[str, Any]] = {
    name: {"key_energy": "refined", **overrides} for name, overrides in _READINGS.items()
}

DATASET, SNR_DB = "SimMEG", 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Train and compare the readings of FAIR-ESI's refinement (Eq. 1) on "
        "SimMEG r=5 dB, N_s=2, N_n=2, paper protocol, at a reduced trial length.",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, action="append", help="seed(s) (default: 0)")
    parser.add_argument("--steps", type=int, default=3000, help="max optimizer steps (3000)")
    parser.add_argument(
        "--until-flat",
        type=int,
        default=None,
        metavar="W",
        help="train until the last W steps, at a lowered learning rate, bring the best "
        "validation loss less than --flat-tol below the best before them (--steps is then "
        "a cap)",
    )
    parser.add_argument(
        "--flat-tol", type=float, default=0.02, help="relative gain of a flat window (0.02)"
    )
    parser.add_argument(
        "--anneal-steps",
        type=int,
        default=None,
        metavar="N",
        help="a fixed schedule instead of the plateau one: the learning rate stays at --lr "
        "and decays linearly to zero over the last N of --steps steps, so every variant "
        "trains exactly --steps steps at the same rates (not with --until-flat)",
    )
    parser.add_argument(
        "--chunk", type=int, default=1000, help="steps between flatness checks (1000)"
    )
    parser.add_argument("--epoch-samples", type=int, default=8000, help="samples per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-times", type=int, default=128, help="samples per trial (128)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--preset", default="cpu", help="FairEsiConfig size preset (cpu)")
    parser.add_argument("--n-val", type=int, default=256, help="validation samples (256)")
    parser.add_argument("--n-eval", type=int, default=256, help="test samples (256)")
    parser.add_argument("--n-sources", type=int, default=2, help="N_s (2, Table IV)")
    parser.add_argument("--n-rings", type=int, default=2, help="N_n (2, Table IV)")
    parser.add_argument("--bank", default="default", help="'default', a file, or 'synthetic'")
    parser.add_argument("--head-model", default="default", help="'default', 'toy' or a file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train under bfloat16 CPU autocast (fairesi train --bf16), also when resuming a "
        "run that began in float32",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/refine_study"))
    parser.add_argument("--report-only", action="store_true", help="train nothing; report")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.variants = parse_choices(parser, "--variants", args.variants, list(VARIANTS))
    args.seed = args.seed or [0]
    for flag in ("until_flat", "chunk", "anneal_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if not 0 < args.flat_tol < 1:
        parser.error(f"--flat-tol must be in (0, 1), got {args.flat_tol}")
    if args.anneal_steps is not None:
        if args.until_flat is not None:
            parser.error("--anneal-steps fixes the schedule; it excludes --until-flat")
        if args.anneal_steps > args.steps:
            parser.error(f"--anneal-steps {args.anneal_steps} exceeds --steps {args.steps}")
    return args


def parse_choices(parser: argparse.ArgumentParser, flag: str, text: str, known: list[str]):
    """The comma-separated names of ``text``, in ``known``'s order; an unknown or empty
    choice ends the program with ``parser.error``."""
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        parser.error(f"{flag} {unknown or '(empty)'}: expected some of {known}")
    return [v for v in known if v in chosen]


def study_recipe(args: argparse.Namespace, **run: Any) -> TrainConfig:
    """The study's training recipe with one run's settings on top.

    The recipe: the paper protocol, ``args.n_times`` samples per trial, epochs of
    ``args.epoch_samples`` freshly redrawn samples with a validation pass on ``args.n_val``
    after each, batch ``args.batch_size``, learning rate halved after 2 flat epochs, no early
    stop, a checkpoint every 100 steps. ``run`` (flat ``TrainConfig`` keys) names the rest:
    model and size, data row, seed, learning rate, budget and ``out_dir``, and may override
    the recipe (``lr_patience``).
    ``bench/deepsif_compare.py`` trains with it too.
    """
    recipe = dict(
        n_times=args.n_times,
        protocol="paper",
        n_train_samples=args.epoch_samples,
        n_val_samples=args.n_val,
        redraw=True,
        head_model=args.head_model,
        bank=args.bank,
        batch_size=args.batch_size,
        max_epochs=10_000,
        lr_patience=2,
        early_stop_patience=10_000,
        checkpoint_every=100,
        threads=args.threads,
        progress=not args.no_progress,
    )
    return TrainConfig.from_flat({**recipe, **run})


def variant_config(args: argparse.Namespace, name: str, seed: int) -> TrainConfig:
    """The training run of one variant and seed; only ``model_hyper`` differs by variant.
    With ``--anneal-steps`` the plateau halving is off (patience beyond any run) and the
    last ``anneal_steps`` steps decay the rate linearly to zero."""
    fixed = {"lr_patience": 10_000, "anneal_steps": args.anneal_steps} if args.anneal_steps else {}
    return study_recipe(
        args,
        model="fair_esi",
        model_hyper={"preset": args.preset, **VARIANTS[name]},
        dataset=DATASET,
        snr_db=SNR_DB,
        n_sources=args.n_sources,
        n_rings=args.n_rings,
        seed=seed,
        lr=args.lr,
        max_steps=args.steps,
        cpu_bf16=args.bf16,
        out_dir=str(args.out / f"seed{seed}" / name),
        **fixed,
    )


def flattened(
    curve: list[tuple[int, float, float, float]], window: int, tol: float, lr0: float
) -> bool:
    """Whether a learning curve has flattened under its learning-rate schedule.

    Parameters
    ----------
    curve : list of (step, validation loss, all-zero validation loss, learning rate)
        One entry per epoch, as :func:`learning_curve` returns it (the rate after the
        epoch's scheduler step).
    window : int
        Steps at the end of the curve that are compared with the rest.
    tol : float
        Relative gain below which the window counts as flat.
    lr0 : float
        The run's initial learning rate.

    Returns
    -------
    bool
        True when the curve is longer than ``window`` steps, the learning rate had been
        lowered below ``lr0`` before the window began (so the window trained at a lowered
        rate: a plateau at the first rate is often followed by a drop once the schedule
        halves it), and the best validation loss of the epochs within the window is more
        than ``(1 - tol)`` times the best before them (the window gained less than ``tol``).
    """
    if not curve or curve[-1][0] - curve[0][0] < window:
        return False
    start = curve[-1][0] - window
    before = [c for c in curve if c[0] <= start]
    recent = [c[1] for c in curve if c[0] > start]
    if not (before and recent) or before[-1][3] >= lr0:
        return False
    return min(recent) > (1 - tol) * min(c[1] for c in before)


def run_state(args: argparse.Namespace, run_dir: Path) -> tuple[int, str | None]:
    """(steps done, why the run is done or None while it should train on)."""
    last = run_dir / "last.pt"
    if not last.exists():
        return 0, None
    done = int(read_checkpoint(last)["progress"]["step"])
    if done >= args.steps:
        return done, f"cap of {args.steps} steps"
    curve = learning_curve(run_dir) if args.until_flat else []
    if curve and flattened(curve, args.until_flat, args.flat_tol, args.lr):
        return done, (
            f"flat (its last {args.until_flat} steps, at a lowered learning rate, gained "
            f"< {args.flat_tol:.0%})"
        )
    return done, None


def train_variant(args: argparse.Namespace, name: str, seed: int) -> None:
    """Train one variant up to ``args.steps`` (or until flat with ``--until-flat``),
    resuming from its ``last.pt`` if present."""
    config = variant_config(args, name, seed)
    run_dir = Path(config.run.out_dir)
    chunk = args.chunk if args.until_flat else args.steps
    done, why = run_state(args, run_dir)
    while why is None:
        target = min(args.steps, (done // chunk + 1) * chunk)
        if done == 0:
            print(f"[seed {seed}] {name}: training", flush=True)
            train(config.replace(max_steps=target))
        else:
            print(f"[seed {seed}] {name}: resuming at step {done}", flush=True)
            train(
                resume=run_dir / "last.pt",
                max_steps=target,
                threads=args.threads,
                progress=not args.no_progress,
                **({"cpu_bf16": True} if args.bf16 else {}),
            )
        done, why = run_state(args, run_dir)
    print(f"[seed {seed}] {name}: done at step {done}: {why}", flush=True)


def log_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's ``train_log.csv`` (none before it starts), with ``wall_s`` made
    cumulative: the log restarts it at each resume, so the segments are summed."""
    if not (path / "train_log.csv").exists():
        return []
    with open(path / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    offset = previous = 0.0
    for row in rows:
        wall = float(row["wall_s"])
        if wall < previous:
            offset += previous
        previous = wall
        row["wall_s"] = str(offset + wall)
    return rows


def learning_curve(run_dir: Path) -> list[tuple[int, float, float, float]]:
    """(step, validation loss, all-zero validation loss, learning rate) after every epoch
    of a run; empty before its first epoch."""
    return [
        (int(r["step"]), float(r["val_loss"]), float(r["val_loss_zero"]), float(r["lr"]))
        for r in log_rows(run_dir)
        if r["kind"] == "epoch"
    ]


def evaluate_variant(args, run_dir: Path, synth) -> dict[str, np.ndarray] | None:
    """Per-sample metrics of a run's best checkpoint on the first ``n_eval`` test samples
    (cached in ``eval.npz`` with the step of the checkpoint); None if not trained yet."""
    best = run_dir / "best.pt"
    if not best.exists() or run_state(args, run_dir)[1] is None:
        return None
    step = int(read_checkpoint(best)["progress"]["step"])
    cache = run_dir / "eval.npz"
    if cache.exists():
        with np.load(cache) as saved:
            if int(saved["step"]) == step and int(saved["n_eval"]) == args.n_eval:
                return {key: saved[key] for key, _, _ in TABLE_METRICS}
    model = load_checkpoint(best).model
    result = evaluate_estimator(model, synth, n=args.n_eval, progress=not args.no_progress)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, step=step, n_eval=args.n_eval, **result.per_sample)
    return result.per_sample


def report(args, synth) -> str:
    """Markdown: per-variant metrics (seeds pooled), paired gaps to 'literal', curves."""
    per_variant: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, list[str]] = {}
    for name in args.variants:
        runs = [args.out / f"seed{s}" / name for s in args.seed]
        metrics = [evaluate_variant(args, r, synth) for r in runs]
        if any(m is None for m in metrics):
            continue
        per_variant[name] = {
            key: np.concatenate([m[key] for m in metrics]) for key, _, _ in TABLE_METRICS
        }
        curves[name] = [
            " ".join(f"{c[1]:.0f}" for c in learning_curve(r))
            + " (best checkpoint at step {}; stopped at step {}: {})".format(
                int(read_checkpoint(r / "best.pt")["progress"]["step"]), *run_state(args, r)
            )
            for r in runs
        ]
    if not per_variant:
        return "no variant finished yet\n"
    n = args.n_eval * len(args.seed)
    header = ["variant"] + [label for _, label, _ in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in per_variant.items():
        lines.append(f"| {name} | " + " | ".join(table_cells(m)) + " |")
    out = [
        f"{n} test samples per variant ({args.n_eval} per seed, seeds {args.seed}); mean ± std:",
        "\n".join(lines),
    ]
    if "literal" in per_variant and len(per_variant) > 1:
        others = {k: v for k, v in per_variant.items() if k != "literal"}
        out.append(
            "Paired difference to 'literal' on the same samples, mean ± standard error:\n\n"
            + format_paired_table(per_variant["literal"], others, base_label="literal").rstrip()
        )
    zero = learning_curve(args.out / f"seed{args.seed[0]}" / next(iter(per_variant)))[0][2]
    out.append(
        f"Validation loss after each epoch ({args.epoch_samples} samples), one line per "
        f"seed (all-zero estimate: {zero:.0f}):\n\n"
        + "\n".join(f"- {name}: " + " | ".join(c) for name, c in curves.items())
    )
    return "\n\n".join(out) + "\n"


def plot_curves(args: argparse.Namespace, path: Path) -> Path | None:
    """Validation loss against optimizer steps of every run (one colour per variant, one
    line style per seed) into ``path`` (PNG); None when no run has a finished epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    zeros: dict[int, float] = {}  # seed -> validation loss of the all-zero estimate
    for k, name in enumerate(args.variants):
        for seed, style in zip(args.seed, ("-", "--", ":", "-."), strict=False):
            run = args.out / f"seed{seed}" / name
            curve = learning_curve(run)
            if not curve:
                continue
            ax.plot(
                [c[0] for c in curve],
                [c[1] for c in curve],
                style,
                color=f"C{k % 10}",
                label=f"{name}, seed {seed}",
            )
            zeros[seed] = curve[0][2]
    if not zeros:
        plt.close(fig)
        return None
    for seed, zero in zeros.items():
        ax.axhline(zero, color="grey", lw=0.8, ls=":")
        ax.annotate(f"all-zero estimate, seed {seed}", (0, zero), fontsize=6, color="grey")
    ax.set(
        title=f"{DATASET} {SNR_DB:g}/{args.n_sources}/{args.n_rings}, paper protocol, "
        f"T = {args.n_times}, preset {args.preset!r}",
        xlabel=f"optimizer steps (batch {args.batch_size})",
        ylabel="validation loss",
    )
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Train the missing runs, then write ``OUT/study.md`` and ``OUT/curves.png``; returns
    the exit code."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    if not args.report_only:
        for seed in args.seed:
            for name in args.variants:
                train_variant(args, name, seed)
    config = variant_config(args, args.variants[0], args.seed[0])
    synth = synthesizer(config.data, head_model=args.head_model, bank=args.bank, seed=config.seed)
    intro = (
        f"FAIR-ESI refinement readings: {DATASET} r={SNR_DB:g} dB, N_s={args.n_sources}, "
        f"N_n={args.n_rings}, paper protocol, n_times={args.n_times}, preset {args.preset!r}, "
        f"batch {args.batch_size}, lr {args.lr:g}, up to {args.steps} steps, epochs of "
        f"{args.epoch_samples} redrawn samples"
        + (
            f", until flat (the last {args.until_flat} steps, at a lowered learning rate, "
            f"gain < {args.flat_tol:.0%})"
            if args.until_flat
            else ""
        )
        + (
            f", fixed schedule (no halving; linear decay to zero over the last "
            f"{args.anneal_steps} steps)"
            if args.anneal_steps
            else ""
        )
        + f"; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {platform.machine()}; "
        f"wall {time.monotonic() - started:.0f} s (this invocation)."
    )
    text = intro + "\n\n" + report(args, synth)
    print(text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "study.md") as tmp:
        Path(tmp).write_text(text)
    plot_curves(args, args.out / "curves.png")
    with atomic_path(args.out / "study.json") as tmp:
        Path(tmp).write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
