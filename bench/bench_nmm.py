"""Benchmark of the Jansen-Rit network simulator (issue 3).

Region-steps per second for a 994-region network with noise and conduction delays:
the C++ simulator on 1 and 2 threads, the numba reference, and TVB's own simulator
(``tvb-library``, if installed), measured side by side in one run; then the derived
figures: simulated seconds per wall second, the wall time of one DeepSIF-sized run
(994 regions x 200 s), of the default waveform bank and of DeepSIF's bank recipe.

    PYTHONPATH=python .venv/bin/python bench/bench_nmm.py [--seconds 10] [--tvb-seconds 1]

Geometry: the default head model's centroids if it is available, else the DeepSIF
parcellation read from ``--anatomy`` (fsaverage5 pial + nmm_994 annotations).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np

from fairesi.simulate import DEEPSIF_SETTINGS, Connectome, JansenRitParams, simulate_network
from fairesi.simulate.bank import _balanced_groups
from fairesi.simulate.jansen_rit import deepsif_noise_sigma
from fairesi.simulate.reference import simulate_network_reference

DT_MS = 0.5
STEPS_PER_S = 1000.0 / DT_MS


def region_centroids(anatomy: Path) -> tuple[np.ndarray, str]:
    """(R, 3) centroids in mm and where they came from."""
    try:
        from fairesi.headmodel import HeadModel

        return HeadModel.default().region_centroids_mm.astype(np.float64), "HeadModel.default()"
    except (ImportError, FileNotFoundError, OSError):
        pass
    import nibabel as nib

    centroids = []
    for hemi in ("lh", "rh"):
        vertices, _ = nib.freesurfer.read_geometry(str(anatomy / f"{hemi}.pial"))
        labels, _, _ = nib.freesurfer.read_annot(str(anatomy / f"{hemi}.nmm_994.annot"))
        for region in np.unique(labels[labels >= 0]):
            centroids.append(vertices[labels == region].mean(axis=0))
    return np.asarray(centroids), f"vertex means of {anatomy}/*.nmm_994.annot"


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process summed over its threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def tvb_seconds_per_sim_second(conn: Connectome, centroids: np.ndarray, seconds: float):
    """Wall seconds TVB needs per simulated second (same model, coupling, noise, delays)."""
    try:
        from tvb.simulator.lab import connectivity, coupling, integrators, models, monitors, noise
        from tvb.simulator.lab import simulator as tvb_simulator
    except ImportError:
        return None
    R = conn.n_regions
    tvb_conn = connectivity.Connectivity(
        weights=conn.weights.toarray(),
        tract_lengths=conn.tract_lengths_mm.toarray(),
        centres=centroids,
        region_labels=np.array([f"r{i}" for i in range(R)]),
        speed=np.array([3.0]),
    )
    tvb_conn.configure()
    A = np.full(R, 3.25)
    A[0] = 3.5
    model = models.JansenRit(A=A, mu=np.array([DEEPSIF_SETTINGS[0][0]]), v0=np.array([6.0]))
    nsig = np.zeros(6)
    nsig[4] = deepsif_noise_sigma(1.0) ** 2 / 2.0  # TVB's increment is sqrt(2 nsig) dW
    sim = tvb_simulator.Simulator(
        model=model,
        connectivity=tvb_conn,
        coupling=coupling.SigmoidalJansenRit(a=np.array([1.0])),
        integrator=integrators.HeunStochastic(dt=DT_MS, noise=noise.Additive(nsig=nsig)),
        monitors=(monitors.Raw(),),
    ).configure()
    sim.run(simulation_length=10 * DT_MS)  # first steps: lazy set-up
    wall, cpu = timed(lambda: sim.run(simulation_length=seconds * 1000.0))
    return wall / seconds, cpu / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated s per C++ run")
    parser.add_argument("--numba-seconds", type=float, default=10.0, help="simulated s, numba")
    parser.add_argument("--tvb-seconds", type=float, default=1.0, help="simulated s for TVB")
    parser.add_argument(
        "--anatomy",
        type=Path,
        default=None,
        help="DeepSIF anatomy folder for the fallback geometry (default: $FAIRESI_ANATOMY_DIR, "
        "else the copy shipped in python/fairesi/resources/anatomy)",
    )
    args = parser.parse_args()

    anatomy = args.anatomy or Path(
        os.environ.get("FAIRESI_ANATOMY_DIR")
        or Path(__file__).resolve().parents[1] / "python" / "fairesi" / "resources" / "anatomy"
    )
    centroids, source = region_centroids(anatomy)
    conn = Connectome.from_geometry(centroids)
    R = conn.n_regions
    print(
        f"# {R} regions ({source}); {conn.weights.nnz / R:.1f} inputs/region; delays "
        f"{conn.delay_steps(3.0, DT_MS).min()}-{conn.delay_steps(3.0, DT_MS).max()} steps; "
        f"dt {DT_MS} ms; DeepSIF noise; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    A = np.full(R, 3.25)
    A[::40] = 3.5
    common = dict(region_A=A, params=JansenRitParams.deepsif(), transient_s=0.0, seed=1)

    # (name, threads, region-steps, wall s, CPU s). CPU seconds are reported beside wall
    # seconds because the dev box is shared: with other jobs running, wall time measures
    # the contention as much as the code.
    rows = []
    T = args.seconds
    simulate_network(conn, 0.1, **common)  # load the module, fault in pages
    work = 2 * R * T * STEPS_PER_S
    rows.append(
        (
            "C++, 2 runs one after the other",
            1,
            work,
            *timed(lambda: simulate_network(conn, T, n_runs=2, n_threads=1, **common)),
        )
    )
    rows.append(
        (
            "C++, 2 runs, one per thread",
            2,
            work,
            *timed(lambda: simulate_network(conn, T, n_runs=2, n_threads=2, **common)),
        )
    )
    T1 = min(T, 2.0)
    rows.append(
        (
            f"C++, 1 run, regions split ({T1:g} s)",
            2,
            R * T1 * STEPS_PER_S,
            *timed(lambda: simulate_network(conn, T1, n_runs=1, n_threads=2, **common)),
        )
    )
    simulate_network_reference(conn, 0.01, **common)  # JIT compile outside the timing
    Tn = args.numba_seconds
    rows.append(
        (
            "numba reference",
            1,
            R * Tn * STEPS_PER_S,
            *timed(lambda: simulate_network_reference(conn, Tn, **common)),
        )
    )
    tvb = tvb_seconds_per_sim_second(conn, centroids, args.tvb_seconds)
    if tvb is not None:
        rows.append(
            (
                f"TVB {_tvb_version()} ({args.tvb_seconds:g} s)",
                1,
                R * args.tvb_seconds * STEPS_PER_S,
                tvb[0] * args.tvb_seconds,
                tvb[1] * args.tvb_seconds,
            )
        )

    numba_wall, numba_cpu = rows[3][2] / rows[3][3], rows[3][2] / rows[3][4]
    tvb_wall = rows[4][2] / rows[4][3] if tvb else None
    tvb_cpu = rows[4][2] / rows[4][4] if tvb else None
    print(
        "\n| implementation | threads | wall s | region-steps/s (wall) | x numba | x TVB "
        "| region-steps per CPU-s | x numba | x TVB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, threads, work, wall, cpu in rows:
        rw, rc = work / wall, work / cpu
        print(
            f"| {name} | {threads} | {wall:.1f} | {rw / 1e6:.2f} M | {rw / numba_wall:.1f} | "
            f"{f'{rw / tvb_wall:.0f}' if tvb else 'n/a'} | {rc / 1e6:.2f} M | "
            f"{rc / numba_cpu:.1f} | {f'{rc / tvb_cpu:.0f}' if tvb else 'n/a'} |"
        )
    if not tvb:
        print("(TVB: tvb-library is not installed)")

    one, two = rows[0], rows[1]
    print(
        f"\n1 -> 2 threads (one run per thread): wall speed-up {one[3] / two[3]:.2f}x; CPU "
        f"seconds for the same work {one[4]:.1f} vs {two[4]:.1f} (ratio "
        f"{one[4] / two[4]:.2f}: 1.0 = no threading overhead, so 2 idle cores give ~2x)"
    )
    per_net = R * STEPS_PER_S
    net_wall_1 = one[2] / one[3] / per_net
    net_wall_2 = two[2] / two[3] / per_net
    net_idle_2 = 2 * one[2] / one[4] / per_net  # projection: 2 free cores at the CPU rate
    print(
        f"simulated s per wall s, {R} regions: {net_wall_1:.2f} (1 thread), {net_wall_2:.2f} "
        f"(2 threads) measured on this box; {net_idle_2:.2f} projected for 2 idle cores"
    )
    net_idle_1 = one[2] / one[4] / per_net
    print(
        f"DeepSIF-sized job ({R} regions x 200 s), extrapolated from the rates above: "
        f"{200 / net_wall_1:.0f} s at the measured 1-thread rate, {200 / net_idle_1:.0f} s "
        f"on one idle core"
    )

    # Default bank: round 0 of the grouped recipe exactly as build_bank plans it.
    from scipy.sparse.csgraph import shortest_path

    hops = shortest_path((conn.weights + conn.weights.T) > 0, unweighted=True, directed=False)
    groups = _balanced_groups(hops < 3, np.arange(R), np.random.default_rng([0, 0x6A11]))
    round0 = len(groups) * len(DEEPSIF_SETTINGS) * 30.5 + 60.5
    deepsif = R * len(DEEPSIF_SETTINGS) * 200.5
    print(
        f"default bank, round 0 ({len(groups)} groups x 3 settings x 30.5 s + 60.5 s "
        f"background = {round0:.0f} network-s): {round0 / net_wall_2 / 60:.1f} min at the "
        f"measured 2-thread rate, {round0 / net_idle_2 / 60:.1f} min on 2 idle cores "
        f"(top-up rounds for regions short of spikes come on top)"
    )
    print(
        f"DeepSIF recipe ({R} x 3 x 200.5 s = {deepsif:.0f} network-s): "
        f"{deepsif / net_wall_2 / 3600:.1f} h at the measured 2-thread rate, "
        f"{deepsif / net_idle_2 / 3600:.1f} h on 2 idle cores"
    )


def _tvb_version() -> str:
    try:
        from importlib.metadata import version

        return version("tvb-library")
    except Exception:  # noqa: BLE001 - only used in a label
        return "?"


if __name__ == "__main__":
    main()
