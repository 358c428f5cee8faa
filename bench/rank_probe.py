"""How much precision an output of limited rank leaves: the rank oracle.

A network whose last layer is a linear map from ``k`` features to the ``R`` regions (the
'cpu' preset of FAIR-ESI: a BiGRU of 2 x 128 features, so ``k = 256`` for R = 994; the
'paper' preset: ``k = R``) can only draw maps in a ``k``-dimensional subspace of region
space (plus the head's bias). Whatever it learns, its estimate of a source map ``S``
(R x T) is then at best ``U U^T S`` for the subspace ``U`` (R x k) it has. This script
takes the subspace a squared-error loss favours: the top ``k`` eigenvectors of the
targets' second moment ``sum_b S_b S_b^T`` over ``--n-fit`` training samples (the
best rank-``k`` squared-error fit of the training targets), projects the first ``--n``
test samples' true sources onto it and scores the projections with the protocol's
rule. That **rank oracle** knows the true source and loses only what the rank loses; it
is the MSE-optimal subspace, not the precision-optimal one, so it is an estimate of the
cap, not a proof of it. With ``--checkpoint`` that network is scored on the same samples,
and so is the subspace of its own output head (the true source projected onto the span
of its head's weight); give the row, protocol and ``--seed`` it was trained with.

Run (installed package; a few minutes per row on one thread, most of it synthesising the
fitted samples; with too few the subspace is underfitted: at k = 256 on SimMEG 5/1/2, 512
samples score 11 points lower than 8,192, and 32,768 under one point higher)::

    python bench/rank_probe.py --dataset SimMEG --rows=5/1/2 --protocol paper \\
        --ranks 64,128,256,512,994 --n 256 --n-fit 8192 --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fairesi.data import SimConfig, parse_mixture
from fairesi.data.config import PATCH_GROWTHS
from fairesi.evaluate import rule_of
from fairesi.experiment import synthesizer
from fairesi.metrics import localization_metrics, reconstructed_regions
from fairesi.train import load_checkpoint

METRICS = (("precision", 100.0), ("recall", 100.0), ("le_mm", 1.0))


def second_moment(synth, n_fit: int, batch: int = 256) -> torch.Tensor:
    """``sum_b S_b S_b^T`` (R, R), float64, over the first ``n_fit`` training targets
    ``S_b`` (R, T) of ``synth``."""
    r = synth.head_model.n_regions
    moment = torch.zeros(r, r, dtype=torch.float64)
    n_fit = min(n_fit, synth.split_size("train"))
    for start in range(0, n_fit, batch):
        index = torch.arange(start, min(start + batch, n_fit), dtype=torch.int64)
        s = synth.batch("train", index).target.double()  # (B, R, T)
        moment += torch.einsum("brt,bqt->rq", s, s)
    return moment


def top_subspace(moment: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal basis (R, k) of the top ``k`` eigenvectors of a symmetric (R, R)."""
    _, vectors = torch.linalg.eigh(moment)  # ascending eigenvalues
    return vectors[:, -k:]


