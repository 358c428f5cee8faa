"""How often the refinement changes which patch is a channel's key patch (no training).

FAIR-ESI's key-patch attention picks each channel's key patch by energy (Eq. 2,
``E = P^L ⊙ P^L``) on the refined patches ``P^L``. The refinement's softmaxes do not keep
the patches' energy order: a softmax sums to 1 whatever its input's amplitude, and the
temporal view adds ~1/L to every sample. This script measures, on test samples of the
refinement study's configuration (SimMEG r = 5 dB, N_s = 2, N_n = 2, paper protocol, 128
samples per trial), the share of channels whose key patch on ``P^L`` (literal reading)
and on ``P^L + P`` (residual reading) is the key patch of the input patches ``P``, for
each view, over all channels and over each sample's strongest tenth of channels (those
that carry the spike). Chance is 1 / Np. ``FairEsiConfig(key_energy='input')`` picks the
key patches on ``P``.

Run (installed package)::

    python bench/key_patch_agreement.py --n 256
"""

from __future__ import annotations

import argparse

import torch

from fairesi.data import SimConfig
from fairesi.experiment import synthesizer
from fairesi.models.fair_esi import Patching, key_patch_index, n_patches
from fairesi.ops import make_refine

#: view -> alpha of the refinement (1: spectral only, 0: temporal only)
VIEWS = {"spectral": 1.0, "temporal": 0.0, "spectral+temporal": 0.5}


def agreement(x: torch.Tensor, tau: float = 0.1) -> dict[tuple[str, str], tuple[float, float]]:
    """Share of channels whose refined key patch is the input's key patch.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, T)
        Normalised sensor data.
    tau : float
        Softmax temperature.

    Returns
    -------
    dict
        (view, reading) -> (share over all channels, share over each sample's strongest
        tenth of channels by energy), readings 'literal' (P^L) and 'residual' (P^L + P).
    """
    patches = Patching(16, 8)(x)
    raw = key_patch_index(patches)
    energy = (x * x).sum(-1)  # (B, C)
    strong = energy >= energy.quantile(0.9, dim=1, keepdim=True)
    out = {}
    for view, alpha in VIEWS.items():
        refine = make_refine(tau=tau, alpha=alpha, fused=False, patch_len=16)
        with torch.no_grad():
            refined = refine(patches)
        for reading, grid in (("literal", refined), ("residual", refined + patches)):
            same = (key_patch_index(grid) == raw).float()
            out[view, reading] = (float(same.mean()), float(same[strong].mean()))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the agreement table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="test samples (256)")
    parser.add_argument("--n-times", type=int, default=128, help="samples per trial (128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-sources", type=int, default=2, help="N_s (2, Table IV)")
    parser.add_argument("--n-rings", type=int, default=2, help="N_n (2, Table IV)")
    parser.add_argument("--bank", default="default", help="'default', a file, or 'synthetic'")
    parser.add_argument("--head-model", default="default", help="'default', 'toy' or a file")
    args = parser.parse_args(argv)
    config = SimConfig.preset(
        "SimMEG",
        snr_db=5.0,
        n_sources=args.n_sources,
        n_rings=args.n_rings,
        n_times=args.n_times,
        protocol="paper",
    )
    synth = synthesizer(config, head_model=args.head_model, bank=args.bank, seed=args.seed)
    x = synth.batch("test", torch.arange(args.n)).x
    chance = 1 / n_patches(args.n_times, 16, 8)
    print(f"Key patch of P^L (literal) / P^L + P (residual) = key patch of P; {args.n} test")
    print(f"samples, seed {args.seed}, T = {args.n_times} (chance {100 * chance:.1f}%):\n")
    print("| view | reading | all channels (%) | strongest tenth (%) |")
    print("|---|---|---|---|")
    for (view, reading), (every, strong) in agreement(x).items():
        print(f"| {view} | {reading} | {100 * every:.1f} | {100 * strong:.1f} |")


if __name__ == "__main__":
    main()
