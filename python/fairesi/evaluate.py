"""Evaluation harness: the five Table II metrics of any source estimator on a test split.

:func:`evaluate_estimator` runs any callable ``x (B, C, T) -> estimate (B, R, T)`` (a trained
network, or a classical inverse such as sLORETA) over the first ``n`` samples of a split of a
:class:`fairesi.data.Synthesizer` and computes ``fairesi.metrics.localization_metrics`` per
sample. :func:`evaluate_checkpoint` does the same for a training checkpoint, rebuilding the
data of the checkpoint's configuration (same seed, so the same samples). :func:`write_report`
writes ``metrics.md``, ``metrics.csv``, ``per_sample.csv`` and ``reconstruction.png``.

Tables follow the paper's Table II units: precision and recall in %, LE and SD in mm, nMSE
in units of 1e-4; each cell is mean ± standard deviation over the test samples. When the
configuration is one of Table II's, the paper's FAIR-ESI figures stand in a second column
(:data:`fairesi.paper.PAPER_FAIR_ESI`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fairesi.figures import brain_surface, plot_reconstruction
from fairesi.io import atomic_path
from fairesi.paper import paper_reference

if TYPE_CHECKING:
    from fairesi.data import SimConfig
    from fairesi.models import Pretrained

#: (key of localization_metrics, table label, factor from the metric's unit to the table's).
TABLE_METRICS: tuple[tuple[str, str, float], ...] = (
    ("precision", "Precision (%)", 100.0),
    ("recall", "Recall (%)", 100.0),
    ("le_mm", "LE (mm)", 1.0),
    ("sd_mm", "SD (mm)", 1.0),
    ("nmse", "nMSE (×1e-4)", 1e4),
)


@dataclass
class EvaluationResult:
    """Per-sample metrics of one estimator on one split.

    Attributes
    ----------
    per_sample : dict of str to numpy.ndarray (n,)
        ``localization_metrics`` output over all evaluated samples (fractions, mm, plain
        nMSE), in sample order.
    summary : dict of str to (float, float)
        ``fairesi.metrics.summarize`` of ``per_sample`` (same units; LE and SD leave out
        samples where nothing was reconstructed, for which they are NaN).
    split : str
        The split evaluated.
    sample_index : numpy.ndarray (n,) int64
        Indices of the evaluated samples within the split.
    example : dict
        The first sample, for figures: ``target`` and ``estimate`` (R, T), ``source_mask``
        (R,), ``centroids_mm`` (R, 3) numpy arrays, and ``surface`` (the head model's
        :class:`fairesi.figures.BrainSurface`, or None).
    reference : dict or None
        The paper's FAIR-ESI row for this configuration (table units), if any.
    draw : int
        Realisation of the samples (0: the split itself; see ``Synthesizer.batch``).
    protocol : str
        The data's protocol (``SimConfig.protocol``: 'strict' or 'paper').
    rule : str
        The reconstructed-region rule of the metrics ('abs' or 'deepsif').
    """

    per_sample: dict[str, np.ndarray]
    summary: dict[str, tuple[float, float]]
    split: str
    sample_index: np.ndarray
    example: dict[str, Any]
    reference: dict[str, tuple[float, float]] | None = None
    draw: int = 0
    protocol: str = "strict"
    rule: str = "abs"

    @property
    def n_empty(self) -> int:
        """Samples left out of the means for an empty reconstruction (rule 'deepsif')."""
        from fairesi.metrics import count_empty

        return count_empty(self.per_sample)

    def table(self, label: str = "fairesi") -> str:
        """This result as a Markdown table (with the paper's column when known)."""
        return format_table(self.summary, label=label, reference=self.reference)


def evaluate_estimator(
    estimator: Callable[[torch.Tensor], torch.Tensor],
    synth: Any,
    *,
    split: str = "test",
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    draw: int = 0,
    rule: str | None = None,
) -> EvaluationResult:
    """Run an estimator on the first ``n`` samples of a split and compute the metrics.

    Parameters
    ----------
    estimator : callable
        Maps normalised sensor data ``x`` (B, C, T) float32 to source estimates (B, R, T) on
        the synthesizer's device (a network in eval mode, an inverse operator, ...). It is
        called under ``torch.no_grad()``.
    synth : fairesi.data.Synthesizer
        The data configuration; its head model gives the region centroids (mm).
    split : {'test', 'val', 'train'}
        Which split.
    n : int or None
        Number of samples (the first ``n`` of the split, in index order); None: all.
    batch_size : int
        Samples per call of ``estimator``.
    progress : bool
        Show a tqdm progress bar.
    draw : int
        Realisation of the samples (``Synthesizer.batch``): 0 is the split itself; another
        value keeps the samples' source locations with new waveforms, SNRs and noise (on
        the training split: seen locations, unseen data).
    rule : {'abs', 'deepsif'} or None
        Reconstructed-region rule (``fairesi.metrics``); None: the rule of the data's
        protocol ('deepsif' for 'paper', 'abs' for 'strict').

    Returns
    -------
    result : EvaluationResult
    """
    from tqdm.auto import tqdm

    from fairesi.metrics import localization_metrics, summarize

    protocol = getattr(synth.config, "protocol", "strict")
    rule = rule_of(protocol) if rule is None else rule

    size = synth.split_size(split)
    n = size if n is None else int(n)
    if not 1 <= n <= size:
        raise ValueError(f"n must be in [1, {size}] (the size of the {split} split), got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    centroids_mm = np.asarray(synth.head_model.region_centroids_mm)
    per_batch: list[dict[str, np.ndarray]] = []
    example: dict[str, Any] = {}
    with torch.no_grad(), tqdm(total=n, desc=f"evaluate {split}", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n), dtype=torch.int64)
            batch = synth.batch(split, index, draw=draw)
            if not (torch.isfinite(batch.x).all() and torch.isfinite(batch.target).all()):
                raise ValueError(
                    f"the {split} data of samples {start}..{int(index[-1])} contain NaN/Inf "
                    "(check the head model's lead field and the waveform bank)"
                )
            estimate = estimator(batch.x)
            expected = tuple(batch.target.shape)
            if tuple(estimate.shape) != expected:
                raise ValueError(
                    f"the estimator returned shape {tuple(estimate.shape)}, expected "
                    f"(B, R, T) = {expected}"
                )
            estimate = estimate.detach().float().cpu().numpy()
            target = batch.target.cpu().numpy()
            mask = batch.source_mask.cpu().numpy()
            if not np.isfinite(estimate).all():
                raise ValueError(
                    f"the estimator returned NaN/Inf for {split} samples {start}..{int(index[-1])}"
                )
            per_batch.append(localization_metrics(estimate, target, mask, centroids_mm, rule=rule))
            if not example:
                example = {
                    "target": target[0],
                    "estimate": estimate[0],
                    "source_mask": mask[0],
                    "centroids_mm": centroids_mm,
                    "surface": brain_surface(synth.head_model),
                }
            bar.update(len(index))
    per_sample = {key: np.concatenate([b[key] for b in per_batch]) for key in per_batch[0]}
    return EvaluationResult(
        per_sample=per_sample,
        summary=summarize(per_sample),
        split=split,
        sample_index=np.arange(n, dtype=np.int64),
        example=example,
        reference=paper_reference(synth.config),
        draw=int(draw),
        protocol=protocol,
        rule=rule,
    )


def rule_of(protocol: str) -> str:
    """The reconstructed-region rule of a protocol: 'deepsif' for 'paper', else 'abs'."""
    return "deepsif" if protocol == "paper" else "abs"


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    split: str = "test",
    n: int | None = None,
    head_model: Any = None,
    bank: str | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
    draw: int = 0,
    protocol: str | None = None,
) -> EvaluationResult:
    """Evaluate a training checkpoint on its own data configuration.

    Parameters
    ----------
    path : path-like
        ``best.pt`` or ``last.pt`` written by ``fairesi train``.
    split : {'test', 'val', 'train'}
        Which split of the checkpoint's configuration (same seed, so the same samples).
    n : int or None
        Evaluate the first ``n`` samples only.
    head_model : HeadModel, str or None
        The head model (object, or 'default' / 'toy' / file); None uses the checkpoint's.
        It must match the checkpoint's regions and channels.
    bank : str or None
        Waveform bank spec ('default', 'synthetic' or a file); None uses the checkpoint's.
    batch_size : int
        Samples per forward pass.
    device : str
        Where the model and the synthesis run.
    progress : bool
        Show a tqdm progress bar.
    draw : int
        Realisation of the samples (see :func:`evaluate_estimator`).
    protocol : {'strict', 'paper'} or None
        Evaluate under this protocol (its data, :meth:`fairesi.data.SimConfig.with_protocol`,
        and its metric rule); None: the checkpoint's own.

    Returns
    -------
    result : EvaluationResult
    """
    from fairesi.experiment import load_head_model, synthesizer_for_checkpoint
    from fairesi.train import load_checkpoint

    if isinstance(head_model, str):
        head_model = load_head_model(head_model)
    checkpoint = load_checkpoint(path, map_location=device, head_model=head_model)
    synth = synthesizer_for_checkpoint(
        checkpoint.config,
        head_model=checkpoint.head_model,
        bank=bank,
        device=device,
        protocol=protocol,
    )
    return evaluate_estimator(
        checkpoint.model,
        synth,
        split=split,
        n=n,
        batch_size=batch_size,
        progress=progress,
        draw=draw,
    )


