"""What keeping freed memory in the heap saves a training step (``RunConfig.keep_heap``).

``fairesi._heap.keep_freed_memory`` changes the C library's allocator for the whole
process, so the two sides cannot share one: each row runs in two child processes, one
with glibc's defaults and one with the setting, alternating ``--rounds`` times. A child
takes ``--warmup`` steps, then times ``--steps`` optimizer steps (fresh synthesised batch,
forward under the row's precision, the paper's loss, backward, Adam) by CPU time
(user + system, so the page faults count and the other core's load mostly does not)
and counts minor page faults. Prints medians per step and the ratio keep / default.
Rows: the networks of the comparison (128 samples per window) and the pretrained MEG
model's recipe (500 samples, the six-row mixture). Run::

    python bench/heap_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

#: key -> (label, model, preset, n_times, bfloat16, mixture)
ROWS = {
    "fair-bf16": ("FAIR-ESI 'wide', 128 samples, bf16", "fair_esi", "wide", 128, True, None),
    "deepsif-bf16": (
        "DeepSIF 'wide-matched', 128 samples, bf16",
        "deepsif",
        "wide-matched",
        128,
        True,
        None,
    ),
    "fair-fp32": ("FAIR-ESI 'wide', 128 samples, float32", "fair_esi", "wide", 128, False, None),
    "meg500-bf16": (
        "FAIR-ESI 'wide', MEG 500 samples, six-row mixture, bf16 (the pretrained recipe)",
        "fair_esi",
        "wide",
        500,
        True,
        "-5/1/2,5/1/2,15/1/2,5/2/2,5/3/2,5/2/3",
    ),
}


def child(row: str, keep: bool, steps: int, warmup: int, batch: int, threads: int) -> dict:
    """Run in a child process: time ``steps`` training steps of ``row``; returns
    ``cpu_s`` and ``faults`` per step."""
    import resource
    import tempfile

    import torch

    from fairesi._heap import keep_freed_memory
    from fairesi.train import TrainConfig, Trainer

    torch.set_num_threads(threads)
    if keep and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() is not available here (needs glibc)")
    _, model, preset, n_times, bf16, mixture = ROWS[row]
    flat = {
        "model": model,
        "model_hyper": {"preset": preset},
        "dataset": "SimMEG",
        "protocol": "paper",
        "n_times": n_times,
        "batch_size": batch,
        "n_train_samples": batch * (steps + warmup),
        "n_val_samples": batch,
        "cpu_bf16": bf16,
        "keep_heap": False,  # this process decided above
        "threads": threads,
        "progress": False,
    }
    if mixture:
        flat["mixture"] = mixture
    with tempfile.TemporaryDirectory(prefix="heap_cost-") as out_dir:
        trainer = Trainer(TrainConfig.from_flat({**flat, "out_dir": out_dir})).setup()
        batches = trainer.batches("train", 0, 0)
        for _ in range(warmup):
            trainer.train_step(next(batches))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu, faults = time.process_time(), usage.ru_minflt
        for _ in range(steps):
            trainer.train_step(next(batches))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        trainer.cleanup()
    return {
        "cpu_s": (time.process_time() - cpu) / steps,
        "faults": (usage.ru_minflt - faults) / steps,
    }


def main(argv: list[str] | None = None) -> int:
    """Time every row both ways and print the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {list(ROWS)}")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per child (8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--rounds", type=int, default=2, help="children per side (2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON: one child's job
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(**job)))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    print(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    print(
        f"One training step (batch {args.batch_size}, synthesis included), torch CPU, "
        f"{args.threads} thread(s), {platform.machine()}; median over {args.rounds} "
        f"children per side of {args.steps} steps each.\n"
    )
    print("| row | default CPU s / step | kept CPU s / step | kept / default | "
          "page faults / step default | kept |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in rows:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.rounds):
            for keep in (False, True):
                job = {
                    "row": row,
                    "keep": keep,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "batch": args.batch_size,
                    "threads": args.threads,
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(job)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[keep].append(json.loads(out.stdout.strip().splitlines()[-1]))
        cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}
        faults = {k: statistics.median(r["faults"] for r in v) for k, v in runs.items()}
        print(
            f"| {ROWS[row][0]} | {cpu[False]:.3f} | {cpu[True]:.3f} | {cpu[True] / cpu[False]:.2f} | "
            f"{faults[False]:,.0f} | {faults[True]:,.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
