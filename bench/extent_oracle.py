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
them apart, and a network can then pass it. How far, the three **sensor oracles**
measure ('candidates', one source): each weighs every candidate of the centre by its
likelihood of the observed sensors and averages their targets with those weights, the
best a network can do by recognising the candidate; they differ in what else they know
(the background activity, or only its power, or besides only the centre and fall-off;
:func:`sensor_oracle`), and each also reports how often its most probable candidate is
the sample's own. The true source (``truth``) scores precision 1 by
construction; the network of ``--checkpoint`` is scored on the same samples.

Run (installed package; seconds per row, minutes with the sensor oracles)::

    python bench/extent_oracle.py --checkpoint runs/cmp90/SimMEG/seed1/fair_esi-lr0.001/best.pt \\
        --rows=5/1/2,-5/1/2,15/1/2 --n 256 [--patch-growth candidates]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
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


SENSOR_ORACLES = (
    "sensor oracle",
    "sensor oracle, unknown background",
    "sensor oracle, unknown background and time course",
)


def sensor_oracle(synth: Synthesizer, index: torch.Tensor,
                  chunk: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """The sensor oracles' estimates (B, R, T) of test samples ``index``, each with
    whether its most probable candidate is the sample's own (B,) bool.

    For ``patch_growth='candidates'`` with one source. The oracles know at most everything
    of a sample but which of its centre's candidates it took. They compose every candidate
    ``k`` with the sample's own draws (centre, waveform, peak, source SNR, fall-off,
    background), weigh it by its likelihood of the observed sensors ``y = clean + noise``
    (B, C, T) under a uniform prior over the centre's candidates, and average the
    candidates' normalised targets with the posterior: the best squared-error estimate of
    a network that reads the candidate from the sensors.

    - ``'sensor oracle'`` also knows the background activity at the sensors; the
      likelihood is the synthesizer's white Gaussian noise of the composition's
      per-channel std ``sigma_k`` (B, C)::

          log p(y | k) = -sum_c [ sum_t (y - clean_k)_ct^2 / (2 sigma_k,c^2) + T log sigma_k,c ]

      An upper bound on what recognising the candidate can reach.
    - ``'sensor oracle, unknown background'`` knows only the background's power per
      channel ``v_k,c`` (its mean square over time): it compares ``y`` with the patch's
      share ``G_patch @ s_k`` alone, under white noise of variance ``sigma_k,c^2 + v_k,c``.
      It ignores the background's correlations, so a network could do better; it shows
      what a matched filter that knows the source's time course reaches.
    - ``'sensor oracle, unknown background and time course'`` knows, besides the
      background's power, only the centre and the fall-off: for each candidate it fits
      the time course (T,) of the candidate's topography ``g_k`` (C,) to the whitened
      sensors by least squares and scores the residual (the likelihood profiled over the
      time course, which has the same T parameters for every candidate).
    """
    cfg = synth.config
    if cfg.patch_growth != "candidates" or cfg.n_sources != 1:
        raise ValueError("the sensor oracle needs patch_growth='candidates' and one source")
    out: dict[str, tuple[list, list]] = {name: ([], []) for name in SENSOR_ORACLES}
    for part in index.split(chunk):
        own = synth._compose("test", part)
        y = (own.sensor_clean + own.noise).double()
        centres = own.params["centres"].cpu()  # (b, 1)
        count = synth._candidate_count[centres[:, 0]]  # (b,)
        n_k = int(count.max())
        log_l = torch.full((len(SENSOR_ORACLES), part.numel(), n_k), -math.inf,
                           dtype=torch.float64)  # fmt: skip
        targets = []
        for k in range(n_k):
            pick = torch.minimum(torch.full_like(count, k), count - 1)
            forced = copy.copy(synth)
            forced._pick_candidates = lambda keys, c, first, pick=pick: synth._candidates[
                c, pick[:, None]
            ]
            composed = forced._compose("test", part)
            log_l[:, :, k] = torch.where(k < count, log_likelihoods(synth, y, composed), -math.inf)
            targets.append(synth._target_and_mask(composed)[0].cpu().double())
        stacked = torch.stack(targets)  # (K, b, R, T)
        mine = own.params["patch_regions"][:, 0].cpu() >= 0  # (b, M)
        for j, name in enumerate(SENSOR_ORACLES):
            posterior = torch.softmax(log_l[j], dim=1)  # (b, K)
            best = synth._candidates[centres[:, 0], posterior.argmax(1)]  # (b, M)
            out[name][0].append(torch.einsum("bk,kbrt->brt", posterior, stacked))
            out[name][1].append((best == mine).all(-1))
    return {name: (torch.cat(e), torch.cat(i)) for name, (e, i) in out.items()}


def log_likelihoods(synth: Synthesizer, y: torch.Tensor, composed: Any) -> torch.Tensor:
    """Log-likelihoods (3, B) float64 on the CPU of observed sensors ``y`` (B, C, T) under
    a composition of one source per sample (``Synthesizer._compose``), for the three
    :data:`SENSOR_ORACLES` in order (see :func:`sensor_oracle`)."""
    tiny = torch.finfo(torch.float64).tiny
    valid = composed.regions >= 0  # (B, K)
    gain = synth._gain_t[composed.regions.clamp(min=0)] * valid[..., None]  # (B, K, C)
    patch = torch.einsum("bkc,bkt->bct", gain.double(), composed.patch_activity.double())
    background = composed.sensor_clean.double() - patch
    noise_var = composed.noise_std.double().square().clamp_min(tiny)  # (B, C)
    wide_var = noise_var + background.square().mean(-1)
    # The patch's topography (B, C): one waveform in every member, so its gain weighted
    # by each member's activity norm; the time course is then fitted.
    topo = torch.einsum("bkc,bk->bc", gain.double(), composed.patch_activity.norm(dim=-1).double())
    topo = topo / wide_var.sqrt()
    white = y / wide_var.sqrt()[..., None]
    course = torch.einsum("bc,bct->bt", topo, white) / topo.square().sum(1)[:, None]
    residuals = (
        (y - composed.sensor_clean.double()).square() / noise_var[..., None],
        (y - patch).square() / wide_var[..., None],
        (white - topo[..., None] * course[:, None, :]).square(),
    )
    n_t = y.shape[-1]
    return torch.stack(
        [
            -0.5 * (resid.sum((1, 2)) + n_t * var.log().sum(1))
            for resid, var in zip(residuals, (noise_var, wide_var, wide_var), strict=True)
        ]
    ).cpu()


def growth_readout(synth: Synthesizer, index: torch.Tensor,
                   chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Whether the sensors show the random growth region by region (a flip test).

    For ``patch_growth='random'`` with one source. For every outer-ring region (ring 2
    and beyond) of each sample's whole patch, the sample is composed again with that
    region's membership flipped and the rest of its growth and draws as they are; the
    region counts as read when the observed sensors are more likely under the true
    membership than under the flipped one, by each of the three likelihoods of
    :func:`sensor_oracle`. It knows the rest of the growth, so it says how visible one
    region's growth is, not what a network could reach.

    Returns
    -------
    read : torch.Tensor, shape (3, B, M), bool
        Per oracle (:data:`SENSOR_ORACLES` order) and patch-table entry.
    outer : torch.Tensor, shape (B, M), bool
        The entries tested: members of the whole patch in ring 2 or beyond.
    """
    cfg = synth.config
    if cfg.patch_growth != "random" or cfg.n_sources != 1:
        raise ValueError("the growth readout needs patch_growth='random' and one source")
    reads, outers = [], []
    for part in index.split(chunk):
        own = synth._compose("test", part)
        y = (own.sensor_clean + own.noise).double()
        centres = own.params["centres"].cpu()  # (b, 1)
        member = own.params["patch_regions"].cpu() >= 0  # (b, 1, M)
        outer = (synth._patch_valid[centres] & (synth._patch_ring[centres] >= 2))[:, 0]
        truth = log_likelihoods(synth, y, own)  # (3, b)
        read = torch.zeros((3, *outer.shape), dtype=torch.bool)
        for m in torch.nonzero(outer.any(0)).flatten().tolist():
            flipped = member.clone()
            flipped[:, 0, m] ^= True
            forced = copy.copy(synth)
            forced._grow_partial_rings = lambda keys, c, first, f=flipped: f
            other = log_likelihoods(synth, y, forced._compose("test", part))
            read[:, :, m] = (truth > other) & outer[:, m]
        reads.append(read)
        outers.append(outer)
    return torch.cat(reads, 1), torch.cat(outers)


def row_lines(checkpoint: Any, row: tuple[float, int, int], n: int, draws: int,
              protocol: str | None, growth: str | None = None) -> list[str]:  # fmt: skip
    """Table lines of one row on its first ``n`` test samples: truth, growth oracle,
    network, the sensor oracles (candidates, one source), the network's paired differences
    from the oracles, and how often each sensor oracle names the sample's candidate."""
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
    identified, flips = {}, None
    if data.patch_growth == "candidates" and data.n_sources == 1:
        for name, (estimate, hit) in sensor_oracle(synth, index).items():
            estimates[name], identified[name] = estimate, hit
    if data.patch_growth == "random" and data.n_sources == 1:
        flips = growth_readout(synth, index)
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
    for oracle in ("growth oracle", *identified):
        cells = []
        for k, f in METRICS:  # paired over the samples where both are defined
            d = (per_sample["network"][k] - per_sample[oracle][k]) * f
            d = d[np.isfinite(d)]
            cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(max(d.size, 1)):.2f}")
        lines.append(f"{label} network − {oracle} (mean ± s.e.) | {' | '.join(cells)} | | |")
    for oracle, hit in identified.items():
        lines.append(
            f"{label} {oracle}: most probable candidate is the sample's own | "
            f"{hit.double().mean() * 100:.1f}% of the samples | | | | |"
        )
    if flips is not None:
        read, outer = flips
        for name, hits in zip(SENSOR_ORACLES, read, strict=True):
            lines.append(
                f"{label} {name}, flip test: outer-ring regions whose true membership the "
                f"sensors favour | {hits[outer].double().mean() * 100:.1f}% of "
                f"{int(outer.sum())} | | | | |"
            )
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
