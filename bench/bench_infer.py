"""Inference latency and throughput: eager PyTorch, TorchScript, fairesi-infer (TS and AOTI).

One SimMEG epoch (306 channels x 500 samples, the embedded 994-region head model) through
FAIR-ESI with the 'cpu' size preset (random weights: the cost does not depend on them).
Each method does the same work per call: DeepSIF normalisation of the raw epoch, then the
network. Latency: p50/p99 over ``--runs`` single-epoch calls after ``--warmup`` untimed
ones; throughput: epochs per second at batch ``--batch``. The runner times itself inside
one process (``--repeat``), so process start-up and model loading are excluded, as they are
for the Python rows. The outputs of all four are compared with eager PyTorch.

    python bench/bench_infer.py --threads 2 [--aoti PATH.pt2] [--out DIR]

Without ``--aoti`` the AOTInductor package is compiled first (many minutes on a CPU: the
BiGRU is unrolled over the 500 time steps); ``--aoti`` reuses one written by an earlier run
of this script (same seed, so the same weights; checked through the output comparison).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fairesi import ops
from fairesi.data import normalise_input
from fairesi.export import build_metadata, export_model, load_exported, runner_path
from fairesi.headmodel import HeadModel
from fairesi.models import build_model

SCALE = 1e-12  # raw MEG data in T


def time_python(fn, x_single: torch.Tensor, x_batch: torch.Tensor, args) -> dict[str, float]:
    """p50/p99 of single-epoch calls (ms) and batch throughput (epochs/s) of ``fn``."""
    with torch.inference_mode():
        for _ in range(args.warmup):
            fn(x_single)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            fn(x_single)
            times.append((time.perf_counter() - start) * 1e3)
        fn(x_batch)
        batch_times = []
        for _ in range(args.batch_runs):
            start = time.perf_counter()
            fn(x_batch)
            batch_times.append(time.perf_counter() - start)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "epochs_per_s": len(x_batch) / float(np.mean(batch_times)),
    }


def time_runner(model: Path, single: Path, batch: Path, out: Path, args) -> dict[str, float]:
    """The same figures from fairesi-infer's own --timing --repeat."""

    def run(extra: list[str], repeat: int, warmup: int, output: Path) -> dict:
        cmd = [str(runner_path()), str(model), *extra, str(output), "--timing"]
        cmd += ["--threads", str(args.threads), "--repeat", str(repeat), "--warmup", str(warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)["repeat"]

    single_stats = run([str(single)], args.runs, args.warmup, out / "single.npy")
    batch_stats = run([str(batch), "--batch"], args.batch_runs, 1, out / "batch.npy")
    return {
        "p50_ms": single_stats["p50_ms"],
        "p99_ms": single_stats["p99_ms"],
        "epochs_per_s": args.batch / (batch_stats["mean_ms"] / 1e3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every method")
    parser.add_argument("--runs", type=int, default=200, help="timed single-epoch calls")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput")
    parser.add_argument("--batch-runs", type=int, default=5, help="timed batch calls")
    parser.add_argument("--preset", default="cpu", help="FAIR-ESI size preset (default cpu)")
    parser.add_argument("--aoti", type=Path, default=None, help="reuse this .pt2 package")
    parser.add_argument("--out", type=Path, default=None, help="keep exported models here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    head_model = HeadModel.default()
    torch.manual_seed(0)
    model = build_model("fair_esi", head_model, "meg", 500, preset=args.preset).eval()
    meta = build_metadata(
        head_model, "meg", 500, model_name="fair_esi", model_hyper={"preset": args.preset}
    )
    n_channels = len(meta["ch_names"])
    generator = torch.Generator().manual_seed(1)
    x_batch = torch.randn(args.batch, n_channels, 500, generator=generator) * SCALE
    x_single = x_batch[:1].clone()

    with tempfile.TemporaryDirectory(prefix="fairesi-bench-") as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ts_path = work / f"fair_esi_{args.preset}_meg.pt"
        export_model(model, ts_path, meta)
        aoti_path = args.aoti or work / f"fair_esi_{args.preset}_meg.pt2"
        if args.aoti is None:
            start = time.perf_counter()
            export_model(model, aoti_path, meta, format="aoti")
            print(f"AOTInductor compile: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        np.save(work / "single_in.npy", x_single[0].numpy())
        np.save(work / "batch_in.npy", x_batch.numpy())
        scripted = load_exported(ts_path)

        def eager(x):
            return model(normalise_input(x))

        with torch.inference_mode():
            reference = eager(x_batch)
        rows = {
            "eager PyTorch (Python)": time_python(eager, x_single, x_batch, args),
            "TorchScript (Python)": time_python(scripted, x_single, x_batch, args),
        }
        rows["fairesi-infer TorchScript"] = time_runner(
            ts_path, work / "single_in.npy", work / "batch_in.npy", work, args
        )
        diffs = {
            "eager PyTorch (Python)": 0.0,
            "TorchScript (Python)": float((scripted(x_batch) - reference).abs().max()),
            "fairesi-infer TorchScript": float(
                np.abs(np.load(work / "batch.npy") - reference.numpy()).max()
            ),
        }
        rows["fairesi-infer AOTInductor"] = time_runner(
            aoti_path, work / "single_in.npy", work / "batch_in.npy", work, args
        )
        diffs["fairesi-infer AOTInductor"] = float(
            np.abs(np.load(work / "batch.npy") - reference.numpy()).max()
        )

    base = rows["eager PyTorch (Python)"]
    print(
        f"FAIR-ESI '{args.preset}' preset, SimMEG epoch (306 x 500 -> 994 regions), "
        f"{args.threads} threads, fused op library {'loaded' if ops.available() else 'absent'}; "
        f"latency over {args.runs} single epochs, throughput at batch {args.batch}"
    )
    print(
        "| method | p50 ms | p99 ms | p50 vs eager | epochs/s (batch) | vs eager "
        "| max abs diff vs eager |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{base['p50_ms'] / row['p50_ms']:.2f}x | {row['epochs_per_s']:.1f} | "
            f"{row['epochs_per_s'] / base['epochs_per_s']:.2f}x | {diffs[name]:.1e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
