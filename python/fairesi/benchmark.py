"""Table II benchmark: networks and classical inverses on identical test samples.

For every configuration (a row of the paper's Table II: dataset, SNR r, sources N_s,
rings N_n) :func:`run_benchmark` builds the data exactly as ``fairesi train`` does for
that configuration (same training preset, head model, waveform bank and seed, so the
test split is the one the networks never saw), then evaluates every method on the same
first ``n`` test samples with :func:`fairesi.evaluate.evaluate_estimator`:

* learned methods (names in :data:`fairesi.models.MODELS`: ``'fair_esi'``, ``'deepsif'``,
  ``'convdip'``) from their checkpoints, one per configuration, located with a path
  pattern and trained first when asked (``fairesi train`` with the same preset);
* classical methods (:data:`fairesi.inverse.INVERSE_METHODS`: ``'sLORETA'``,
  ``'Champagne'`` ...) directly on the normalised network input. The simulated sensor
  noise of each channel is a fixed fraction of that channel's signal power, so the noise
  covariance is diagonal with the relative levels of :func:`fairesi.inverse.noise_std_from_gain`
  (its global level does not matter for the MNE methods; Champagne learns it per sample).

:meth:`BenchmarkResult.write` produces ``benchmark.md`` (one Table II-style table per
configuration: our mean ± std per method, then the paper's figures for the same row),
``benchmark.csv`` (long format), ``per_sample.csv`` and a figure per configuration
comparing all methods on the first test sample.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fairesi.evaluate import TABLE_METRICS, EvaluationResult, format_paired_table
from fairesi.figures import plot_comparison
from fairesi.io import atomic_path
from fairesi.paper import PAPER_FAIR_ESI, PAPER_TABLE2

if TYPE_CHECKING:
    from fairesi.inverse import Champagne

logger = logging.getLogger(__name__)

#: Display names of the methods, as in the paper's Table II where it has them.
METHOD_LABELS = {
    "fair_esi": "FAIR-ESI",
    "deepsif": "DeepSIF",
    "convdip": "ConvDip",
    "MNE": "MNE",
    "dSPM": "dSPM",
    "sLORETA": "sLORETA",
    "eLORETA": "eLORETA",
    "Champagne": "Champagne",
    "mmdf_esi": "MMDF-ESI",
}

#: Methods of the fusion benchmark (``--dataset SimEEGMEG``): the two fused networks, FAIR-ESI
#: on each modality of the same samples (``name@view``), and sLORETA on both modalities.
FUSION_METHODS = ("mmdf_esi", "fair_esi", "fair_esi@eeg", "fair_esi@meg", "sLORETA")

#: Methods run when none are named: those of the paper's Table II that fairesi implements.
DEFAULT_METHODS = ("fair_esi", "deepsif", "convdip", "sLORETA", "Champagne")


@dataclass(frozen=True)
class TableRow:
    """One data configuration of Table II.

    Attributes
    ----------
    dataset : str
        ``'SimMEG'`` or ``'SimEEG'`` (a :class:`fairesi.data.SimConfig` preset).
    snr_db : float
        Sensor SNR r, dB.
    n_sources, n_rings : int
        Number of sources N_s and neighbour rings N_n.
    """

    dataset: str
    snr_db: float
    n_sources: int
    n_rings: int

    @property
    def label(self) -> str:
        """File-name-safe name, e.g. ``'SimMEG_r5_Ns1_Nn2'``."""
        return f"{self.dataset}_r{self.snr_db:g}_Ns{self.n_sources}_Nn{self.n_rings}"

    @property
    def title(self) -> str:
        """Human-readable name, e.g. ``'SimMEG, r = 5 dB, N_s = 1, N_n = 2'``."""
        return (
            f"{self.dataset}, r = {self.snr_db:g} dB, N_s = {self.n_sources}, N_n = {self.n_rings}"
        )

    @property
    def key(self) -> tuple[str, float, int, int]:
        """Key of the paper's tables (:data:`PAPER_TABLE2`)."""
        return (self.dataset, float(self.snr_db), int(self.n_sources), int(self.n_rings))

    @classmethod
    def parse(cls, text: str) -> TableRow:
        """Parse ``'DATASET:SNR_DB:N_SOURCES:N_RINGS'``, e.g. ``'SimMEG:-5:1:2'``."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(
                f"configuration {text!r} must be DATASET:SNR_DB:N_SOURCES:N_RINGS, "
                "e.g. SimMEG:5:1:2"
            )
        try:
            return cls(parts[0], float(parts[1]), int(parts[2]), int(parts[3]))
        except ValueError:
            raise ValueError(
                f"configuration {text!r}: SNR must be a number and N_s, N_n integers"
            ) from None


#: The seven configurations of the paper's Table II (six SimMEG rows, one SimEEG row).
TABLE2_ROWS = (
    TableRow("SimMEG", -5.0, 1, 2),
    TableRow("SimMEG", 5.0, 1, 2),
    TableRow("SimMEG", 15.0, 1, 2),
    TableRow("SimMEG", 5.0, 2, 2),
    TableRow("SimMEG", 5.0, 3, 2),
    TableRow("SimMEG", 5.0, 2, 3),
    TableRow("SimEEG", 5.0, 1, 2),
)

#: Rows of the fusion benchmark: SimEEGMEG, 1 source, r in {-5, 0, 5} dB x {1, 2, 3} rings.
FUSION_ROWS = tuple(
    TableRow("SimEEGMEG", snr, 1, rings) for snr in (-5.0, 0.0, 5.0) for rings in (1, 2, 3)
)


def paper_figures(row: TableRow, method: str) -> dict[str, tuple[float, float]] | None:
    """The paper's Table II cell block for a method and configuration, or None."""
    if method == "fair_esi":
        return PAPER_FAIR_ESI.get(row.key)
    return PAPER_TABLE2.get(row.key, {}).get(method)