def evaluate_pretrained(
    name: str,
    *,
    n: int = 256,
    seed: int | None = None,
    protocol: str | None = None,
    bank: str = "default",
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
    directory: str | os.PathLike | None = None,
    configuration: str | tuple[float, int, int] | None = None,
) -> EvaluationResult:
    """Score a shipped model (``fairesi.models.pretrained``) on freshly synthesised samples.

    Parameters
    ----------
    name : str
        ``'meg'``, ``'eeg'`` (:func:`fairesi.models.available_pretrained`).
    n : int
        Test samples.
    seed : int or None
        Seed of the samples; None: the training seed + 1000, so none of them was seen.
    protocol : {'strict', 'paper'} or None
        None: the protocol the model was trained under.
    bank : str
        Waveform bank spec ('default': build it first with ``fairesi simulate bank``).
    batch_size, device, progress
        As for :func:`evaluate_checkpoint`.
    directory : path-like or None
        Where the models are (default: the package's).
    configuration : str or (snr_db, n_sources, n_rings) or None
        Test samples of this configuration (text ``"r/N_s/N_n"``, e.g. ``"5/1/2"``); None:
        the training configuration (of a model trained on a ``mixture``: its mixed test
        split; :func:`pretrained_rows` names the rows to score one by one).

    Returns
    -------
    result : EvaluationResult
    """
    from fairesi.experiment import synthesizer
    from fairesi.models import pretrained

    shipped = pretrained(name, directory=directory)
    data = pretrained_test_data(shipped, configuration=configuration, protocol=protocol)
    if seed is None:
        seed = int(shipped.config["train"]["seed"]) + 1000
    synth = synthesizer(data, head_model=shipped.head_model, bank=bank, seed=seed, device=device)
    return evaluate_estimator(
        shipped.model.to(device), synth, n=n, batch_size=batch_size, progress=progress
    )


