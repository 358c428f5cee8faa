"""MMDF-ESI's first training steps: dead decoder units under PyTorch's initialisation and ours.

MMDF-ESI (``fairesi.models.MmdfEsi``) starts with zero encoder-convolution biases and a
zero output layer. With PyTorch's default initialisation its decoder's hidden units all
died within the first steps on SimEEGMEG and the network stayed at the all-zero estimate
(``bench/RESULTS.md`` § fusion). This script trains both initialisations side by side on
the same samples, as ``fairesi train --train-instants K`` does (K random time samples of
each window per step, the trainer's ``select_instants``: the paper's loss scaled by T / K;
Adam with the trainer's default weight decay), but with one draw of K instants, with
replacement, shared by the step's windows (the trainer draws K distinct ones per window),
and prints, every few steps, the validation loss as a share of the all-zero
estimate's and the share of dead hidden units (never positive on any validation instant).

Data: the fusion study's training mixture (1 source; r in {-5, 0, 5} dB x 1, 2, 3 rings),
paper protocol, a pool of training windows drawn once; validation on fixed instants of
fixed validation windows, the same for every run.

Run (installed package, ~2 minutes per run on one thread)::

    python bench/mmdf_init_check.py --steps 150 --lrs 1e-3,1e-4
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from fairesi.data import SimConfig
from fairesi.data.config import parse_mixture
from fairesi.experiment import synthesizer
from fairesi.models import build_model
from fairesi.train.config import OptimConfig
from fairesi.train.loop import select_instants, source_loss

#: The fusion study's training mixture (bench/fusion_train.sh's ROWS).
ROWS = "-5/1/1,-5/1/2,-5/1/3,0/1/1,0/1/2,0/1/3,5/1/1,5/1/2,5/1/3"
INITS = ("pytorch", "ours")


def pytorch_init(model: nn.Module) -> nn.Module:
    """Redraw every convolution and linear layer with PyTorch's defaults (undoes ours)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
    return model


def validate(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Loss / all-zero loss and the share of dead hidden units on (B, C, K) validation data.

    A hidden unit is dead when its pre-activation is <= 0 on every validation instant.
    """
    seen = {}
    hook = model.hidden.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    try:
        with torch.no_grad():
            estimate = model(x)
    finally:
        hook.remove()
    alive = (seen["h"] > 0).any(0).float().mean()
    ratio = source_loss(estimate, target) / source_loss(torch.zeros_like(target), target)
    return float(ratio), 1.0 - float(alive)


def run(
    model: nn.Module,
    pool,
    val,
    *,
    lr: float,
    steps: int,
    instants: int,
    batch_size: int,
    every: int,
    seed: int,
) -> list[tuple[int, float, float, float]]:
    """Train ``model`` on instants of the pool's windows.

    Returns rows (step, validation loss / all-zero loss, dead share, seconds so far).

    ``pool`` and ``val`` are batches (x (B, C, T), target (B, R, T)); ``val`` holds the
    validation instants already. The draws depend on ``seed`` only, so two models see the
    same steps.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=OptimConfig.weight_decay)
    draws = torch.Generator().manual_seed(seed)
    n_times = pool.x.shape[-1]
    rows = []
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            model.eval()
            rows.append((step, *validate(model, val.x, val.target), time.perf_counter() - start))
            model.train()
        if step == steps:
            break
        windows = torch.randint(0, pool.x.shape[0], (batch_size,), generator=draws)
        times = torch.randint(0, n_times, (instants,), generator=draws)
        x, target, scale = select_instants(
            pool.x[windows], pool.target[windows], times.expand(batch_size, -1)
        )
        loss = source_loss(model(x), target) * scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the table (markdown): init, lr, step, loss / all-zero, dead hidden units."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25, help="validate every N steps")
    parser.add_argument("--lrs", default="1e-3,1e-4", help="comma-separated Adam rates")
    parser.add_argument("--inits", default=",".join(INITS), help="pytorch, ours")
    parser.add_argument("--instants", type=int, default=32, help="K per window (32)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pool", type=int, default=256, help="training windows drawn once")
    parser.add_argument("--n-val", type=int, default=32, help="validation windows")
    parser.add_argument("--val-instants", type=int, default=64)
    parser.add_argument("--n-times", type=int, default=500)
    parser.add_argument("--preset", default="cpu", help="MMDF-ESI size preset")
    parser.add_argument("--mixture", default=ROWS, help="r/N_s/N_n rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bank", default="default", help="'default', a file, or 'synthetic'")
    parser.add_argument("--head-model", default="default", help="'default', 'toy' or a file")
    args = parser.parse_args(argv)
    inits = args.inits.split(",")
    if not set(inits) <= set(INITS):
        parser.error(f"--inits: choose from {', '.join(INITS)}")
    torch.set_num_threads(args.threads)
    config = SimConfig.preset(
        "SimEEGMEG",
        n_times=args.n_times,
        mixture=parse_mixture(args.mixture),
        protocol="paper",
        n_samples=max(2400, 12 * (args.pool + args.n_val)),
    )
    synth = synthesizer(config, head_model=args.head_model, bank=args.bank, seed=args.seed)
    pool = synth.batch("train", torch.arange(args.pool))
    val = synth.batch("val", torch.arange(args.n_val))
    times = torch.randint(
        0, args.n_times, (args.val_instants,), generator=torch.Generator().manual_seed(1)
    )
    val.x, val.target = val.x[:, :, times], val.target[:, :, times]
    print(
        f"MMDF-ESI '{args.preset}' on SimEEGMEG ({args.mixture}, paper protocol), "
        f"{args.batch_size} windows x {args.instants} instants per step, Adam, "
        f"torch {torch.__version__}, {args.threads} thread(s)\n"
    )
    print("| init | lr | step | val loss / all-zero | dead hidden units | s |")
    print("|---|---|---|---|---|---|")
    for lr in (float(v) for v in args.lrs.split(",")):
        for init in inits:
            torch.manual_seed(args.seed)
            model = build_model(
                "mmdf_esi", synth.head_model, "eeg+meg", args.n_times, preset=args.preset
            )
            if init == "pytorch":
                pytorch_init(model)
            rows = run(
                model,
                pool,
                val,
                lr=lr,
                steps=args.steps,
                instants=args.instants,
                batch_size=args.batch_size,
                every=args.every,
                seed=args.seed,
            )
            for step, ratio, dead, seconds in rows:
                print(
                    f"| {init} | {lr:g} | {step} | {ratio:.3f} | {100 * dead:.0f}% | "
                    f"{seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