def _is_learned(method: str) -> bool:
    from fairesi.models import MODELS

    return split_method(method)[0] in MODELS


def split_method(method: str) -> tuple[str, str | None]:
    """``'fair_esi@eeg'`` -> ``('fair_esi', 'eeg')``: a method and the modality it sees of a
    fused configuration (``SimConfig.view``); no ``@``: all channels (None)."""
    name, _, view = method.partition("@")
    return name, view or None


def method_label(method: str) -> str:
    """Display name: ``'FAIR-ESI'``, ``'FAIR-ESI (EEG only)'``."""
    name, view = split_method(method)
    return METHOD_LABELS[name] + (f" ({view.upper()} only)" if view else "")


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names (learned: ``fairesi.models.MODELS``; classical:
    :data:`fairesi.inverse.INVERSE_METHODS`; either with ``@eeg``/``@meg`` for one
    modality of a fused configuration) and return them as a list."""
    from fairesi.inverse import INVERSE_METHODS
    from fairesi.models import MODELS

    known = [*MODELS, *INVERSE_METHODS]
    unknown = [
        m
        for m in methods
        if split_method(m)[0] not in known or split_method(m)[1] not in (None, "eeg", "meg")
    ]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown or '(none given)'}; expected some of {known}")
    return list(dict.fromkeys(methods))


@dataclass
class BenchmarkResult:
    """Evaluations of several methods on several configurations.

    Attributes
    ----------
    rows : list of TableRow
        The configurations, in order.
    methods : list of str
        The methods, in order.
    results : dict
        ``(row.label, method) -> EvaluationResult`` on the same samples per row.
    seconds : dict
        ``(row.label, method) -> wall time`` of the evaluation (data synthesis included), s.
    checkpoints : dict
        ``(row.label, method) -> checkpoint path`` of the learned methods.
    notes : dict
        ``(row.label, method) -> one line`` printed under the row's table (e.g. how many
        samples Champagne's iterations converged on).
    n_samples : int
        Test samples per configuration.
    preset : str
        Training preset that defined the data (and the trained models).
    """

    rows: list[TableRow]
    methods: list[str]
    results: dict[tuple[str, str], EvaluationResult] = field(default_factory=dict)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    checkpoints: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    n_samples: int = 0
    preset: str = ""

    def table(self, row: TableRow) -> str:
        """Markdown table of one configuration: ours per method, then the paper's figures."""
        paper = [m for m in self.methods if paper_figures(row, m)]
        header = ["Metric", *(method_label(m) for m in self.methods)]
        header += [f"{method_label(m)} (paper)" for m in paper]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, name, factor in TABLE_METRICS:
            cells = [name]
            for method in self.methods:
                mean, std = self.results[row.label, method].summary[key]
                cells.append(f"{mean * factor:.2f} ± {std * factor:.2f}")
            for method in paper:
                mean, std = paper_figures(row, method)[key]
                cells.append(f"{mean:.2f} ± {std:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        seconds = [f"{1e3 * self.seconds[row.label, m] / self.n_samples:.1f}" for m in self.methods]
        lines.append("| ms / sample | " + " | ".join(seconds) + " |" + " |" * len(paper))
        notes = [self.notes[row.label, m] for m in self.methods if (row.label, m) in self.notes]
        notes += [
            f"{method_label(m)}: {self.results[row.label, m].n_empty} of {self.n_samples} "
            "samples had an empty reconstruction, left out of the means (DeepSIF's evaluation)"
            for m in self.methods
            if self.results[row.label, m].n_empty
        ]
        if notes:
            lines.append("")
            lines += [f"- {note}" for note in notes]
        return "\n".join(lines) + "\n" + self._fusion_differences(row)

    def _fusion_differences(self, row: TableRow) -> str:
        """Paired differences (mean ± s.e.) of every fused network against each
        single-modality method (``name@view``) on the same samples; '' without both."""
        singles = [m for m in self.methods if split_method(m)[1]]
        fused = [m for m in self.methods if not split_method(m)[1] and _is_learned(m)]
        parts = []
        for single in singles if fused else []:
            table = format_paired_table(
                self.results[row.label, single].per_sample,
                {method_label(m): self.results[row.label, m].per_sample for m in fused},
                base_label=method_label(single),
            )
            parts.append(
                f"\nPaired difference to {method_label(single)} on the same samples, mean ± "
                f"standard error:\n\n{table}"
            )
        return "".join(parts)

    def markdown(self) -> str:
        """All configurations' tables with a short header."""
        protocols = sorted({r.protocol for r in self.results.values()})
        parts = [
            f"# Table II benchmark (training preset '{self.preset}', {' / '.join(protocols)} "
            f"protocol, first {self.n_samples} test samples per configuration, mean ± std "
            "over samples)\n"
        ]
        for row in self.rows:
            parts.append(f"\n## {row.title}\n\n{self.table(row)}")
        return "".join(parts)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``benchmark.md``, ``benchmark.csv``, ``per_sample.csv`` and one
        ``<configuration>.png`` per configuration into ``out_dir`` (atomically).

        Returns
        -------
        paths : dict of str to pathlib.Path
            Keys 'markdown', 'csv', 'per_sample' and each row's label (its figure).
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out_dir / "benchmark.md",
            "csv": out_dir / "benchmark.csv",
            "per_sample": out_dir / "per_sample.csv",
        }
        with atomic_path(paths["markdown"]) as tmp:
            tmp.write_text(self.markdown())
        config_cols = ["dataset", "snr_db", "n_sources", "n_rings"]
        with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                [*config_cols, "method", "metric", "mean", "std", "n_defined", "n_samples"]
                + ["paper_mean", "paper_std", "seconds", "checkpoint"]
            )
            for row in self.rows:
                for method in self.methods:
                    result = self.results[row.label, method]
                    paper = paper_figures(row, method)
                    for key, name, factor in TABLE_METRICS:
                        mean, std = result.summary[key]
                        writer.writerow(
                            [row.dataset, row.snr_db, row.n_sources, row.n_rings, method, name]
                            + [mean * factor, std * factor]
                            + [int(np.isfinite(result.per_sample[key]).sum()), self.n_samples]
                            + list(paper[key] if paper else ("", ""))
                            + [self.seconds[row.label, method]]
                            + [self.checkpoints.get((row.label, method), "")]
                        )
        with atomic_path(paths["per_sample"]) as tmp, open(tmp, "w", newline="") as f:
            keys = [key for key, _, _ in TABLE_METRICS]
            writer = csv.writer(f)
            writer.writerow([*config_cols, "method", "sample", *keys])
            for row in self.rows:
                for method in self.methods:
                    result = self.results[row.label, method]
                    for i, index in enumerate(result.sample_index):
                        values = [float(result.per_sample[k][i]) for k in keys]
                        writer.writerow(
                            [row.dataset, row.snr_db, row.n_sources, row.n_rings, method]
                            + [int(index), *values]
                        )
        for row in self.rows:
            first = self.results[row.label, self.methods[0]].example
            estimates = {
                method_label(m): self.results[row.label, m].example["estimate"]
                for m in self.methods
            }
            paths[row.label] = plot_comparison(
                first["centroids_mm"],
                first["target"],
                estimates,
                out_dir / f"{row.label}.png",
                source_mask=first["source_mask"],
                title=f"{row.title}: test sample 0",
                surface=first.get("surface"),
            )
        return paths