def pretrained_test_data(
    shipped: Pretrained,
    *,
    configuration: str | tuple[float, int, int] | None = None,
    protocol: str | None = None,
) -> SimConfig:
    """The data configuration of a shipped model's fresh test samples.

    Parameters
    ----------
    shipped : fairesi.models.Pretrained
        The loaded model (``fairesi.models.pretrained``).
    configuration, protocol
        As for :func:`evaluate_pretrained`: one ``"r/N_s/N_n"`` row (None: the training
        configuration) and 'strict' or 'paper' (None: the training protocol).

    Returns
    -------
    data : SimConfig
        The model's recorded data configuration with that row and protocol.
    """
    from fairesi.data import SimConfig, parse_mixture

    data = SimConfig.from_dict(dict(shipped.config["data"]))
    if configuration is not None:
        rows = parse_mixture([configuration] if isinstance(configuration, tuple) else configuration)
        if len(rows) != 1:
            raise ValueError(
                f"configuration must be one 'snr_db/n_sources/n_rings', e.g. '5/1/2', got "
                f"{configuration!r}"
            )
        data = data.with_row(rows[0])
    if protocol is not None:
        data = data.with_protocol(protocol)
    return data


def pretrained_rows(name: str, directory: str | os.PathLike | None = None) -> list[str]:
    """The configurations ``"r/N_s/N_n"`` a shipped model was trained on (one per row of
    its training mixture, or its one configuration), for
    :func:`evaluate_pretrained`'s ``configuration``."""
    from fairesi.data import SimConfig
    from fairesi.models import pretrained

    data = SimConfig.from_dict(dict(pretrained(name, directory=directory).config["data"]))
    return [f"{c.snr_db:g}/{c.n_sources}/{c.n_rings}" for c in data.rows()]


