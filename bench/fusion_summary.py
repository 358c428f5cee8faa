"""Summarise the fusion study (issue 16) for ``bench/RESULTS.md`` § fusion.

Reads what ``bench/fusion_train.sh`` wrote (``OUT/<method>/`` runs and
``OUT/benchmark/per_sample.csv``) and prints, as markdown:

1. each network's training budget (parameters, steps, epochs, minutes, best validation
   loss) from its checkpoint and ``train_log.csv``;
2. per configuration, the mean ± std of localisation error (LE) and precision of every
   method, on the same test samples;
3. per configuration, the paired differences (mean ± standard error, samples where both
   are defined) of each fused network to each single modality, and whether the issue's
   target holds there: fused better on LE and on precision than both single modalities,
   with a lower LE standard deviation, and the same paired differences in recall and nMSE;
4. where any method left samples out of its means (empty reconstructions under the paper
   protocol), how many, per configuration;
5. when the benchmark has MMDF-ESI on one modality (``mmdf_esi@eeg``, ``mmdf_esi@meg``:
   the same network less one encoder, ``fairesi.models.mmdf_esi``), the same paired
   differences of MMDF-ESI against them: what fusion adds within one architecture.

    python bench/fusion_summary.py runs/fusion [--figure fusion.png]
    python bench/fusion_summary.py runs/fusion --benchmark runs/fusion/bench-a \
        --benchmark runs/fusion/bench-b

``--benchmark`` (repeatable) reads the benchmark's ``per_sample.csv`` from those folders
instead of ``OUT/benchmark``: one benchmark run split by methods (``fairesi benchmark
--methods``) over the same configurations, seed and sample count, e.g. to run the parts on
two cores. ``--figure`` also draws LE and precision (mean, with the std as error bar) of
every method per configuration.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

FUSED = ("mmdf_esi", "fair_esi")
SINGLE = ("fair_esi@eeg", "fair_esi@meg")
#: MMDF-ESI on one modality: the fusion ablation of MMDF-ESI (same network, one encoder).
ABLATION = ("mmdf_esi@eeg", "mmdf_esi@meg")
METRICS = ("precision", "recall", "le_mm", "nmse")
LABELS = {
    "mmdf_esi": "MMDF-ESI",
    "fair_esi": "FAIR-ESI fused",
    "fair_esi@eeg": "FAIR-ESI EEG",
    "fair_esi@meg": "FAIR-ESI MEG",
    "mmdf_esi@eeg": "MMDF-ESI EEG",
    "mmdf_esi@meg": "MMDF-ESI MEG",
    "sLORETA": "sLORETA (EEG+MEG)",
}


def read_per_sample(path: Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(configuration, method) -> metric -> per-sample values (NaN where undefined)."""
    table: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            config = f"{float(row['snr_db']):g} dB, {row['n_rings']} ring(s)"
            for metric in METRICS:
                value = row[metric]
                table[config, row["method"]][metric].append(float(value) if value else math.nan)
    return {k: {m: np.asarray(v) for m, v in d.items()} for k, d in table.items()}


