"""Where a training step's time goes: FAIR-ESI against DeepSIF at equal parameter count.

At equal CPU time the two networks of ``bench/deepsif_compare.py --size wide`` do not get
equal steps (bench/RESULTS.md § accuracy). This script times one optimizer step (forward,
squared-error loss, backward, Adam) on one random batch for

* the networks: FAIR-ESI 'wide' (its BiGRU run by the fused op, and by ``nn.GRU``) with all
  views, without the spectral-temporal views, without any view, and 'cpu'; DeepSIF
  'wide-matched';
* the recurrent layers and heads alone, at the shapes those networks give them (their
  input's gradient included): FAIR-ESI's BiGRU (latent 128 -> 2 x 256) by ``nn.GRU`` and by
  the fused op (``fairesi.ops.bigru``), DeepSIF's 3-layer LSTM (128 -> 190), and the linear
  heads to the regions (512 and 190 features);

each in float32 and under bfloat16 CPU autocast (``fairesi train --bf16``). Each figure is
the median of ``--repeat`` steps after two warm-up steps, on ``--threads`` threads, in the
same process; the ratio columns divide by DeepSIF's float32 step. Run::

    python bench/step_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def step_time(module: nn.Module, x: torch.Tensor, repeat: int, bf16: bool = False) -> float:
    """Median seconds of one optimizer step of ``module`` on the input ``x`` (the loss: the
    sum of squares of its first output), with the forward under bfloat16 CPU autocast if
    ``bf16``."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().sum().backward()
        optimizer.step()

    times = []
    for i in range(repeat + 2):
        start = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class FusedBiGru(nn.Module):
    """A bidirectional ``nn.GRU`` (B, T, I) -> (B, T, 2H) run by ``fairesi.ops.bigru``."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, I) -> (B, T, 2H)."""
        from fairesi.ops import bigru

        return bigru(self.gru, x)


#: (label, module factory, input shape, whether the input needs its gradient: a layer's
#: does inside a network, where the layers before it learn; a network's data does not)
Row = tuple[str, Callable[[], nn.Module], tuple[int, ...], bool]


def rows(batch: int, n_times: int) -> list[Row]:
    """Every timed row."""
    from fairesi.headmodel import HeadModel
    from fairesi.models import build_model

    head = HeadModel.default()
    n_channels, n_regions = head.lead_field("meg").n_channels, head.n_regions
    x = (batch, n_channels, n_times)

    def net(name: str, **hyper) -> Callable[[], nn.Module]:
        return lambda: build_model(name, head, "meg", n_times, **hyper)

    seq = batch, n_times
    return [
        ("DeepSIF 'wide-matched'", net("deepsif", preset="wide-matched"), x, False),
        ("FAIR-ESI 'wide'", net("fair_esi", preset="wide"), x, False),
        ("FAIR-ESI 'wide', nn.GRU", net("fair_esi", preset="wide", fused_gru=False), x, False),
        (
            "FAIR-ESI 'wide', no spectral/temporal view",
            net("fair_esi", preset="wide", spectral=False, temporal=False),
            x,
            False,
        ),
        (
            "FAIR-ESI 'wide', no view",
            net("fair_esi", preset="wide", spectral=False, temporal=False, patchwise=False),
            x,
            False,
        ),
        ("FAIR-ESI 'cpu'", net("fair_esi", preset="cpu"), x, False),
        (
            "BiGRU 128 -> 2 x 256 (FAIR-ESI 'wide'), nn.GRU",
            lambda: nn.GRU(128, 256, batch_first=True, bidirectional=True),
            (*seq, 128),
            True,
        ),
        (
            "BiGRU 128 -> 2 x 256 (FAIR-ESI 'wide'), fused op",
            lambda: FusedBiGru(128, 256),
            (*seq, 128),
            True,
        ),
        (
            "BiGRU 128 -> 2 x 128 (FAIR-ESI 'cpu')",
            lambda: nn.GRU(128, 128, batch_first=True, bidirectional=True),
            (*seq, 128),
            True,
        ),
        (
            "LSTM 3 layers 128 -> 190 (DeepSIF 'wide-matched')",
            lambda: nn.LSTM(128, 190, num_layers=3, batch_first=True),
            (*seq, 128),
            True,
        ),
        (
            f"head 512 -> {n_regions} (FAIR-ESI 'wide')",
            lambda: nn.Linear(512, n_regions),
            (*seq, 512),
            True,
        ),
        (
            f"head 190 -> {n_regions} (DeepSIF 'wide-matched')",
            lambda: nn.Linear(190, n_regions),
            (*seq, 190),
            True,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Time every row and print a Markdown table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-times", type=int, default=128, help="samples per trial (128)")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps per row (5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    for name in ("batch_size", "n_times", "repeat", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"One optimizer step, batch {args.batch_size} x {args.n_times} samples, SimMEG "
        f"(default head model); torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), {platform.machine()}; median of {args.repeat}.\n"
    )
    print(
        "| what | float32 s / step | / DeepSIF | bfloat16 autocast s / step | / DeepSIF |\n"
        "|---|---|---|---|---|"
    )
    reference = None
    for label, factory, shape, input_grad in rows(args.batch_size, args.n_times):
        x = torch.randn(*shape, requires_grad=input_grad)
        cells = []
        for bf16 in (False, True):
            seconds = step_time(factory(), x, args.repeat, bf16)
            reference = reference or seconds
            cells += [f"{seconds:.3f}", f"{seconds / reference:.2f}"]
        print(f"| {label} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
