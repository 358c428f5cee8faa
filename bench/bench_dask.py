"""Waveform-bank throughput on a Dask LocalCluster vs local threads on the same cores, and
the projected wall time of DeepSIF's recipe (994 regions x 3 settings x 200 s) for N
workers (issue 19; results in bench/RESULTS.md, section "scaling").

Both sides run the same build: ``build_bank(recipe="deepsif", regions=...)`` on the
994-region default head model (one run per source region and DeepSIF setting, plus the
background run), once with ``n_threads=W`` and once with ``client=`` a ``LocalCluster`` of
W one-thread worker processes. Repeats alternate the two, so slow drifts of the machine's
load hit both; the ratio is the median of the per-repeat ratios. The cluster is started
once, outside the timings (its start-up is printed separately). Every repeat also checks
that the two banks are identical.

    PYTHONPATH=python .venv/bin/python bench/bench_dask.py            # 16 regions x 3 = 48 runs
    PYTHONPATH=python .venv/bin/python bench/bench_dask.py --regions 4 --duration 2  # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

DEEPSIF = {"regions": 994, "settings": 3, "duration_s": 200.0, "transient_s": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers = threads (default 2)")
    parser.add_argument(
        "--regions", type=int, default=16, help="source regions; runs = 3 x this + 1 (default 16)"
    )
    parser.add_argument(
        "--duration", type=float, default=4.0, help="simulated s per run (default 4)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--toy", action="store_true", help="50-region toy head model instead")
    args = parser.parse_args()

    from fairesi.cluster import connect
    from fairesi.headmodel import HeadModel
    from fairesi.simulate import Connectome, build_bank

    head_model = HeadModel.toy() if args.toy else HeadModel.default()
    connectome = Connectome.from_geometry(head_model.region_centroids_mm)
    options = dict(
        recipe="deepsif",
        regions=np.arange(args.regions),
        run_duration_s=args.duration,
        background_s=args.duration,
        seed=0,
    )
    n_runs = 3 * args.regions + 1
    print(
        f"{connectome.n_regions} regions, {n_runs} runs of {args.duration:g} s (+0.5 s "
        f"transient), {args.workers} workers/threads, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    start = time.perf_counter()
    with connect(f"local:{args.workers}") as client:
        print(f"LocalCluster start-up: {time.perf_counter() - start:.1f} s (not in the timings)")
        build_bank(connectome, client=client, **{**options, "regions": [0]})  # warm workers
        rows = []
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            local = build_bank(connectome, n_threads=args.workers, **options)
            t1 = time.perf_counter()
            dask = build_bank(connectome, client=client, **options)
            t2 = time.perf_counter()
            same = all(
                np.array_equal(getattr(local, k), getattr(dask, k))
                for k in ("spikes", "spike_regions", "background")
            )
            rows.append((t1 - t0, t2 - t1))
            print(
                f"repeat {repeat}: threads {t1 - t0:.1f} s, dask {t2 - t1:.1f} s, ratio "
                f"{(t2 - t1) / (t1 - t0):.3f}, identical banks: {same}, load "
                f"{os.getloadavg()[0]:.1f}"
            )
            assert same, "the Dask bank differs from the local one"
    threads = statistics.median(r[0] for r in rows)
    dask_s = statistics.median(r[1] for r in rows)
    ratio = statistics.median(r[1] / r[0] for r in rows)
    print(
        f"median: threads {threads:.1f} s ({n_runs / threads:.2f} runs/s), dask {dask_s:.1f} s "
        f"({n_runs / dask_s:.2f} runs/s); dask/threads = {ratio:.3f} "
        f"(overhead {100 * (ratio - 1):+.1f}%, target <= +10%)"
    )

    # DeepSIF's recipe from the measured per-run cost on one worker (this machine's load).
    simulated = args.duration + DEEPSIF["transient_s"]
    per_run = dask_s * args.workers / n_runs  # wall s of one run on one busy worker
    deepsif_runs = DEEPSIF["regions"] * DEEPSIF["settings"]
    one_run = per_run * (DEEPSIF["duration_s"] + DEEPSIF["transient_s"]) / simulated
    print(
        f"DeepSIF recipe: {deepsif_runs} runs of {DEEPSIF['duration_s']:g} s; one run "
        f"{one_run:.1f} s on one worker here ({per_run:.2f} s per {simulated:g} s run measured)"
    )
    print("| workers | projected wall time |")
    print("|---|---|")
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        hours = deepsif_runs * one_run * ratio / n / 3600
        print(f"| {n} | {hours:.2f} h |")


if __name__ == "__main__":  # worker processes are spawned: they re-import this file
    main()
