"""Output amplitude against SNR, and what it does to DeepSIF's signed region rule.

Under the paper protocol a region counts as reconstructed when the *raw* estimate Ŝ
exceeds the Otsu threshold of the peak-normalised |Ŝ| (``fairesi.metrics``,
``rule='deepsif'``, as DeepSIF's ``get_otsu_regions``): the threshold lies in [0, 1] but
is compared with Ŝ in the normalised target units, so the rule is not scale-free. A
network that shrinks its output towards zero when the input is noisy draws fewer regions
at low SNR, whatever the shape of its map. Our strict rule (``rule='abs'``) compares
|Ŝ| / max |Ŝ| with the threshold and does not depend on the scale.

For each checkpoint and each configuration row this prints the median over the first
``--n`` test samples of: the peak |Ŝ| (and the target's), the number of reconstructed
regions by the signed rule, by the signed rule on Ŝ / max |Ŝ| (the same map at peak 1),
by the scale-free rule, and the true number of source regions.

Run (installed package, ~20 s per checkpoint and row on one thread)::

    python bench/rule_scale_probe.py runs/fusion-paper2/fair_esi/best.pt \\
        --rows=-5/1/1,0/1/1,5/1/1 --n 64
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from fairesi.data import SimConfig, parse_mixture
from fairesi.experiment import synthesizer
from fairesi.metrics import reconstructed_regions
from fairesi.train import load_checkpoint

COLUMNS = (
    "checkpoint",
    "row",
    "peak |Ŝ|",
    "peak |S|",
    "regions, signed rule",
    "signed rule on Ŝ / max |Ŝ|",
    "scale-free rule",
    "true regions",
)


def region_counts(estimate: np.ndarray) -> dict[str, np.ndarray]:
    """Reconstructed-region counts of estimates under the two rules and at peak 1.

    Parameters
    ----------
    estimate : np.ndarray, shape (B, R, T)
        Source estimates in the normalised target units.

    Returns
    -------
    counts : dict of np.ndarray, each shape (B,)
        ``peak`` (max |Ŝ| per sample), ``signed`` (``rule='deepsif'``), ``signed_at_peak_1``
        (``rule='deepsif'`` on Ŝ / max |Ŝ|) and ``scale_free`` (``rule='abs'``).
    """
    peak = np.abs(estimate).max(axis=(1, 2))
    at_peak_1 = estimate / np.where(peak > 0, peak, 1.0)[:, None, None]
    return {
        "peak": peak,
        "signed": reconstructed_regions(estimate, rule="deepsif").sum(axis=1),
        "signed_at_peak_1": reconstructed_regions(at_peak_1, rule="deepsif").sum(axis=1),
        "scale_free": reconstructed_regions(estimate, rule="abs").sum(axis=1),
    }


def probe(
    checkpoint: Any, path: str, row: tuple[float, int, int], n: int, protocol: str | None
) -> list[str]:
    """One table row: the medians over the first ``n`` test samples of ``row`` for a
    loaded checkpoint (:func:`fairesi.train.load_checkpoint`) read from ``path``."""
    data = SimConfig.from_dict(dict(checkpoint.config["data"])).with_row(row)
    if protocol is not None:
        data = data.with_protocol(protocol)
    train = checkpoint.config["train"]
    synth = synthesizer(
        data,
        head_model=checkpoint.head_model,
        bank=train["bank"],
        seed=int(train["seed"]),
        device="cpu",
    )
    n = min(n, synth.split_size("test"))
    batch = synth.batch("test", torch.arange(n, dtype=torch.int64))
    with torch.no_grad():
        estimate = checkpoint.model(batch.x).float().numpy()
    counts = region_counts(estimate)
    target_peak = batch.target.abs().amax(dim=(1, 2)).numpy()
    true = batch.source_mask.numpy().sum(axis=1)
    snr_db, n_sources, n_rings = row
    return [
        path,
        f"{snr_db:g}/{n_sources}/{n_rings}",
        f"{np.median(counts['peak']):.3f}",
        f"{np.median(target_peak):.3f}",
        f"{np.median(counts['signed']):.0f}",
        f"{np.median(counts['signed_at_peak_1']):.0f}",
        f"{np.median(counts['scale_free']):.0f}",
        f"{np.median(true):.0f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Peak output amplitude and reconstructed-region counts per SNR row."
    )
    parser.add_argument("checkpoints", nargs="+", help="best.pt / last.pt of `fairesi train`")
    parser.add_argument(
        "--rows",
        default="-5/1/1,0/1/1,5/1/1",
        help="configurations SNR/N_s/N_n, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--n", type=int, default=64, help="test samples per row (default: 64)")
    parser.add_argument(
        "--protocol",
        choices=("strict", "paper"),
        help="data of this protocol (default: each checkpoint's own)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    torch.set_num_threads(args.threads)
    try:
        rows = parse_mixture(args.rows)
    except ValueError as err:
        parser.error(f"--rows: {err}")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for path in args.checkpoints:
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
        except (OSError, ValueError, RuntimeError) as err:
            parser.error(f"cannot read checkpoint {path}: {err}")
        for row in rows:
            cells = probe(checkpoint, path, row, args.n, args.protocol)
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