def project(basis: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``U U^T S``: sources (B, R, T) projected onto the span of an orthonormal basis U
    (R, k)."""
    return torch.einsum("rk,qk,bqt->brt", basis, basis, sources)


def head_subspace(model: torch.nn.Module) -> torch.Tensor:
    """Orthonormal basis (R, k) of the span of a network's last linear layer's weight
    (R, k); the layer is the last ``nn.Linear`` whose output size is the network's
    region count."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    r = model.config.n_regions
    head = [m for m in linears if m.out_features == r][-1]
    q, _ = torch.linalg.qr(head.weight.detach().double())
    return q


def scores(
    estimate: torch.Tensor, batch, centroids: np.ndarray, rule: str
) -> dict[str, np.ndarray]:
    """Per-sample metrics of ``estimate`` (B, R, T) against the batch's true sources, with
    the regions drawn per sample under ``rule`` (key ``'drawn'``)."""
    m = localization_metrics(
        estimate.numpy(), batch.target.numpy(), batch.source_mask.numpy(), centroids, rule=rule
    )
    m["drawn"] = (
        reconstructed_regions(estimate.numpy(), rule=rule).reshape(len(estimate), -1).sum(1)
    )
    return m


def row_lines(args: argparse.Namespace, row: tuple[float, int, int], network) -> list[str]:
    """Table lines of one row: the truth, the rank oracle at each rank and, when a network
    is given, the network and the truth projected onto the network's head."""
    snr, n_s, n_n = row
    data = SimConfig.preset(
        args.dataset,
        protocol=args.protocol,
        n_times=args.n_times,
        snr_db=snr,
        n_sources=n_s,
        n_rings=n_n,
        **({"patch_growth": args.patch_growth} if args.patch_growth else {}),
    )
    synth = synthesizer(data, head_model=args.head_model, bank=args.bank, seed=args.seed)
    rule = rule_of(data.protocol)
    centroids = np.asarray(synth.head_model.region_centroids_mm)
    n = min(args.n, synth.split_size("test"))
    batch = synth.batch("test", torch.arange(n, dtype=torch.int64))
    truth = batch.target.double()
    # All eigenvectors once, ascending: each rank's subspace is their last k columns.
    vectors = top_subspace(second_moment(synth, args.n_fit), synth.head_model.n_regions)
    estimates = {"truth": truth}
    for k in args.ranks:
        estimates[f"rank oracle, k = {k}"] = project(vectors[:, -k:], truth)
    if network is not None:
        with torch.no_grad():
            estimates["network"] = torch.cat([network(x).double() for x in batch.x.split(64)])
        basis = head_subspace(network)
        estimates[f"truth on the network's head (k = {basis.shape[1]})"] = project(basis, truth)
    label = f"| {args.dataset} {snr:g}/{n_s}/{n_n} | {data.protocol}, {data.patch_growth} ({n}) |"
    true_regions = batch.source_mask.numpy().reshape(n, -1).sum(1).mean()
    lines = []
    for name, estimate in estimates.items():
        m = scores(estimate, batch, centroids, rule)
        cells = [
            f"{np.nanmean(m[key]) * f:.2f} ± {np.nanstd(m[key]) * f:.2f}" for key, f in METRICS
        ]
        residual = ((estimate - truth) ** 2).sum() / (truth**2).sum()
        lines.append(
            f"{label} {name} | {' | '.join(cells)} | {m['drawn'].mean():.1f} | "
            f"{true_regions:.1f} | {residual:.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Print the rank-oracle table of every row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("SimMEG", "SimEEG"), default="SimMEG")
    parser.add_argument("--rows", default="5/1/2", help="comma-separated r/N_s/N_n rows")
    parser.add_argument("--protocol", choices=("paper", "strict"), default="paper")
    parser.add_argument("--patch-growth", choices=PATCH_GROWTHS, default=None,
                        help="the protocol's growth unless given")  # fmt: skip
    parser.add_argument("--ranks", default="64,128,256,512,994", help="comma-separated k")
    parser.add_argument("--n", type=int, default=256, help="test samples per row (256)")
    parser.add_argument("--n-fit", type=int, default=8192, help="training targets fitted (8192)")
    parser.add_argument("--n-times", type=int, default=128, help="samples per trial (128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (0)")
    parser.add_argument("--checkpoint", default=None, help="also score this network's head")
    parser.add_argument("--head-model", default="default", help="'default', 'toy' or a file")
    parser.add_argument("--bank", default="default", help="'default', a file, or 'synthetic'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    try:
        rows = parse_mixture(args.rows)
        args.ranks = [int(k) for k in args.ranks.split(",") if k.strip()]
    except ValueError as err:
        parser.error(str(err))
    if not args.ranks or min(args.ranks) < 1:
        parser.error(f"--ranks must be positive integers, got {args.ranks}")
    if args.threads:
        torch.set_num_threads(args.threads)
    network = load_checkpoint(args.checkpoint).model if args.checkpoint else None
    if network is not None and network.config.n_times != args.n_times:
        parser.error(
            f"--checkpoint takes {network.config.n_times} samples per trial; "
            f"give --n-times {network.config.n_times}"
        )
    print(
        "| row | protocol, growth (samples) | estimate | Precision (%) | Recall (%) | LE (mm) "
        "| regions drawn | true regions | relative squared error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for line in row_lines(args, row, network):
            print(line, flush=True)


if __name__ == "__main__":
    main()