def _cell(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def table_cells(per_sample: Mapping[str, np.ndarray]) -> list[str]:
    """One "mean ± std" cell per :data:`TABLE_METRICS` entry, in the table's units.

    Parameters
    ----------
    per_sample : mapping
        Per-sample metrics (``localization_metrics`` keys, arrays (N,)) in their own units
        (fractions, mm, plain nMSE).

    Returns
    -------
    cells : list of str
        Population mean ± std over the samples where the metric is defined (NaNs left
        out), scaled to %, mm and 1e-4; "n/a" where no sample defines it.
    """
    cells = []
    for key, _, factor in TABLE_METRICS:
        values = per_sample[key]
        values = values[~np.isnan(values)] * factor
        cells.append(_cell(values.mean(), values.std()) if values.size else "n/a")
    return cells


def reference_cells(row: Mapping[str, tuple[float, float]]) -> list[str]:
    """One "mean ± std" cell per :data:`TABLE_METRICS` entry of a published row, already in
    the table's units (e.g. :data:`fairesi.paper.PAPER_FAIR_ESI`'s)."""
    return [_cell(*row[key]) for key, _, _ in TABLE_METRICS]


def format_table(
    summary: Mapping[str, tuple[float, float]],
    *,
    label: str = "fairesi",
    reference: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """A Table II-style Markdown table of mean ± std per metric.

    Parameters
    ----------
    summary : mapping
        ``fairesi.metrics.summarize`` output (fractions, mm, plain nMSE).
    label : str
        Header of our column.
    reference : mapping or None
        The paper's row in table units (see :data:`PAPER_FAIR_ESI`); adds a column.

    Returns
    -------
    markdown : str
    """
    header = ["Metric", label] + (["FAIR-ESI (paper)"] if reference else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, name, factor in TABLE_METRICS:
        mean, std = summary[key]
        row = [name, _cell(mean * factor, std * factor)]
        if reference:
            row.append(_cell(*reference[key]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def format_paired_table(
    base: Mapping[str, np.ndarray],
    others: Mapping[str, Mapping[str, np.ndarray]],
    *,
    base_label: str = "base",
    row_bases: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> str:
    """Markdown table of paired differences ``other - base`` on the same samples.

    Parameters
    ----------
    base : mapping
        Per-sample metrics (``localization_metrics`` keys, arrays (N,)) of the reference.
    others : mapping
        Row label -> per-sample metrics of the same N samples in the same order.
    base_label : str
        Name of the reference in the header.
    row_bases : mapping or None
        Row label -> the reference of that row where it is not ``base`` (e.g. one seed's
        samples beside the pooled row); each row pairs with its own reference.

    Returns
    -------
    markdown : str
        One row per entry of ``others``; each cell is mean ± standard error of the
        difference in the table's units (:data:`TABLE_METRICS`), from
        ``fairesi.metrics.paired_difference``.
    """
    from fairesi.metrics import paired_difference

    header = [f"difference to {base_label}"] + [label for _, label, _ in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in others.items():
        diff = paired_difference(dict((row_bases or {}).get(name, base)), dict(metrics))
        cells = []
        for key, _, factor in TABLE_METRICS:
            mean, se, _ = diff[key]
            cells.append("n/a" if np.isnan(mean) else f"{mean * factor:+.2f} ± {se * factor:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_per_sample(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a ``per_sample.csv`` written by :func:`write_report`.

    Parameters
    ----------
    path : path-like
        The CSV file, or the evaluation directory that holds it.

    Returns
    -------
    sample_index : numpy.ndarray (N,) int64
        Indices of the samples within their split.
    per_sample : dict of str to numpy.ndarray (N,) float64
        The metrics in their own units (fractions, mm, plain nMSE).

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or lacks the columns ``write_report`` writes.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "per_sample.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist (expected a per_sample.csv of an evaluation)"
        )
    keys = [key for key, _, _ in TABLE_METRICS]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = sorted({"sample", *keys} - set(reader.fieldnames or ()))
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; is it a per_sample.csv?")
        rows = list(reader)
    try:
        index = np.array([int(r["sample"]) for r in rows], dtype=np.int64)
        per_sample = {k: np.array([float(r[k]) for r in rows]) for k in keys}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return index, per_sample


def write_report(
    result: EvaluationResult,
    out_dir: str | os.PathLike,
    *,
    label: str = "fairesi",
    appendix: str = "",
) -> dict[str, Path]:
    """Write ``metrics.md``, ``metrics.csv``, ``per_sample.csv`` and ``reconstruction.png``.

    Parameters
    ----------
    result : EvaluationResult
    out_dir : path-like
        Created if needed; every file is written atomically.
    label : str
        Name of the estimator in the table.
    appendix : str
        Markdown added at the end of ``metrics.md`` (e.g. a paired comparison).

    Returns
    -------
    paths : dict of str to pathlib.Path
        Keys 'markdown', 'csv', 'per_sample', 'figure'.
    """
    out_dir = Path(out_dir)
    paths = {
        "markdown": out_dir / "metrics.md",
        "csv": out_dir / "metrics.csv",
        "per_sample": out_dir / "per_sample.csv",
        "figure": out_dir / "reconstruction.png",
    }
    n = len(result.sample_index)
    n_defined = {k: int(np.isfinite(v).sum()) for k, v in result.per_sample.items()}
    note = ""
    if result.n_empty:
        note = (
            f"\n{result.n_empty} of the {n} samples had an empty reconstruction and are left "
            "out of every mean but nMSE's, as DeepSIF's evaluation leaves them out.\n"
        )
    elif n_defined["le_mm"] < n:
        note = (
            f"\nLE and SD are averaged over the {n_defined['le_mm']} samples where the "
            f"estimate reconstructed at least one region (precision and recall count the "
            f"other {n - n_defined['le_mm']} as 0).\n"
        )
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(
            f"Evaluation on the first {n} samples of the {result.split} split"
            + (f", draw {result.draw} (new realisations of them)" if result.draw else "")
            + f", {result.protocol} protocol (region rule '{result.rule}')"
            + " (mean ± std over samples).\n\n"
            + result.table(label)
            + note
            + (f"\n{appendix}" if appendix else "")
        )
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "mean", "std", "paper_mean", "paper_std", "n_samples"])
        for key, name, factor in TABLE_METRICS:
            mean, std = result.summary[key]
            paper = result.reference[key] if result.reference else ("", "")
            writer.writerow([name, mean * factor, std * factor, *paper, n_defined[key]])
    with atomic_path(paths["per_sample"]) as tmp, open(tmp, "w", newline="") as f:
        keys = [key for key, _, _ in TABLE_METRICS]
        writer = csv.writer(f)
        writer.writerow(["sample", *keys])
        for i, index in enumerate(result.sample_index):
            writer.writerow([int(index), *(float(result.per_sample[k][i]) for k in keys)])
    plot_reconstruction(
        result.example["centroids_mm"],
        result.example["target"],
        result.example["estimate"],
        paths["figure"],
        source_mask=result.example["source_mask"],
        surface=result.example.get("surface"),
        title=f"{label}: {result.split} sample {int(result.sample_index[0])}",
    )
    return paths
