"""Paper Table IV from the flattened refinement study, under both protocols, seeds pooled.

``bench/refine_study.py --until-flat`` trains each of Table IV's six rows to flat (one run
per variant and seed under ``OUT/seed<S>/<variant>/``); each run's best checkpoint is then
scored with ``fairesi evaluate best.pt --n N --protocol P --out OUT/seed<S>/<variant>/eval-P``
for P in ``paper`` and ``strict``. This script reads those ``per_sample.csv`` files (or
``OUT/seed<S>/<variant>/per_sample_P.csv``, as ``bench/data/refine_study_cand/`` keeps them)
and the runs' ``train_log.csv`` and prints (and with ``--write`` writes) Markdown:

- the training budget of every run: steps done, the step of its best validation loss and
  that loss, and whether the run is flat under the study's rule
  (:func:`refine_study.flattened`);
- per protocol, the six rows (mean ± std over the pooled samples of the seeds that have the
  row), with the paper's Table IV under the paper protocol;
- per protocol, every row's paired difference to Table IV's first row (no view) on the same
  samples (mean ± s.e.), over the seeds that have both, and the paper's difference of means.

Table IV's rows map to the study's variants as::

    none (-/-/-)               t4-none
    spectral (S/-/-)           t4-spectral
    temporal (-/T/-)           t4-temporal
    spectral+temporal (S/T/-)  t4-spectral+temporal
    patch-wise (-/-/P)         none
    all (S/T/P)                key-input (the default reading)

Run::

    python bench/table4_summary.py --out bench/data/refine_study_cand --seeds 0,1 \\
        --write bench/data/refine_study_cand/table4.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ablation import PAPER_TABLE_IV  # bench/, beside this script
from fairesi.evaluate import (
    TABLE_METRICS,
    format_paired_table,
    read_per_sample,
    reference_cells,
    table_cells,
)
from fairesi.io import atomic_path
from refine_study import flattened, learning_curve

#: (Table IV row label, paper Table IV key, refine_study variant), in the paper's order.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("none (-/-/-)", "none", "t4-none"),
    ("spectral (✓/-/-)", "spectral", "t4-spectral"),
    ("temporal (-/✓/-)", "temporal", "t4-temporal"),
    ("spectral+temporal (✓/✓/-)", "spectral+temporal", "t4-spectral+temporal"),
    ("patch-wise (-/-/✓)", "patch-wise", "none"),
    ("all (✓/✓/✓)", "all", "key-input"),
)
PROTOCOLS = ("paper", "strict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Table IV (six refinement rows) from the flattened refinement study's "
        "evaluations, both protocols, seeds pooled, paired differences to the no-view row.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/refine_study_cand"),
        help="the study's output folder (holds seed<S>/<variant>/)",
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (0,1)")
    parser.add_argument(
        "--until-flat",
        type=int,
        default=3000,
        metavar="W",
        help="the study's flatness window in steps (3000)",
    )
    parser.add_argument("--flat-tol", type=float, default=0.02, help="its tolerance (0.02)")
    parser.add_argument("--lr", type=float, default=1e-3, help="its initial rate (1e-3)")
    parser.add_argument("--write", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds is empty")
    if not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder")
    return args


def load(out: Path, seeds: list[int], protocol: str) -> dict[tuple[str, int], dict]:
    """(variant, seed) -> per-sample metrics of every evaluation found under ``out``.

    Raises
    ------
    ValueError
        If two variants of one seed were scored on different samples (they would not pair).
    """
    found: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    index_of_seed: dict[int, np.ndarray] = {}
    for _, _, variant in ROWS:
        for seed in seeds:
            run = out / f"seed{seed}" / variant
            path = run / f"eval-{protocol}" / "per_sample.csv"
            if not path.is_file():
                path = run / f"per_sample_{protocol}.csv"  # as kept in bench/data/
            if not path.is_file():
                continue
            index, metrics = read_per_sample(path)
            if seed in index_of_seed and not np.array_equal(index_of_seed[seed], index):
                raise ValueError(f"{path}: other test samples than seed {seed}'s other rows")
            index_of_seed[seed] = index
            found[variant, seed] = metrics
    return found


def pooled(found: dict, variant: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """The per-sample metrics of ``variant`` over ``seeds``, concatenated in seed order."""
    parts = [found[variant, s] for s in seeds]
    return {key: np.concatenate([p[key] for p in parts]) for key, _, _ in TABLE_METRICS}


def budget_table(out: Path, seeds: list[int], window: int, tol: float, lr0: float) -> str:
    """Markdown: per run, steps done, best validation loss and its step, flat or not."""
    lines = [
        "| row | seed | steps | best validation loss (step) | learning rate at the end | flat |",
        "|---|---|---|---|---|---|",
    ]
    for label, _, variant in ROWS:
        for seed in seeds:
            curve = learning_curve(out / f"seed{seed}" / variant)
            if not curve:
                continue
            best = min(curve, key=lambda c: c[1])
            flat = "yes" if flattened(curve, window, tol, lr0) else "no"
            lines.append(
                f"| {label} | {seed} | {curve[-1][0]} | {best[1]:.1f} ({best[0]}) | "
                f"{curve[-1][3]:.2g} | {flat} |"
            )
    return "\n".join(lines) + "\n"


def protocol_tables(found: dict, seeds: list[int], protocol: str) -> str:
    """Markdown: the rows' mean ± std, then their paired differences to the no-view row."""
    header = ["row", "seeds", "n"] + [label for _, label, _ in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, _, variant in ROWS:
        have = [s for s in seeds if (variant, s) in found]
        if not have:
            continue
        metrics = pooled(found, variant, have)
        n = len(metrics["precision"])
        cells = table_cells(metrics)
        lines.append(f"| {label} | {','.join(map(str, have))} | {n} | " + " | ".join(cells) + " |")
    if protocol == "paper":
        for label, key, _ in ROWS:
            cells = reference_cells(PAPER_TABLE_IV[key])
            lines.append(f"| {label}, paper's Table IV | | | " + " | ".join(cells) + " |")
    out = [f"**{protocol} protocol** (mean ± std):", "\n".join(lines)]

    base_variant = ROWS[0][2]
    others, bases = {}, {}
    for label, _, variant in ROWS[1:]:
        common = [s for s in seeds if (variant, s) in found and (base_variant, s) in found]
        if not common:
            continue
        name = f"{label} − none, seeds {','.join(map(str, common))}"
        others[name] = pooled(found, variant, common)
        bases[name] = pooled(found, base_variant, common)
    if others:
        first = next(iter(bases.values()))
        table = format_paired_table(first, others, base_label="none", row_bases=bases)
        out.append(f"Paired difference to none (-/-/-), {protocol} protocol (mean ± s.e.):")
        out.append(table.rstrip())
    if protocol == "paper":
        none = PAPER_TABLE_IV["none"]
        diffs = [
            f"| {label} − none | "
            + " | ".join(
                f"{PAPER_TABLE_IV[key][k][0] - none[k][0]:+.2f}" for k, _, _ in TABLE_METRICS
            )
            + " |"
            for label, key, _ in ROWS[1:]
        ]
        header = "| paper's Table IV, difference of means | " + " | ".join(
            label for _, label, _ in TABLE_METRICS
        )
        out.append("\n".join([header + " |", "|" + "---|" * (len(TABLE_METRICS) + 1), *diffs]))
    return "\n\n".join(out) + "\n"


def summary(args: argparse.Namespace) -> str:
    """The whole Markdown report."""
    parts = [
        f"Table IV from `{args.out}`, seeds {args.seeds}.",
        "Training (validation loss after each epoch; flat: the last "
        f"{args.until_flat} steps at a lowered rate gained < {args.flat_tol:.0%}):",
        budget_table(args.out, args.seeds, args.until_flat, args.flat_tol, args.lr).rstrip(),
    ]
    for protocol in PROTOCOLS:
        found = load(args.out, args.seeds, protocol)
        if found:
            parts.append(protocol_tables(found, args.seeds, protocol).rstrip())
        else:
            parts.append(f"**{protocol} protocol**: no evaluation found.")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the report; 0 on success, 2 (one line on stderr) when an
    evaluation cannot be read or does not pair."""
    args = parse_args(argv)
    try:
        text = summary(args)
    except (OSError, ValueError) as err:  # a damaged or mismatched evaluation
        print(f"table4_summary: error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.write is not None:
        with atomic_path(args.write) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