def _row_train_config(
    row: TableRow, method: str, preset: str, seed: int, overrides: Mapping[str, Any]
):
    """The ``TrainConfig`` that trains ``method`` on ``row`` (and defines its data)."""
    from fairesi.train import TrainConfig

    name, view = split_method(method)
    return TrainConfig.from_sources(
        preset=preset,
        overrides={
            **overrides,
            "model": name if _is_learned(method) else "fair_esi",
            "view": view,
            "dataset": row.dataset,
            "snr_db": row.snr_db,
            "n_sources": row.n_sources,
            "n_rings": row.n_rings,
            "seed": seed,
        },
    )


def _learned_estimator(
    method: str,
    row: TableRow,
    pattern: str,
    *,
    preset: str,
    seed: int,
    head_model: Any,
    train_missing: bool,
    train_overrides: Mapping[str, Any],
    sim_config: Any,
    device: str,
) -> tuple[torch.nn.Module, str]:
    """Load (training first when asked and missing) a method's checkpoint for one row."""
    from fairesi.train import load_checkpoint, train

    path = Path(pattern.format(method=method, config=row.label))
    if not path.is_file():
        if not train_missing:
            raise FileNotFoundError(
                f"no {method} checkpoint for {row.title} at {path}; train it with "
                f"`fairesi train --model {method}` or pass --train-missing"
            )
        config = _row_train_config(
            row, method, preset, seed, {**train_overrides, "out_dir": str(path.parent)}
        )
        last = path.parent / "last.pt"
        logger.info("training %s for %s in %s", method, row.title, path.parent)
        if last.is_file():
            train(
                resume=last,
                **{k: v for k, v in train_overrides.items() if k in config.RUN_CONTROL},
            )
        else:
            train(config)
        if not path.is_file():
            # Runs stopped by a step or time budget before an epoch ended have no best.pt.
            path = last
    checkpoint = load_checkpoint(path, map_location=device, head_model=head_model)
    # Fields a checkpoint predates take their defaults, as when it is evaluated.
    stored = type(sim_config).from_dict(checkpoint.config["data"])
    row_key = (sim_config.snr_db, sim_config.n_sources, sim_config.n_rings)
    if row_key in stored.mixture:
        # Trained on a mixture that holds this row: its samples of the row are the row's
        # own (SimConfig.mixture), and every split keeps its centres and samples apart.
        stored = stored.with_row(row_key)
    data = stored.to_dict()
    expected = sim_config.to_dict()
    differ = sorted(k for k in expected if data[k] != expected[k])
    if checkpoint.config["train"]["seed"] != seed:
        differ.append("seed")
    if differ:
        raise ValueError(
            f"checkpoint {path} was trained on other data than {row.title} with preset "
            f"'{preset}' (fields {differ} differ), so its test split would not be the others'"
        )
    return checkpoint.model, str(path)


