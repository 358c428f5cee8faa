"""Spike detection and the waveform bank of Jansen-Rit source activity.

The bank is what the paired-data synthesis draws from: single-region interictal spike
waveforms (from regions made excitable with ``A = 3.5``; the rest of the network keeps
``A = 3.25``, as in DeepSIF) and continuous background activity of every region.

Two recipes build it:

``"grouped"`` (default)
    Regions are partitioned into groups whose members are at least ``min_hops`` steps
    apart on the connectome graph (greedy balanced colouring in a seeded order). Each
    run makes one whole group excitable at once, so one network run yields spikes for
    ~30-60 regions instead of one. Each group is run once per DeepSIF (mu, noise)
    setting. Because coupled neighbours are never excitable together, a spike's
    waveform is shaped by its own region and its quiet surroundings, as in DeepSIF's
    single-source runs. Regions that end with fewer than ``min_spikes`` spikes are
    regrouped and run again (at most ``max_rounds`` rounds). For the default 994-region
    head model that is ~32 groups x 3 settings x 30 s plus top-ups, about 4,000
    simulated network-seconds (DeepSIF: ~600,000); measured wall times are in
    ``bench/RESULTS.md``.
``"deepsif"``
    DeepSIF's recipe: one run per source region and setting (``run_duration_s`` = 200 s
    in DeepSIF), only that region excitable. About 600,000 simulated network-seconds
    for 994 regions: hours to days on a few cores.

Spike rules: :mod:`fairesi.simulate.spikes`.

Background: one run with no excitable region, transient dropped, each region's mean
removed; a sample takes a random window of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.sparse.csgraph import shortest_path

from fairesi.io import atomic_path, check_hdf5_metadata
from fairesi.simulate.connectome import Connectome
from fairesi.simulate.jansen_rit import (
    DEEPSIF_SETTINGS,
    JansenRitParams,
    deepsif_noise_sigma,
    simulate_network,
)
from fairesi.simulate.spikes import select_spikes

__all__ = ["WaveformBank", "build_bank"]

_BANK_FORMAT = "fairesi-waveform-bank-1"


@dataclass
class WaveformBank:
    """Spike waveforms and background activity of every region, at 500 Hz.

    Attributes
    ----------
    spikes : np.ndarray of float32, shape (n_spikes, segment_len)
        Baseline-removed spike waveforms in mV, peak at index ``segment_len // 2``.
    spike_regions : np.ndarray of int32, shape (n_spikes,)
        Region each spike was simulated in.
    background : np.ndarray of float32, shape (n_regions, n_background_samples)
        Continuous non-spiking activity of every region in mV, mean removed.
    sfreq : float
        Sampling rate in Hz.
    metadata : dict
        How the bank was made (recipe, seed, parameters, versions); JSON-serialisable.
    """

    spikes: np.ndarray
    spike_regions: np.ndarray
    background: np.ndarray
    sfreq: float = 500.0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spikes = np.asarray(self.spikes, dtype=np.float32)
        self.spike_regions = np.asarray(self.spike_regions, dtype=np.int32)
        self.background = np.asarray(self.background, dtype=np.float32)
        if self.spikes.ndim != 2:
            raise ValueError(f"spikes must be (n_spikes, segment_len), got {self.spikes.shape}")
        if self.spike_regions.shape != (self.spikes.shape[0],):
            raise ValueError(
                f"spike_regions must have shape ({self.spikes.shape[0]},), "
                f"got {self.spike_regions.shape}"
            )
        if self.background.ndim != 2:
            raise ValueError(
                f"background must be (n_regions, n_samples), got {self.background.shape}"
            )
        if self.spike_regions.size and (
            self.spike_regions.min() < 0 or self.spike_regions.max() >= self.n_regions
        ):
            raise ValueError(f"spike_regions must lie in [0, {self.n_regions})")
        if not (np.isfinite(self.sfreq) and self.sfreq > 0):
            raise ValueError(f"sfreq must be > 0 Hz, got {self.sfreq}")

    @property
    def n_regions(self) -> int:
        """Number of regions (rows of ``background``)."""
        return int(self.background.shape[0])

    @property
    def segment_len(self) -> int:
        """Samples per spike segment."""
        return int(self.spikes.shape[1])

    def spikes_per_region(self) -> np.ndarray:
        """Number of spikes of every region, shape (n_regions,) int64."""
        return np.bincount(self.spike_regions, minlength=self.n_regions)

    def save(self, path: str | os.PathLike) -> None:
        """Write the bank to an HDF5 file (atomically).

        Datasets ``spikes``, ``spike_regions``, ``background``; attributes ``format``,
        ``sfreq``, ``metadata_json`` (the whole metadata) and every scalar metadata entry
        (e.g. ``seed``, ``recipe``) as its own attribute.
        """
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("spikes", data=self.spikes, compression="gzip", shuffle=True)
            f.create_dataset("spike_regions", data=self.spike_regions)
            f.create_dataset("background", data=self.background, compression="gzip", shuffle=True)
            f.attrs["format"] = _BANK_FORMAT
            f.attrs["sfreq"] = float(self.sfreq)
            f.attrs["metadata_json"] = json.dumps(self.metadata, sort_keys=True)
            for key, value in self.metadata.items():
                if isinstance(value, bool | int | float | str):
                    f.attrs[key] = value

    @classmethod
    def load(cls, path: str | os.PathLike) -> WaveformBank:
        """Read a bank written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"waveform bank {path} does not exist")
        check_hdf5_metadata(path)
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path} is not a readable HDF5 file: {err}") from None
        try:
            with f:
                return cls._read(f, path)
        except (OSError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as err:
            # h5py's errors on damaged metadata (symbol tables, heaps, attributes)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"waveform bank {path} is damaged: it cannot be read ({first}); rebuild it with "
                "fairesi simulate bank"
            ) from None

    @classmethod
    def _read(cls, f: h5py.File, path: Path) -> WaveformBank:
        """The bank in the open file ``f`` (``path`` names it in errors)."""
        if f.attrs.get("format") != _BANK_FORMAT:
            raise ValueError(
                f"{path} is not a fairesi waveform bank (format attribute "
                f"{f.attrs.get('format')!r}, expected {_BANK_FORMAT!r})"
            )
        missing = [k for k in ("spikes", "spike_regions", "background") if k not in f]
        if missing:
            raise ValueError(f"waveform bank {path} lacks the dataset(s) {missing}")
        try:
            arrays = {k: f[k][()] for k in ("spikes", "spike_regions", "background")}
        except OSError as err:  # a corrupted chunk fails its decompression here
            raise ValueError(f"waveform bank {path} is corrupt: {err}") from None
        for name in ("spikes", "background"):
            bad = ~np.isfinite(arrays[name])
            if bad.any():
                raise ValueError(
                    f"waveform bank {path}: {name} holds {int(bad.sum())} NaN/Inf values "
                    f"(first at index {np.argwhere(bad)[0].tolist()}); rebuild the bank"
                )
        return cls(
            **arrays,
            sfreq=float(f.attrs["sfreq"]),
            metadata=json.loads(f.attrs["metadata_json"]),
        )

    @classmethod
    def synthetic(
        cls,
        n_regions: int,
        n_spikes: int = 64,
        segment_len: int = 500,
        n_background_samples: int = 5000,
        seed: int = 0,
    ) -> WaveformBank:
        """Fast analytic stand-in for tests of later stages (NOT a Jansen-Rit simulation).

        Spikes are a sharp positive peak (Gaussian, 15-30 ms wide, 10-20 mV) followed by
        a slower negative wave, peak at ``segment_len // 2``; regions are assigned
        round-robin in a seeded order so every region has a spike when ``n_spikes >=
        n_regions``. The background is a 10 Hz-ish AR(2) oscillation of ~0.5 mV RMS per
        region.

        Parameters
        ----------
        n_regions : int
        n_spikes : int
        segment_len : int
        n_background_samples : int
        seed : int

        Returns
        -------
        bank : WaveformBank
            With ``metadata["synthetic"] = True``.
        """
        if n_regions < 1 or n_spikes < 0 or segment_len < 3 or n_background_samples < 1:
            raise ValueError(
                "synthetic bank needs n_regions >= 1, n_spikes >= 0, segment_len >= 3 and "
                f"n_background_samples >= 1, got {n_regions}, {n_spikes}, {segment_len}, "
                f"{n_background_samples}"
            )
        rng = np.random.default_rng(seed)
        sfreq = 500.0
        t = (np.arange(segment_len) - segment_len // 2) / sfreq
        width = rng.uniform(0.015, 0.030, size=(n_spikes, 1))
        amp = rng.uniform(10.0, 20.0, size=(n_spikes, 1))
        spikes = amp * np.exp(-0.5 * (t / width) ** 2)
        spikes -= 0.3 * amp * np.exp(-0.5 * ((t - 4 * width) / (3 * width)) ** 2)
        spikes[:, segment_len // 2] = amp[:, 0]  # the peak sample is exactly the maximum
        regions = rng.permutation(np.arange(n_spikes) % n_regions)
        # AR(2) resonator at ~10 Hz driven by white noise.
        pole = 0.97 * np.exp(2j * np.pi * 10.0 / sfreq)
        c1, c2 = 2 * pole.real, -(abs(pole) ** 2)
        drive = rng.standard_normal((n_regions, n_background_samples + 200))
        bg = np.zeros_like(drive)
        for k in range(2, drive.shape[1]):
            bg[:, k] = c1 * bg[:, k - 1] + c2 * bg[:, k - 2] + drive[:, k]
        bg = bg[:, 200:]
        bg -= bg.mean(axis=1, keepdims=True)
        bg *= 0.5 / bg.std(axis=1, keepdims=True)
        return cls(spikes, regions, bg, sfreq, {"synthetic": True, "seed": seed})


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Shard:
    """One network run of the bank: its excitable regions and DeepSIF setting."""

    name: str
    run_index: int  # global run index: the noise stream of this run
    excitable: tuple[int, ...]
    setting: int
    duration_s: float


def _balanced_groups(conflict: np.ndarray, regions: np.ndarray, rng: np.random.Generator):
    """Split ``regions`` into groups with no conflicting pair, groups of similar size."""
    groups: list[list[int]] = []
    for r in rng.permutation(regions):
        fits = [g for g in groups if not conflict[r, g].any()]
        if fits:
            min(fits, key=len).append(int(r))
        else:
            groups.append([int(r)])
    return [tuple(sorted(g)) for g in groups]


def _config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def build_bank(
    connectome: Connectome,
    *,
    recipe: str = "grouped",
    seed: int = 0,
    run_duration_s: float | None = None,
    background_s: float = 60.0,
    settings: tuple[tuple[float, float], ...] = DEEPSIF_SETTINGS,
    source_A: float = 3.5,
    min_hops: int = 3,
    min_spikes: int = 5,
    max_rounds: int = 3,
    segment_len: int = 500,
    threshold_mv: float = 8.0,
    transient_s: float = 0.5,
    conduction_speed_mm_per_ms: float | None = 3.0,
    regions: np.ndarray | None = None,
    n_threads: int | None = None,
    shard_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    client: Any = None,
) -> WaveformBank:
    """Simulate the network and build the waveform bank (see the module docstring).

    Parameters
    ----------
    connectome : Connectome
        Network to simulate (e.g. ``Connectome.from_geometry(head_model.region_centroids_mm)``).
    recipe : {"grouped", "deepsif"}
        Many well-separated excitable regions per run (default), or DeepSIF's one run per
        source region.
    seed : int
        Seed of every noise stream; the bank is a pure function of the arguments.
    run_duration_s : float, optional
        Output duration of each spike run in s (default 30 for "grouped", 200 for
        "deepsif").
    background_s : float
        Duration of the background run in s.
    settings : tuple of (mu, noise_scale)
        DeepSIF settings; every group / source region is run once per setting.
    source_A : float
        Excitatory gain of excitable regions (others keep ``JansenRitParams.A`` = 3.25).
    min_hops : int
        Excitable regions of one run are at least this many connectome hops apart, and a
        spike is rejected if a region closer than this spikes inside its segment.
    min_spikes : int
        "grouped": regions with fewer spikes are run again in a further round.
    max_rounds : int
        "grouped": at most this many rounds.
    segment_len : int
        Samples per spike segment at 500 Hz (>= 500).
    threshold_mv : float
        Spike threshold in mV.
    transient_s : float
        Dropped start of every run in s.
    conduction_speed_mm_per_ms : float or None
        Conduction speed for delays (None: no delays).
    regions : np.ndarray, optional
        Only make these regions excitable (default: all); the background still covers all.
    n_threads : int, optional
        Runs simulated at once, one thread each (default: the usable CPU cores).
    shard_dir : path-like, optional
        Directory keeping every finished run's spikes, so that an interrupted build
        resumes where it stopped. Results are kept in a subdirectory named after a hash
        of the arguments, so a changed configuration never reuses stale runs.
    progress : callable(done, total), optional
        Called after every finished run.
    client : dask.distributed.Client, optional
        Run the network runs as Dask tasks on this client's workers (one simulator thread
        per task; ``n_threads`` is then unused) instead of local threads. The runs'
        results come back to this process, which keeps them in ``shard_dir`` as a local
        build does, so the bank is identical to a local build for any number of workers
        (workers running the same simulator kernel), and a run whose worker dies is run
        again elsewhere. See :func:`fairesi.cluster.connect` for making a client.

    Returns
    -------
    bank : WaveformBank
    """
    if recipe not in ("grouped", "deepsif"):
        raise ValueError(f"recipe must be 'grouped' or 'deepsif', got {recipe!r}")
    if segment_len < 500:
        raise ValueError(f"segment_len must be >= 500 samples (1 s), got {segment_len}")
    if min_hops < 1:
        raise ValueError(f"min_hops must be >= 1, got {min_hops}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if not settings:
        raise ValueError("settings must list at least one (mu, noise_scale) pair")
    if run_duration_s is None:
        run_duration_s = 30.0 if recipe == "grouped" else 200.0
    # Every option is checked before anything is written (no empty shard folder is left).
    for name, value in (("run_duration_s", run_duration_s), ("background_s", background_s)):
        if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if min_spikes < 1:
        raise ValueError(f"min_spikes must be >= 1, got {min_spikes}")
    if n_threads is not None and n_threads < 1:
        raise ValueError(f"n_threads must be >= 1 or None, got {n_threads}")
    R = connectome.n_regions
    candidates = np.arange(R) if regions is None else np.unique(np.asarray(regions, dtype=int))
    if candidates.size == 0 or candidates.min() < 0 or candidates.max() >= R:
        raise ValueError(f"regions must be a non-empty subset of [0, {R})")
    if not n_threads:
        n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        n_threads = n_threads or os.cpu_count() or 1

    config = {
        "format": _BANK_FORMAT,
        "recipe": recipe,
        "seed": int(seed),
        "n_regions": R,
        "run_duration_s": float(run_duration_s),
        "background_s": float(background_s),
        "settings": [list(map(float, s)) for s in settings],
        "source_A": float(source_A),
        "min_hops": int(min_hops),
        "min_spikes": int(min_spikes),
        "max_rounds": int(max_rounds),
        "segment_len": int(segment_len),
        "threshold_mv": float(threshold_mv),
        "transient_s": float(transient_s),
        "conduction_speed_mm_per_ms": conduction_speed_mm_per_ms,
        "regions": None if regions is None else candidates.tolist(),
        "connectome_sha256": hashlib.sha256(
            connectome.weights.indptr.tobytes()
            + connectome.weights.indices.tobytes()
            + connectome.weights.data.tobytes()
            + (
                b""
                if connectome.tract_lengths_mm is None
                else connectome.tract_lengths_mm.data.tobytes()
            )
        ).hexdigest(),
        "params": {k: float(v) for k, v in vars(JansenRitParams.deepsif()).items() if k != "mu"},
    }
    store = None
    if shard_dir is not None:
        store = Path(shard_dir) / _config_key(config)
        store.mkdir(parents=True, exist_ok=True)

    graph = (connectome.weights + connectome.weights.T) > 0
    hops = shortest_path(graph, unweighted=True, directed=False)
    near = hops < min_hops
    rng = np.random.default_rng([int(seed), 0x6A11])
    context = _RunContext(
        connectome=connectome,
        near=near,
        settings=tuple(tuple(map(float, s)) for s in settings),
        seed=int(seed),
        source_A=float(source_A),
        transient_s=float(transient_s),
        conduction_speed_mm_per_ms=conduction_speed_mm_per_ms,
        segment_len=int(segment_len),
        threshold_mv=float(threshold_mv),
    )

    def finished(results: dict[str, dict], shard: _Shard, result: dict) -> None:
        if shard.name in results:  # a run's result is kept and written once
            return
        results[shard.name] = result
        _save_shard(store, shard.name, result)
        counter["done"] += 1
        if progress:
            progress(counter["done"], counter["total"])

    def run_shards(shards: list[_Shard]) -> dict[str, dict]:
        results = {}
        todo = []
        for shard in shards:
            cached = _load_shard(store, shard.name)
            if cached is None:
                todo.append(shard)
            else:
                results[shard.name] = cached
        counter["done"] += len(results)
        if progress:
            progress(counter["done"], counter["total"])
        if client is not None:
            from fairesi.cluster import map_unordered

            tasks = map_unordered(
                client,
                _simulate_shard,
                ((shard, (shard,)) for shard in todo),
                shared=context,
                name=f"fairesi-bank-{_config_key(config)}",
            )
            with closing(tasks):
                for shard, result in tasks:
                    finished(results, shard, result)
            return results
        # One run per thread: the simulator releases the GIL, runs are independent, and
        # a run's output does not depend on the thread that computed it.
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            futures = {pool.submit(_simulate_shard, context, shard): shard for shard in todo}
            try:
                for future in as_completed(futures):
                    finished(results, futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    # Round 0 (DeepSIF's only round) plus the background run (index 0, nobody excitable,
    # first setting), then top-up rounds for regions with too few spikes.
    if recipe == "deepsif":
        units = [(int(r),) for r in candidates]
    else:
        units = _balanced_groups(near, candidates, rng)
    n_set = len(settings)
    background = _Shard("background", 0, (), 0, float(background_s))
    shards = [background] + _round_shards(0, units, n_set, 1, float(run_duration_s))
    counter = {"done": 0, "total": len(shards)}
    results = run_shards(shards)
    run_base = len(shards)  # background is run 0, round 0 is 1 .. len - 1
    n_rounds = 1
    while recipe == "grouped" and n_rounds < max_rounds:
        counts = _spike_counts(results, R)
        short = candidates[counts[candidates] < min_spikes]
        if short.size == 0:
            break
        shards = _round_shards(
            n_rounds, _balanced_groups(near, short, rng), n_set, run_base, float(run_duration_s)
        )
        run_base += len(shards)
        counter["total"] += len(shards)
        results.update(run_shards(shards))
        n_rounds += 1

    background = results.pop("background")
    names = sorted(results)
    spikes = np.concatenate(
        [results[n]["spikes"] for n in names] + [np.zeros((0, segment_len), np.float32)]
    )
    spike_regions = np.concatenate([results[n]["regions"] for n in names] + [np.zeros(0, int)])
    counts = _spike_counts(results, R)
    metadata = dict(config)
    metadata.update(
        {
            "n_rounds": n_rounds,
            "n_runs": len(results) + 1,
            "simulated_network_s": float(
                len(results) * (run_duration_s + transient_s) + background_s + transient_s
            ),
            "regions_below_min_spikes": int(np.sum(counts[candidates] < min_spikes)),
            "regions_without_spikes": int(np.sum(counts[candidates] == 0)),
            "sfreq": 500.0,
        }
    )
    return WaveformBank(spikes, spike_regions, background["background"], 500.0, metadata)


@dataclass(frozen=True)
class _RunContext:
    """What every run of one bank build shares (sent to each Dask worker once)."""

    connectome: Connectome
    near: np.ndarray  # (R, R) bool: regions closer than min_hops
    settings: tuple[tuple[float, float], ...]
    seed: int
    source_A: float
    transient_s: float
    conduction_speed_mm_per_ms: float | None
    segment_len: int
    threshold_mv: float


def _simulate_shard(context: _RunContext, shard: _Shard) -> dict[str, np.ndarray]:
    """One network run of the bank: a pure function of the build and the run.

    Returns ``{"background": (R, T) float}`` for the background run, else the selected
    spikes ``{"spikes": (n, segment_len) float32, "regions": (n,), "peaks": (n,)}``.
    The noise stream is ``(seed, shard.run_index)``; one simulator thread, so the result
    does not depend on the thread, process or machine (same kernel) that computes it.
    """
    R = context.connectome.n_regions
    mu, noise_scale = context.settings[shard.setting]
    A = np.full(R, JansenRitParams.deepsif().A)
    A[list(shard.excitable)] = context.source_A
    traces = simulate_network(
        context.connectome,
        shard.duration_s,
        seed=context.seed,
        params=JansenRitParams.deepsif(mu=mu),
        region_A=A,
        noise_sigma=deepsif_noise_sigma(noise_scale),
        transient_s=context.transient_s,
        conduction_speed_mm_per_ms=context.conduction_speed_mm_per_ms,
        run_offset=shard.run_index,
        n_threads=1,
    )[0]
    if not shard.excitable:
        return {"background": traces - traces.mean(axis=1, keepdims=True)}
    excitable = np.zeros(R, dtype=bool)
    excitable[list(shard.excitable)] = True
    segs, regs, peaks = select_spikes(
        traces,
        excitable,
        context.near,
        segment_len=context.segment_len,
        threshold_mv=context.threshold_mv,
    )
    return {"spikes": segs, "regions": regs, "peaks": peaks}


def _round_shards(
    round_index: int,
    units: list[tuple[int, ...]],
    n_settings: int,
    run_base: int,
    duration_s: float,
) -> list[_Shard]:
    """Runs of one round: every unit (group of excitable regions) once per setting."""
    return [
        _Shard(f"r{round_index}-{u:05d}-s{s}", run_base + u * n_settings + s, unit, s, duration_s)
        for u, unit in enumerate(units)
        for s in range(n_settings)
    ]


def _spike_counts(results: dict[str, dict], n_regions: int) -> np.ndarray:
    regions = [res["regions"] for name, res in results.items() if name != "background"]
    return np.bincount(np.concatenate(regions + [np.zeros(0, np.int64)]), minlength=n_regions)


def _load_shard(store: Path | None, name: str) -> dict[str, np.ndarray] | None:
    """The finished run ``name`` kept in ``store``, or None when it must be run (again).

    A shard that cannot be read whole (truncated, empty, a bad CRC: a disk that filled up,
    a copy cut short) is removed with a one-line warning on stderr, so that resuming
    computes it again instead of failing.
    """
    import sys
    import zipfile
    import zlib

    if store is None or not (store / f"{name}.npz").is_file():
        return None
    path = store / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            result = {k: f[k] for k in f.files}
        if not result:
            raise ValueError("it holds no arrays")
        return result
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        detail = f"{type(err).__name__}: {err}".splitlines()[0]
        print(
            f"fairesi: warning: bank shard {path} is corrupt or truncated ({detail}); "
            "discarding it and running it again",
            file=sys.stderr,
        )
        path.unlink(missing_ok=True)
        return None


def _save_shard(store: Path | None, name: str, result: dict[str, Any]) -> None:
    if store is None:
        return
    with atomic_path(store / f"{name}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **result)


def remove_shards(shard_dir: str | os.PathLike) -> None:
    """Delete a shard directory left by :func:`build_bank` (after the bank was saved)."""
    shutil.rmtree(shard_dir, ignore_errors=True)
