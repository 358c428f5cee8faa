"""How much precision a protocol's patch growth leaves to any network.

Under the paper protocol a patch is not the full neighbour rings of its centre: its
outer rings are grown at random (``SimConfig.patch_growth``). With 'random' (the paper
protocol before 'candidates') the growth is drawn afresh for every sample, region by
region; with 'candidates' (DeepSIF's way, :mod:`fairesi.data.growth`) each sample takes
one of a fixed set of grown patches of its centre. Which regions were grown is a fine
detail of the cortex that the sensors barely see, and a network trained with a squared
error then spreads its estimate over every region that *might* belong to the patch. This
script measures what that costs.

For the first ``--n`` test samples of each row it builds the **growth oracle**: the true
centres, waveforms, amplitudes and fall-off (everything the sample has), but in place of
the grown membership its probability given the centre: over the centre's candidates
('candidates'), or over ``--draws`` fresh growths ('random'). That is the best
squared-error estimate of a network that knows everything except which growth the
sample has. Its metrics under the row's protocol bound any network that cannot read the
growth from the sensors; with few, distinct candidates per centre the sensors may tell
them apart, and a network can then pass it. The true source (``truth``) scores
precision 1 by construction; the network of ``--checkpoint`` is scored on the same
samples.

Run (installed package; a few seconds per row)::

    python bench/extent_oracle.py --checkpoint runs/cmp90/SimMEG/seed1/fair_esi-lr0.001/best.pt \\
        --rows=5/1/2,-5/1/2,15/1/2 --n 256 [--patch-growth candidates]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Any

import numpy as np
import torch

from fairesi.data import SimConfig, parse_mixture
from fairesi.data.config import PATCH_GROWTHS
from fairesi.data.rng import M32
from fairesi.data.synth import Synthesizer
from fairesi.evaluate import rule_of
from fairesi.experiment import synthesizer
from fairesi.metrics import localization_metrics, reconstructed_regions
from fairesi.train import load_checkpoint

METRICS = (("precision", 100.0), ("recall", 100.0), ("le_mm", 1.0))


def membership_probability(synth: Synthesizer, centres: torch.Tensor, draws: int) -> torch.Tensor:
    """Probability that each member of the patch table is grown, given the centres.

    Parameters
    ----------
    synth : Synthesizer
        A synthesizer of one row.
    centres : torch.Tensor, shape (B, N_s), int64
        Centre regions.
    draws : int
        Fresh growths averaged (``patch_growth='random'`` only).

    Returns
    -------
    p : torch.Tensor, shape (B, N_s, M), float64
        Over ``synth``'s patch table of each centre (``_patch_regions[centres]``), 0 for
        padding. 'rings': 1 for every member. 'candidates': the fraction of the centre's
        DeepSIF candidates that hold the member (each is equally likely). 'random': the
        growth frequency over ``draws`` fresh growths.
    """
    valid = synth._patch_valid[centres]
    growth = synth.config.patch_growth
    if growth == "candidates":
        member = synth._candidates[centres].double()  # (B, N_s, K, M)
        return member.sum(2) / synth._candidate_count[centres][..., None]
    if growth != "random":
        return valid.double()
    gen = torch.Generator().manual_seed(0x0AC1E)
    total = torch.zeros(valid.shape, dtype=torch.float64)
    first = 4 * centres.shape[1] + 1
    for _ in range(draws):
        keys = torch.randint(0, M32 + 1, (centres.shape[0], 1), generator=gen)
        total += synth._grow_partial_rings(keys, centres, first).double()
    return total / draws


def full_weights(synth: Synthesizer, index: torch.Tensor) -> torch.Tensor:
    """Fall-off weights (B, N_s, M) of every member of the samples' whole patches: the
    samples' own draws with the growth replaced by full rings."""
    whole = copy.copy(synth)
    whole.config = dataclasses.replace(synth.config, patch_growth="rings")
    return whole._draw("test", index, 0)["patch_weights"].double()