def merge_per_sample(
    parts: list[dict[tuple[str, str], dict[str, np.ndarray]]],
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """One table from :func:`read_per_sample` of several benchmark runs on the same samples.

    Raises
    ------
    ValueError
        If a (configuration, method) appears in two parts, or the parts' sample counts differ.
    """
    merged: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for part in parts:
        for key, values in part.items():
            if key in merged:
                raise ValueError(f"{key[1]} on {key[0]} is in two benchmark runs")
            merged[key] = values
    counts = {len(v["le_mm"]) for v in merged.values()}
    if len(counts) > 1:
        raise ValueError(f"the benchmark runs have different sample counts: {sorted(counts)}")
    return merged


def budget_rows(out: Path) -> list[str]:
    """Markdown rows: network, parameters, steps, epochs, minutes, best validation loss."""
    import torch

    from fairesi.train import read_checkpoint

    rows = []
    for method in (*FUSED, *SINGLE, *ABLATION):
        run = out / method.replace("@", "_")
        last = run / "last.pt"
        if not last.is_file():
            continue
        payload = read_checkpoint(last)
        n_params = sum(
            v.numel() for k, v in payload["state_dict"].items() if isinstance(v, torch.Tensor)
        )
        with open(run / "train_log.csv", newline="") as f:
            log = list(csv.DictReader(f))
        epochs = [r for r in log if r["kind"] == "epoch"]
        minutes = _wall_seconds(log) / 60
        progress = payload["progress"]
        best = min((float(r["val_loss"]) for r in epochs), default=math.nan)
        rows.append(
            f"| {LABELS[method]} | {n_params / 1e6:.2f} M | {progress['step']} | "
            f"{len(epochs)} | {minutes:.0f} | {best:.1f} |"
        )
    return rows


def _wall_seconds(log: list[dict[str, str]]) -> float:
    """Training seconds of a run from its log's ``wall_s`` (which restarts at 0 on every
    ``--resume``): the sum of each session's last value."""
    total, last = 0.0, 0.0
    for row in log:
        if not row["wall_s"]:
            continue
        wall = float(row["wall_s"])
        if wall < last:  # a resumed session started
            total += last
        last = wall
    return total + last


def _mean_std(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return f"{v.mean():.2f} ± {v.std():.2f}" if v.size else "n/a"


def _fused_minus_single(
    data: dict[tuple[str, str], dict[str, np.ndarray]],
    config: str,
    fused: str,
    metric: str,
    singles: tuple[str, str] = SINGLE,
) -> list[tuple[float, float]]:
    """Paired (mean, s.e.) of ``fused - single`` for each single modality (``singles``:
    EEG, MEG) over the samples both define (:func:`fairesi.metrics.paired_difference`), in
    the metric's table units (precision and recall in points, nMSE in 1e-4, LE in mm)."""
    from fairesi.metrics import paired_difference

    scale = {"precision": 100, "recall": 100, "nmse": 1e4}.get(metric, 1)
    pairs = []
    for single in singles:
        mean, se, _ = paired_difference(data[config, single], data[config, fused])[metric]
        pairs.append((mean * scale, se * scale))
    return pairs


def _methods(data: dict[tuple[str, str], dict[str, np.ndarray]], configs: list[str]) -> list[str]:
    """The methods the benchmark holds, in the tables' order."""
    order = (*FUSED, *SINGLE, *ABLATION, "sLORETA")
    return [m for m in order if any((c, m) in data for c in configs)]


def _target_rows(
    data: dict[tuple[str, str], dict[str, np.ndarray]],
    configs: list[str],
    fused_methods: tuple[str, ...],
    singles: tuple[str, str],
) -> tuple[list[str], dict[str, int]]:
    """Markdown header and rows of the paired LE and precision differences of each fused
    network to each of ``singles`` (EEG, MEG), with the target's verdict per row (better
    on both metrics than both, and a lower LE std), and the count of rows that meet it."""
    lines = [
        "| configuration | fused | LE - EEG | LE - MEG | precision - EEG | precision - MEG | "
        "LE std below both | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met: dict[str, int] = defaultdict(int)
    for config in configs:
        for fused in fused_methods:
            if (config, fused) not in data:
                continue
            cells, better = [], True
            for metric, sign in (("le_mm", -1), ("precision", 1)):
                for mean, se in _fused_minus_single(data, config, fused, metric, singles):
                    cells.append(f"{mean:+.2f} ± {se:.2f}")
                    better &= bool(sign * mean > 0)
            stds = {m: np.nanstd(data[config, m]["le_mm"]) for m in (fused, *singles)}
            lower = all(stds[fused] < stds[s] for s in singles)
            ok = better and lower
            met[fused] += ok
            lines.append(
                f"| {config} | {LABELS[fused]} | " + " | ".join(cells)
                + f" | {'yes' if lower else 'no'} | {'met' if ok else 'not met'} |"
            )  # fmt: skip
    return lines, met


def _recall_nmse_rows(
    data: dict[tuple[str, str], dict[str, np.ndarray]],
    configs: list[str],
    fused_methods: tuple[str, ...],
    singles: tuple[str, str],
) -> list[str]:
    """Markdown rows of the paired recall and nMSE differences, fused - each of ``singles``."""
    lines = []
    for config in configs:
        for fused in fused_methods:
            if (config, fused) not in data:
                continue
            cells = [
                f"{mean:+.2f} ± {se:.2f}"
                for metric in ("recall", "nmse")
                for mean, se in _fused_minus_single(data, config, fused, metric, singles)
            ]
            lines.append(f"| {config} | {LABELS[fused]} | " + " | ".join(cells) + " |")
    return lines


def summary(out: Path, data: dict[tuple[str, str], dict[str, np.ndarray]]) -> str:
    """The markdown of the summary's tables (``data``: :func:`read_per_sample` of ``out``)."""
    configs = list(dict.fromkeys(c for c, _ in data))
    methods = _methods(data, configs)
    lines = ["Training budget (each network one run, same mixture, recipe and seed):", ""]
    lines += ["| network | parameters | steps | epochs | minutes | best val loss |"]
    lines += ["|---|---|---|---|---|---|", *budget_rows(out), ""]
    n = len(next(iter(data.values()))["le_mm"])
    for metric, name in (("le_mm", "LE (mm)"), ("precision", "Precision")):
        lines += [f"{name}, mean ± std over {n} test samples per configuration:", ""]
        lines += ["| configuration | " + " | ".join(LABELS[m] for m in methods) + " |"]
        lines += ["|---" * (len(methods) + 1) + "|"]
        for config in configs:
            scale = 100 if metric == "precision" else 1
            cells = [_mean_std(data[config, m][metric] * scale) for m in methods]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    left_out = {
        (c, m): int((~np.isfinite(data[c, m]["le_mm"])).sum())
        for c in configs
        for m in methods
        if (c, m) in data
    }
    if any(left_out.values()):
        lines += [
            "Samples left out of the means (empty reconstruction, no region above the "
            f"threshold; of {n} per configuration):",
            "",
            "| configuration | " + " | ".join(LABELS[m] for m in methods) + " |",
            "|---" * (len(methods) + 1) + "|",
        ]
        for config in configs:
            cells = [str(left_out.get((config, m), "")) for m in methods]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Paired differences, fused - single (mean ± s.e.; LE: negative is better, precision "
        "in points: positive is better); target: fused better than both single modalities "
        "on LE and precision, and a lower LE std:",
        "",
    ]
    target_rows, met = _target_rows(data, configs, FUSED, SINGLE)
    lines += [*target_rows, ""]
    for fused in FUSED:
        lines.append(
            f"- {LABELS[fused]}: target met in {met[fused]} of {len(configs)} configurations."
        )
    lines += [
        "",
        "Paired differences in recall (points, positive is better) and nMSE (×1e-4, negative "
        "is better), fused - single (mean ± s.e.; not part of the target):",
        "",
        "| configuration | fused | recall - EEG | recall - MEG | nMSE - EEG | nMSE - MEG |",
        "|---|---|---|---|---|---|",
        *_recall_nmse_rows(data, configs, FUSED, SINGLE),
    ]
    if all((c, m) in data for c in configs for m in ("mmdf_esi", *ABLATION)):
        rows, met = _target_rows(data, configs, ("mmdf_esi",), ABLATION)
        lines += [
            "",
            "The fusion ablation: MMDF-ESI - MMDF-ESI on one modality (the same network less "
            "one encoder; paired mean ± s.e., signs as above; 'better' as the target, against "
            "MMDF-ESI on each modality):",
            "",
            *rows,
            "",
            f"- MMDF-ESI better than MMDF-ESI on either modality alone in {met['mmdf_esi']} of "
            f"{len(configs)} configurations.",
            "",
            "Recall and nMSE, MMDF-ESI - MMDF-ESI on one modality (paired mean ± s.e.):",
            "",
            "| configuration | fused | recall - EEG | recall - MEG | nMSE - EEG | nMSE - MEG |",
            "|---|---|---|---|---|---|",
            *_recall_nmse_rows(data, configs, ("mmdf_esi",), ABLATION),
        ]
    return "\n".join(lines) + "\n"


def figure(data: dict[tuple[str, str], dict[str, np.ndarray]], path: Path) -> None:
    """Save LE and precision, mean ± std per configuration and method, as one PNG
    (``data``: :func:`read_per_sample`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(c for c, _ in data))
    methods = _methods(data, configs)
    fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    width = 0.8 / len(methods)
    x = np.arange(len(configs))
    for ax, (metric, name, scale) in zip(
        axes, (("le_mm", "LE (mm)", 1), ("precision", "Precision (%)", 100)), strict=True
    ):
        for j, method in enumerate(methods):
            values = [data[c, method][metric] * scale for c in configs]
            means = [np.nanmean(v) for v in values]
            stds = [np.nanstd(v) for v in values]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=2, label=LABELS[method])  # fmt: skip
        ax.set_ylabel(name)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(methods), fontsize=8, loc="upper right")
    axes[1].set_xticks(x, configs, rotation=20, fontsize=8)
    n = len(next(iter(data.values()))["le_mm"])
    axes[0].set_title(f"SimEEGMEG, 1 source: mean ± std over {n} test samples per configuration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the summary of ``OUT`` (and save the figure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the OUT folder of bench/fusion_train.sh")
    parser.add_argument(
        "--benchmark",
        type=Path,
        action="append",
        help="a benchmark folder holding per_sample.csv; repeat to merge runs split by "
        "methods (default: OUT/benchmark)",
    )
    parser.add_argument("--figure", type=Path, help="also save the figure here (.png)")
    args = parser.parse_args(argv)
    folders = args.benchmark or [args.out / "benchmark"]
    try:
        data = merge_per_sample([read_per_sample(d / "per_sample.csv") for d in folders])
    except (OSError, ValueError) as err:
        parser.error(str(err))
    print(summary(args.out, data), end="")
    if args.figure is not None:
        figure(data, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