def _peak_normalised(estimator):
    """``estimator`` with each sample's estimate divided by its max |value| (B, R, T)."""

    def normalised(x: torch.Tensor) -> torch.Tensor:
        estimate = estimator(x)
        peak = estimate.abs().amax(dim=(1, 2), keepdim=True)
        return estimate / torch.where(peak > 0, peak, torch.ones_like(peak))

    return normalised


class _ConvergenceLog:
    """Champagne as an estimator ``(B, C, T) -> (B, R, T)`` that also records, per call,
    the iterations run and which samples met the tolerance (:meth:`Champagne.fit`). Not a
    ``RegionEstimator`` subclass: that would import MNE whenever this module is imported."""

    def __init__(self, champagne: Champagne) -> None:
        self.champagne = champagne
        self.sample_converged: list[bool] = []
        self.n_iter: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fit = self.champagne.fit(x)
        self.sample_converged += fit.sample_converged.tolist()
        self.n_iter.append(fit.n_iter)
        return torch.from_numpy(fit.means).to(x.device)

    def note(self, label: str) -> str:
        """One line: how many samples converged, within how many iterations."""
        return (
            f"{label}: {sum(self.sample_converged)} of {len(self.sample_converged)} samples "
            f"converged (relative cost change < {self.champagne.tol:g}) within max_iter = "
            f"{self.champagne.max_iter}; iterations per batch: " + ", ".join(map(str, self.n_iter))
        )