def growth_oracle(synth: Synthesizer, index: torch.Tensor, target: torch.Tensor,
                  centres: torch.Tensor, draws: int) -> torch.Tensor:  # fmt: skip
    """The growth oracle's estimate (B, R, T) of test samples ``index``.

    Parameters
    ----------
    synth : Synthesizer
        A synthesizer of one row.
    index : torch.Tensor, shape (B,), int64
        Test sample indices.
    target : torch.Tensor, shape (B, R, T)
        Their normalised targets (``synth.batch('test', index).target``).
    centres : torch.Tensor, shape (B, N_s), int64
        Their centre regions.
    draws : int
        Growths averaged for the membership probability.

    Returns
    -------
    estimate : torch.Tensor, shape (B, R, T), float64
        Each member region of each patch carries its source's normalised time course (the
        target at the centre, whose weight is 1) times its fall-off weight times its
        membership probability; other regions are 0.
    """
    n, n_s = centres.shape
    weight = full_weights(synth, index) * membership_probability(synth, centres, draws)
    regions = synth._patch_regions[centres]  # (B, N_s, M), -1 padding
    course = target.double()[torch.arange(n)[:, None], centres]  # (B, N_s, T)
    activity = weight[..., None] * course[:, :, None, :]  # (B, N_s, M, T)
    estimate = torch.zeros(target.shape, dtype=torch.float64)
    valid = regions >= 0
    b = torch.arange(n)[:, None, None].expand_as(regions)
    estimate.index_put_((b[valid], regions[valid]), activity[valid], accumulate=True)
    return estimate


def row_lines(checkpoint: Any, row: tuple[float, int, int], n: int, draws: int,
              protocol: str | None, growth: str | None = None) -> list[str]:  # fmt: skip
    """Table lines (truth, growth oracle, network, and the network's paired difference
    from the oracle) of one row on its first ``n`` test samples."""
    data = SimConfig.from_dict(dict(checkpoint.config["data"])).with_row(row)
    if protocol is not None:
        data = data.with_protocol(protocol)
    if growth is not None:
        data = dataclasses.replace(data, patch_growth=growth)
    train = checkpoint.config["train"]
    synth = synthesizer(
        data, head_model=checkpoint.head_model, bank=train["bank"], seed=int(train["seed"])
    )
    n = min(n, synth.split_size("test"))
    index = torch.arange(n, dtype=torch.int64)
    batch = synth.batch("test", index)
    with torch.no_grad():
        network = checkpoint.model(batch.x).double()
    estimates = {
        "truth": batch.target.double(),
        "growth oracle": growth_oracle(synth, index, batch.target, batch.centres, draws),
        "network": network,
    }
    centroids = np.asarray(synth.head_model.region_centroids_mm)
    rule = rule_of(data.protocol)
    snr, n_s, n_n = row
    label = f"| {snr:g}/{n_s}/{n_n} | {data.protocol}, {data.patch_growth} ({n}) |"
    lines, per_sample = [], {}
    for name, estimate in estimates.items():
        m = localization_metrics(
            estimate.numpy(), batch.target.numpy(), batch.source_mask.numpy(), centroids, rule=rule
        )
        per_sample[name] = m
        drawn = reconstructed_regions(estimate.numpy(), rule=rule).sum()
        cells = [f"{np.nanmean(m[k]) * f:.2f} ± {np.nanstd(m[k]) * f:.2f}" for k, f in METRICS]
        lines.append(
            f"{label} {name} | {' | '.join(cells)} | {drawn / n:.1f} | "
            f"{batch.source_mask.numpy().sum() / n:.1f} |"
        )
    cells = []
    for k, f in METRICS:  # paired over the samples where both are defined
        d = (per_sample["network"][k] - per_sample["growth oracle"][k]) * f
        d = d[np.isfinite(d)]
        cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(max(d.size, 1)):.2f}")
    lines.append(f"{label} network − growth oracle (mean ± s.e.) | {' | '.join(cells)} | | |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Print the truth / growth-oracle / network table of every row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run's best.pt: its data and network")
    parser.add_argument("--rows", default="5/1/2", help="comma-separated r/N_s/N_n rows")
    parser.add_argument("--n", type=int, default=256, help="test samples per row (256)")
    parser.add_argument("--draws", type=int, default=256, help="growths averaged (256)")
    parser.add_argument("--protocol", choices=("paper", "strict"), default=None,
                        help="the checkpoint's protocol unless given")  # fmt: skip
    parser.add_argument("--patch-growth", choices=PATCH_GROWTHS, default=None,
                        help="the protocol's growth unless given")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    try:
        rows = parse_mixture(args.rows)
    except ValueError as err:
        parser.error(f"--rows: {err}")
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint)
    print(f"checkpoint: {args.checkpoint}")
    print("| row | protocol, growth (samples) | estimate | Precision (%) | Recall (%) | LE (mm) "
          "| regions drawn | true regions |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for line in row_lines(
            checkpoint, row, args.n, args.draws, args.protocol, args.patch_growth
        ):
            print(line, flush=True)


if __name__ == "__main__":
    main()
