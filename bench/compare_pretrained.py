"""Two versions of a shipped model on the same fresh test samples, paired (issue 15).

Before a newly packed model replaces the shipped one, both are scored on the same
samples of each configuration under both protocols, and the per-sample differences
(new - old, mean ± s.e.) say whether it is better. The paper protocol's patch growth is
today's (DeepSIF's candidate patches) for both models, whatever growth each was trained
with (``--growth`` chooses another), so a model trained under the old random growth is
scored on the same samples as one trained on the candidates.

Run (installed package, from the repository root)::

    python bench/compare_pretrained.py eeg --new-dir runs/pack_wide/out --n 256 \\
        --config 5/1/2 --threads 1

Prints a Markdown table: each model's mean ± std and the paired difference, per
configuration and protocol.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairesi.data import SimConfig
from fairesi.evaluate import (
    TABLE_METRICS,
    evaluate_estimator,
    pretrained_rows,
    pretrained_test_data,
)
from fairesi.experiment import synthesizer
from fairesi.metrics import paired_difference, summarize
from fairesi.models import Pretrained, pretrained
from fairesi.models.pretrained import PRETRAINED_DIR


def score(
    shipped: Pretrained,
    row: str,
    protocol: str,
    growth: str,
    n: int,
    seed: int,
    bank: str,
) -> tuple[SimConfig, dict[str, np.ndarray]]:
    """Per-sample metrics of one model file on one configuration's fresh test samples.

    Parameters
    ----------
    shipped : fairesi.models.Pretrained
        The model, as ``fairesi.models.pretrained`` loads it.
    row : str
        The configuration ``"r/N_s/N_n"`` of the samples.
    protocol : {'paper', 'strict'}
        Their protocol.
    growth : str
        The paper protocol's ``patch_growth`` (ignored under the strict one, which grows
        full rings).
    n, seed : int
        How many samples, and their seed.
    bank : str
        Waveform bank spec.

    Returns
    -------
    data : SimConfig
        The samples' configuration (two models are paired only where these are equal).
    per_sample : dict of str to numpy.ndarray (n,)
        ``fairesi.metrics.localization_metrics`` per sample (fractions, mm, plain nMSE).
    """
    data = pretrained_test_data(shipped, configuration=row, protocol=protocol)
    if protocol == "paper":
        data = dataclasses.replace(data, patch_growth=growth)
    synth = synthesizer(data, head_model=shipped.head_model, bank=bank, seed=seed)
    return data, evaluate_estimator(shipped.model, synth, n=n, progress=False).per_sample


def table(results: list[dict[str, Any]]) -> str:
    """Markdown rows: old, new and new - old of each configuration and protocol."""
    head = "| r / N_s / N_n | protocol | model | " + " | ".join(
        label for _, label, _ in TABLE_METRICS
    )
    lines = [head + " |", "|---" * (3 + len(TABLE_METRICS)) + "|"]
    for res in results:
        old, new = summarize(res["old"]), summarize(res["new"])
        cells = {
            "old": [_cell(*old[k], f, "") for k, _, f in TABLE_METRICS],
            "new": [_cell(*new[k], f, "") for k, _, f in TABLE_METRICS],
            "new − old": [_cell(*res["diff"][k][:2], f, "+") for k, _, f in TABLE_METRICS],
        }
        for model, row_cells in cells.items():
            lines.append(
                f"| {res['row']} | {res['protocol']} | {model} | " + " | ".join(row_cells) + " |"
            )
    return "\n".join(lines)


def _cell(mean: float, spread: float, factor: float, sign: str) -> str:
    """'mean ± spread' in table units (``sign`` '+' shows it on differences); '-' where
    the metric is defined on no sample."""
    if np.isnan(mean):
        return "-"
    return f"{mean * factor:{sign}.2f} ± {spread * factor:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Score both versions and print the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="which model: 'meg' or 'eeg' (the file NAME.pt)")
    parser.add_argument("--new-dir", type=Path, required=True, help="the new model's folder")
    parser.add_argument(
        "--old-dir", type=Path, default=PRETRAINED_DIR, help="the old one's (the package's)"
    )
    parser.add_argument(
        "--config",
        action="append",
        help="configuration(s) 'r/N_s/N_n' (default: every row the new model trained on)",
    )
    parser.add_argument("--protocols", default="paper,strict", help="comma-separated")
    parser.add_argument("--growth", default="candidates", help="paper-protocol patch growth")
    parser.add_argument("--n", type=int, default=256, help="test samples per row (256)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the samples (1000)")
    parser.add_argument("--bank", default="default", help="waveform bank of the test samples")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.config or pretrained_rows(args.name, directory=args.new_dir)
    # Both files are read once, first: a package reinstalled meanwhile changes nothing.
    models = [pretrained(args.name, directory=d) for d in (args.old_dir, args.new_dir)]
    results = []
    for row in rows:
        for protocol in args.protocols.split(","):
            (old_data, old), (new_data, new) = (
                score(model, row, protocol, args.growth, args.n, args.seed, args.bank)
                for model in models
            )
            if old_data != new_data:
                parser.error(f"{row} {protocol}: the two models' test samples differ")
            results.append(
                {
                    "row": row,
                    "protocol": protocol,
                    "old": old,
                    "new": new,
                    "diff": paired_difference(old, new),
                }
            )
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(
        f"\n{args.name}: old {args.old_dir}, new {args.new_dir}; {args.n} samples of seed "
        f"{args.seed} per row; paper protocol with patch_growth='{args.growth}'\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