def run_benchmark(
    rows: Sequence[TableRow] = TABLE2_ROWS,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    preset: str = "cpu",
    checkpoints: Mapping[str, str] | None = None,
    runs_dir: str | os.PathLike = "runs/benchmark",
    train_missing: bool = False,
    train_overrides: Mapping[str, Any] | None = None,
    classical_options: Mapping[str, Mapping[str, Any]] | None = None,
    n: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> BenchmarkResult:
    """Evaluate methods on the same test samples of several configurations.

    Parameters
    ----------
    rows : sequence of TableRow
        Configurations (default: the seven of Table II).
    methods : sequence of str
        Learned (``fairesi.models.MODELS``) and classical (``fairesi.inverse.INVERSE_METHODS``)
        method names.
    preset : str
        ``fairesi train`` preset ('tiny', 'cpu', 'wide', 'paper') that defines the head model, the
        waveform bank, the data sizes and, for ``train_missing``, the training.
    checkpoints : mapping of str to str, optional
        Learned method -> checkpoint path pattern with ``{config}`` (a row's label, e.g.
        ``SimMEG_r5_Ns1_Nn2``) and ``{method}`` placeholders. Methods not given use
        ``RUNS_DIR/{method}/{config}/best.pt``. One checkpoint trained on a ``mixture``
        (``fairesi train --mixture``) serves every row of its mixture.
    runs_dir : path-like
        Root of the default checkpoint locations.
    train_missing : bool
        Train (or resume) a learned method whose checkpoint is missing, into the
        checkpoint's directory, with the preset and ``train_overrides``.
    train_overrides : mapping, optional
        ``TrainConfig`` fields for that training (e.g. ``max_minutes``, ``threads``) and for
        the data (``head_model``, ``bank``, ``n_samples``, ``n_times``).
    classical_options : mapping, optional
        Classical method -> keyword arguments of its class (e.g.
        ``{"Champagne": {"max_iter": 100}}``); ``noise_std`` defaults to
        :func:`fairesi.inverse.noise_std_from_gain`.
    n : int
        Test samples per configuration (the first ``n`` of the test split).
    seed : int
        Data seed (and the seed the checkpoints must have been trained with).
    batch_size : int
        Samples per estimator call.
    device : str
        Where data synthesis and the networks run.
    progress : bool
        Show progress bars.

    Returns
    -------
    result : BenchmarkResult
    """
    from fairesi.evaluate import evaluate_estimator
    from fairesi.experiment import synthesizer
    from fairesi.inverse import Champagne, build_inverse, noise_std_from_gain

    methods = check_methods(methods)
    rows = list(rows)
    if not rows:
        raise ValueError("no configurations to benchmark")
    checkpoints = dict(checkpoints or {})
    not_learned = sorted(m for m in checkpoints if not _is_learned(m))
    if not_learned:
        raise ValueError(f"checkpoints given for methods that are not networks: {not_learned}")
    train_overrides = dict(train_overrides or {})
    classical_options = dict(classical_options or {})
    result = BenchmarkResult(rows=rows, methods=methods, n_samples=int(n), preset=preset)
    inverses: dict[tuple[str, str], Any] = {}
    for row in rows:
        data_config = _row_train_config(row, methods[0], preset, seed, train_overrides)
        sim_config = data_config.data
        synth = synthesizer(
            sim_config,
            head_model=data_config.head_model,
            bank=data_config.bank,
            seed=seed,
            device=device,
        )
        head_model = synth.head_model
        views = {None: synth}
        for method in methods:
            convergence = None
            view = split_method(method)[1]
            if view not in views:
                views[view] = synthesizer(
                    dataclasses.replace(sim_config, view=view),
                    head_model=head_model,
                    bank=data_config.bank,
                    seed=seed,
                    device=device,
                )
            method_synth = views[view]
            if _is_learned(method):
                pattern = checkpoints.get(
                    method, str(Path(runs_dir) / "{method}" / "{config}" / "best.pt")
                )
                estimator, path = _learned_estimator(
                    method,
                    row,
                    pattern,
                    preset=preset,
                    seed=seed,
                    head_model=head_model,
                    train_missing=train_missing,
                    train_overrides=train_overrides,
                    sim_config=method_synth.config,
                    device=device,
                )
                result.checkpoints[row.label, method] = path
            else:
                modality = method_synth.config.input_modality
                name = split_method(method)[0]
                cache_key = (modality, name)
                if cache_key not in inverses:
                    options = {
                        "noise_std": noise_std_from_gain(head_model, modality),
                        **classical_options.get(name, {}),
                    }
                    inverses[cache_key] = build_inverse(name, head_model, modality, **options)
                estimator = inverses[cache_key]
                if isinstance(estimator, Champagne):
                    estimator = convergence = _ConvergenceLog(estimator)
                if sim_config.protocol == "paper":
                    # DeepSIF's signed rule compares raw values with a threshold in
                    # normalised units; classical estimates are in arbitrary units.
                    estimator = _peak_normalised(estimator)
            # Timed: the evaluation only (synthesis included), not training or set-up.
            started = time.perf_counter()
            result.results[row.label, method] = evaluate_estimator(
                estimator, method_synth, split="test", n=n, batch_size=batch_size, progress=progress
            )
            result.seconds[row.label, method] = time.perf_counter() - started
            if convergence is not None:
                result.notes[row.label, method] = convergence.note(method_label(method))
            logger.info("%s / %s: %.1f s", row.label, method, result.seconds[row.label, method])
    return result
