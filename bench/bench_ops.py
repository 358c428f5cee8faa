"""Fused spectral-temporal refinement op vs the PyTorch reference (eager and compiled).

For FAIR-ESI's patch tensors (B, C, Np, 16) in float32, forward and forward+backward:

* eager    ``fairesi.ops.spectral_temporal_refine_reference``
* compile  ``torch.compile`` of the same function (Inductor; skipped with --no-compile)
* fused    ``torch.ops.fairesi.spectral_temporal_refine``
* copy     ``patches.clone()``, the memory floor (one read + one write of the tensor)

GB/s is the least traffic of the fused op (forward: read + write the patches; forward +
backward: that plus read grad and patches, write the input gradient) over its time.
If ``fairesi.models.fair_esi`` is importable, a whole FAIR-ESI training step (forward, MSE,
backward, Adam) is timed with the fused op and with the reference.

Run: ``PYTHONPATH=python .venv/bin/python bench/bench_ops.py [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial

import torch

from fairesi import ops
from fairesi.ops import spectral_temporal_refine_reference

TAU = 0.1
ALPHA = 0.5

# name -> (B, C, Np): SimMEG 306 channels x 500 samples, SimEEG 256 x 260, patches 16/8.
SHAPES = {
    "SimMEG B=64": (64, 306, 61),
    "SimEEG B=64": (64, 256, 33),
    "SimMEG B=256": (256, 306, 61),
}


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call, in ms."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def forward_backward(refine: Callable, patches: torch.Tensor, grad: torch.Tensor) -> Callable:
    """A call that runs ``refine`` forward on ``patches`` and backward with ``grad``."""

    def step() -> None:
        x = patches.detach().requires_grad_()
        refine(x, TAU, ALPHA).backward(grad)

    return step


def bench_refine(device: torch.device, repeats: int, compile_ref: bool) -> list[dict]:
    """Time every shape and pass; print and return one row dict each (times in ms)."""
    fused = torch.ops.fairesi.spectral_temporal_refine
    compiled = torch.compile(spectral_temporal_refine_reference) if compile_ref else None
    rows = []
    for name, (b, c, n_p) in SHAPES.items():
        gen = torch.Generator().manual_seed(0)
        patches = torch.randn(b, c, n_p, 16, generator=gen).to(device)
        grad = torch.randn(b, c, n_p, 16, generator=gen).to(device)
        nbytes = patches.numel() * patches.element_size()
        copy = timed(patches.clone, device, repeats)
        for pass_name, traffic in (("fwd", 2), ("fwd+bwd", 5)):
            if pass_name == "fwd":
                with torch.no_grad():
                    eager = timed(
                        partial(spectral_temporal_refine_reference, patches, TAU, ALPHA),
                        device,
                        repeats,
                    )
                    comp = (
                        timed(partial(compiled, patches, TAU, ALPHA), device, repeats)
                        if compiled
                        else float("nan")
                    )
                    ours = timed(partial(fused, patches, TAU, ALPHA), device, repeats)
            else:
                eager = timed(
                    forward_backward(spectral_temporal_refine_reference, patches, grad),
                    device,
                    repeats,
                )
                comp = (
                    timed(forward_backward(compiled, patches, grad), device, repeats)
                    if compiled
                    else float("nan")
                )
                ours = timed(forward_backward(fused, patches, grad), device, repeats)
            rows.append(
                dict(
                    shape=f"{name} ({b}x{c}x{n_p}x16)",
                    pass_=pass_name,
                    eager=eager,
                    compile=comp,
                    fused=ours,
                    copy=copy,
                    gbps=traffic * nbytes / (ours * 1e-3) / 1e9,
                )
            )
            print_row(rows[-1])
    return rows


def print_header() -> None:
    """Print the markdown table header."""
    print(
        f"| {'shape':<32} | {'pass':<7} | {'eager ms':>9} | {'compile ms':>10} | "
        f"{'fused ms':>9} | {'copy ms':>8} | {'fused GB/s':>10} | {'eager/fused':>11} | "
        f"{'compile/fused':>13} |"
    )
    print(
        f"|{'-' * 34}|{'-' * 9}|{'-' * 11}|{'-' * 12}|{'-' * 11}|{'-' * 10}|{'-' * 12}|"
        f"{'-' * 13}|{'-' * 15}|"
    )


def print_row(r: dict) -> None:
    """Print one table row, with the fused op's speed-ups."""
    print(
        f"| {r['shape']:<32} | {r['pass_']:<7} | {r['eager']:>9.2f} | {r['compile']:>10.2f} | "
        f"{r['fused']:>9.2f} | {r['copy']:>8.2f} | {r['gbps']:>10.2f} | "
        f"{r['eager'] / r['fused']:>10.1f}x | {r['compile'] / r['fused']:>12.1f}x |",
        flush=True,
    )


def training_step(
    model: torch.nn.Module, optim: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor
) -> None:
    """One MSE optimisation step of ``model`` on (x, target)."""
    optim.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), target).backward()
    optim.step()


def bench_training_step(device: torch.device, repeats: int, batch: int, preset: str) -> None:
    """One FAIR-ESI optimisation step on SimMEG sizes, fused op vs reference refinement."""
    try:
        from fairesi.models.fair_esi import FairEsi, FairEsiConfig
    except ImportError as err:
        print(f"FAIR-ESI training step skipped: {err}")
        return
    n_channels, n_regions, n_times = 306, 994, 500
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_channels, n_times, generator=gen).to(device)
    target = torch.randn(batch, n_regions, n_times, generator=gen).to(device)
    times = {}
    for fused in (False, True):
        torch.manual_seed(0)
        config = FairEsiConfig.preset(
            preset,
            n_channels=n_channels,
            n_regions=n_regions,
            n_times=n_times,
            fused_refine=fused,
        )
        model = FairEsi(config).to(device)
        optim = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)

        times[fused] = timed(partial(training_step, model, optim, x, target), device, repeats)
    print(
        f"\nFAIR-ESI training step (SimMEG 306 ch x 500 samples, 994 regions, batch {batch}, "
        f"model preset '{preset}', Adam): reference refinement {times[False]:.1f} ms, "
        f"fused op {times[True]:.1f} ms, ratio {times[False] / times[True]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (best)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--train-batch", type=int, default=16, help="batch of the training step")
    parser.add_argument("--train-preset", default="cpu", help="FAIR-ESI size preset of the step")
    args = parser.parse_args()
    if not ops.available():
        raise SystemExit("fairesi.ops: the op library is not loaded; build the package first")
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({where}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, tau {TAU}, alpha {ALPHA}, float32\n"
    )
    print_header()
    bench_refine(device, args.repeats, not args.no_compile)
    bench_training_step(device, args.repeats, args.train_batch, args.train_preset)


if __name__ == "__main__":
    main()
