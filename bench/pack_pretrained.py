"""Pack a training checkpoint as a shipped pretrained model, with its model card (issue 15).

Writes ``python/fairesi/resources/pretrained/NAME.pt`` (the checkpoint's configuration and
weights in float16, no optimizer state, and the card) and ``docs/models/NAME.md`` (the card
for people). The card's metrics are measured here, on the packed (float16) weights: every
configuration the model was trained on (each row of its training ``mixture``), under both
protocols, on ``--n`` freshly synthesised test samples of seed ``training seed + 1000``
(:func:`fairesi.evaluate.evaluate_pretrained`'s default, so none was seen in training).
The training budget comes from the run's ``train_log.csv`` (its wall time summed over
every resumed session, times the run's thread count).

Run (installed package, from the repository root)::

    python bench/pack_pretrained.py runs/pretrained/meg/best.pt meg --n 256 --threads 2 \\
        --hardware "2-core x86-64 CPU, 1 thread per run, torch 2.13.0+cpu"
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from fairesi.data import SimConfig
from fairesi.evaluate import TABLE_METRICS, evaluate_pretrained, pretrained_rows
from fairesi.io import atomic_path
from fairesi.models import Pretrained, build_model, pretrained
from fairesi.models.registry import resolved_hyper
from fairesi.paper import paper_reference
from fairesi.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]

#: The montages of the embedded default head model, by modality.
MONTAGES = {"meg": "Neuromag-306 (MEG)", "eeg": "GSN-HydroCel-256 (EEG)"}

#: What every card says the model cannot do (the issue's "known limits").
LIMITS = (
    "Trained on simulated data only: a template head (the embedded fsaverage5 head model, "
    "994 DeepSIF regions), never a patient's own anatomy.",
    "Takes exactly the channels of its montage, in any order (`fairesi localize` picks "
    "them by name); other montages are refused (train your own: docs/own-montage.md).",
    "Inputs are windows of exactly n_times samples at the waveform bank's sampling rate, "
    "normalised as in training; outputs are normalised source activity per region (no "
    "physical unit).",
    "Trained under the paper protocol (source centres in every region): its test samples "
    "lie at locations seen in training, with unseen waveforms and noise; the strict rows "
    "below use our noise definition and full rings, not unseen locations.",
)


def growth_limit(data: dict[str, Any]) -> str:
    """The known-limits line on the patch shapes the model was trained and scored on.

    Parameters
    ----------
    data : dict
        The model's recorded data configuration (``config["data"]``); a paper-protocol
        record without ``patch_growth`` (trained before the field) reads as 'random'.

    Returns
    -------
    line : str
        One sentence naming the growth its paper-protocol rows use.
    """
    growth = SimConfig.from_dict(dict(data)).patch_growth
    if growth == "candidates":
        return (
            "Its paper-protocol rows use DeepSIF's candidate patches (about 15 fixed shapes "
            "per centre, `patch_growth='candidates'`), as it was trained: test extents are "
            "shapes it met in training at the same centre."
        )
    if growth == "random":
        return (
            "Its paper-protocol rows use the patch growth it was trained with, each "
            "sample's outer ring grown afresh at random (`patch_growth='random'`, the "
            "paper protocol before 2026-12-01), not DeepSIF's fixed candidate patches that "
            "the paper protocol now draws; on those its paper-protocol figures differ."
        )
    return "Its patches are the full neighbour rings of their centre (`patch_growth='rings'`)."


#: Recall above precision by this many points (paper protocol) counts as an over-wide map.
WIDE_MAP_POINTS = 10.0


def wide_map_limit(metrics: list[dict[str, Any]], points: float = WIDE_MAP_POINTS) -> str | None:
    """The known-limits line for maps wider than the simulated sources, from measured rows.

    Under the paper protocol a map that also covers regions around the true patch keeps
    its recall and loses precision, so precision far below recall on a row says the model
    over-extends its sources there (``bench/rule_scale_probe.py`` counts the regions).

    Parameters
    ----------
    metrics : list of dict
        The card's metrics rows: ``configuration``, ``protocol`` and ``precision`` /
        ``recall`` as (mean, std) in percent.
    points : float
        The smallest recall - precision gap, in percentage points, that counts.

    Returns
    -------
    line : str or None
        One sentence naming every such paper-protocol row with its precision and recall,
        or None when no row has the gap.
    """
    wide = [
        row
        for row in metrics
        if row["protocol"] == "paper" and row["recall"][0] - row["precision"][0] >= points
    ]
    if not wide:
        return None
    rows = "; ".join(
        f"{row['configuration']}: {row['precision'][0]:.1f}% against {row['recall'][0]:.1f}%"
        for row in wide
    )
    return (
        "Its maps are wider than the simulated sources: under the paper protocol its "
        f"precision is {points:g} or more points below its recall on {len(wide)} of the "
        f"{sum(row['protocol'] == 'paper' for row in metrics)} configurations ({rows}), "
        "so it also reconstructs regions around the true patch."
    )


def training_budget(run_dir: Path, threads: int) -> dict[str, Any]:
    """Wall time, CPU hours, steps and samples of a run, from its ``train_log.csv``.

    Parameters
    ----------
    run_dir : Path
        The training output directory.
    threads : int
        CPU threads the run used (CPU hours = wall hours x threads).

    Returns
    -------
    dict
        ``wall_hours`` (every session summed: a resumed session restarts ``wall_s``),
        ``cpu_hours``, ``sessions``, ``steps``, ``epochs``.
    """
    rows = list(csv.DictReader(open(run_dir / "train_log.csv")))
    total, last, sessions = 0.0, 0.0, 1
    for row in rows:
        wall = float(row["wall_s"])
        if wall < last:  # a new session
            total += last
            sessions += 1
        last = wall
    total += last
    return {
        "wall_hours": total / 3600,
        "cpu_hours": total * threads / 3600,
        "sessions": sessions,
        "steps": int(rows[-1]["step"]) if rows else 0,
        "epochs": int(rows[-1]["epoch"]) + 1 if rows else 0,
    }


def hyper_record(model: Pretrained, config: dict[str, Any]) -> dict[str, Any]:
    """What the card says about the network's hyper-parameters.

    Parameters
    ----------
    model : fairesi.models.Pretrained
        The packed model, loaded as a user loads it.
    config : dict
        Its checkpoint's configuration.

    Returns
    -------
    dict
        ``resolved_hyper`` (every hyper-parameter it is rebuilt with, data sizes left out),
        ``today_default`` (those of a network built today from what its run was given: the
        ``preset`` and the explicit overrides) and ``differs`` (name -> the model's value,
        where the two disagree: defaults that changed after the run began).
    """
    resolved = resolved_hyper(model.model)
    today = resolved_hyper(
        build_model(
            config["model"]["name"],
            model.head_model,
            config["head_model"]["modality"],
            int(config["data"]["n_times"]),
            **config["model"]["hyper"],
        )
    )
    differs = {k: v for k, v in resolved.items() if today.get(k) != v}
    return {"resolved_hyper": resolved, "today_default": today, "differs": differs}


def hyper_sentence(record: dict[str, Any]) -> str:
    """The card's sentence on the hyper-parameters (a :func:`hyper_record`), in Markdown."""
    text = f"Rebuilt with every hyper-parameter `{json.dumps(record['resolved_hyper'])}`; "
    if not record["differs"]:
        return text + "the same as a network built today from its preset and overrides."
    changed = ", ".join(
        f"`{k}={v!r}` (today's default `{record['today_default'][k]!r}`)"
        for k, v in record["differs"].items()
    )
    return (
        text + f"where it differs from a network built today from its preset and overrides: "
        f"{changed} (it predates those defaults and keeps the network it was trained as)."
    )


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown (docs/models/NAME.md)."""
    train, data = card["training"], card["data"]
    lines = [
        f"# Pretrained model `{card['name']}`",
        "",
        f"FAIR-ESI (`{card['model']}`, hyper-parameters `{json.dumps(card['hyper'])}`) "
        f"for the {card['montage']} montage of the embedded default head model "
        f"({card['n_channels']} channels, {card['n_regions']} regions, {data['n_times']} "
        "samples per window). Load it with `fairesi.models.pretrained"
        f"({card['name']!r})`; score it with `fairesi evaluate --pretrained {card['name']}`; "
        "`fairesi localize REC.fif` picks it for a recording with these channels.",
        "",
        hyper_sentence(card),
        "",
        "## Training",
        "",
        f"- Data: {data['dataset']} under the {data['protocol']} protocol, a mixture of "
        f"the configurations (r dB / N_s / N_n) {', '.join(card['configurations'])} "
        "(sample i from configuration i mod "
        f"{len(card['configurations'])}), new realisations every epoch; seed {train['seed']}.",
        f"- Recipe: batch {train['batch_size']}, Adam lr {train['lr']} halved on a "
        f"validation plateau, weight decay {train['weight_decay']}; best checkpoint by "
        f"validation loss (epoch {train['best_epoch']}, step {train['best_step']}).",
        f"- Budget: {train['steps']} steps ({train['steps'] * train['batch_size']:,} "
        f"samples), {train['wall_hours']:.2f} h wall in {train['sessions']} session(s), "
        f"{train['cpu_hours']:.2f} CPU hours; {card['hardware']}.",
        f"- Packed {card['packed']}; weights stored in float16.",
        "",
        "## Metrics (Table II units)",
        "",
        f"{card['n_eval']} fresh test samples per row (seed {card['eval_seed']}), mean ± "
        "std over samples. Paper protocol: DeepSIF's signed Otsu rule, empty "
        "reconstructions left out of the means (counted in 'empty'). Strict protocol: "
        "our noise definition, full rings, scale-free rule.",
        "",
        "| r / N_s / N_n | protocol | "
        + " | ".join(name for _, name, _ in TABLE_METRICS)
        + " | empty | paper FAIR-ESI precision / LE |",
        "|---" * (len(TABLE_METRICS) + 4) + "|",
    ]
    for row in card["metrics"]:
        cells = [f"{row[k][0]:.2f} ± {row[k][1]:.2f}" for k, _, _ in TABLE_METRICS]
        paper = row.get("paper")
        ref = f"{paper['precision'][0]:.2f} / {paper['le_mm'][0]:.2f}" if paper else "-"
        if row["protocol"] != "paper":
            ref = "-"
        lines.append(
            f"| {row['configuration']} | {row['protocol']} | {' | '.join(cells)} | "
            f"{row['n_empty']} | {ref} |"
        )
    lines += ["", "## Known limits", ""] + [f"- {limit}" for limit in card["limits"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Pack, evaluate and write the model and its card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="best.pt of the training run")
    parser.add_argument("name", help="model name: 'meg' or 'eeg'")
    parser.add_argument("--n", type=int, default=256, help="test samples per row (256)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--hardware", required=True, help="where it was trained, in words")
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "python/fairesi/resources/pretrained"
    )
    parser.add_argument("--card-dir", type=Path, default=ROOT / "docs/models")
    parser.add_argument("--bank", default="default", help="waveform bank of the test samples")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    payload = read_checkpoint(args.checkpoint)
    config = payload["config"]
    state = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    run_cfg = config["train"]
    budget = training_budget(args.checkpoint.parent, int(run_cfg["run"]["threads"] or 1))
    head = config["head_model"]
    card: dict[str, Any] = {
        "name": args.name,
        "model": config["model"]["name"],
        "hyper": config["model"]["hyper"],
        "montage": MONTAGES.get(head["modality"], head["modality"]),
        "n_channels": len(head.get("ch_names", [])),
        "n_regions": head.get("n_regions"),
        "data": dict(config["data"]),
        "configurations": [],
        "hardware": args.hardware,
        "packed": datetime.date.today().isoformat(),
        "training": {
            "seed": run_cfg["seed"],
            **{k: run_cfg["optim"][k] for k in ("batch_size", "lr", "weight_decay")},
            "best_epoch": payload["progress"]["epoch"],
            "best_step": payload["progress"]["step"],
            **budget,
        },
        "n_eval": args.n,
        "eval_seed": int(run_cfg["seed"]) + 1000,
        "metrics": [],
        "limits": [*LIMITS, growth_limit(config["data"])],
    }
    card["data"]["dataset"] = {"meg": "SimMEG", "eeg": "SimEEG"}.get(
        config["data"]["modality"], config["data"]["modality"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"config": config, "state_dict": state, "card": card}, Path(tmp) / "m.pt")
        card.update(hyper_record(pretrained("m", directory=tmp), config))
        print(f"rebuilt with {card['resolved_hyper']}; differs from today's defaults: "
              f"{card['differs'] or 'nothing'}", flush=True)  # fmt: skip
        card["configurations"] = pretrained_rows("m", directory=tmp)
        for row in card["configurations"]:
            for protocol in ("paper", "strict"):
                result = evaluate_pretrained(
                    "m",
                    n=args.n,
                    protocol=protocol,
                    bank=args.bank,
                    directory=tmp,
                    configuration=row,
                    progress=False,
                )
                entry = {
                    "configuration": row,
                    "protocol": protocol,
                    "n": args.n,
                    "n_empty": result.n_empty,
                    **{
                        k: (result.summary[k][0] * f, result.summary[k][1] * f)
                        for k, _, f in TABLE_METRICS
                    },
                }
                r, n_s, n_n = row.split("/")
                entry["paper"] = paper_reference(
                    {**config["data"], "mixture": (), "snr_db": r, "n_sources": n_s, "n_rings": n_n}
                )
                card["metrics"].append(entry)
                print(
                    f"{row} {protocol}: "
                    + ", ".join(f"{k} {entry[k][0]:.2f}" for k, _, _ in TABLE_METRICS),
                    flush=True,
                )
    if (line := wide_map_limit(card["metrics"])) is not None:
        card["limits"].append(line)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.card_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out_dir / f"{args.name}.pt") as tmp_path:
        torch.save({"config": config, "state_dict": state, "card": card}, tmp_path)
    with atomic_path(args.card_dir / f"{args.name}.md") as tmp_path:
        tmp_path.write_text(card_markdown(card))
    size = (args.out_dir / f"{args.name}.pt").stat().st_size / 2**20
    print(
        f"wrote {args.out_dir / (args.name + '.pt')} ({size:.2f} MiB) and "
        f"{args.card_dir / (args.name + '.md')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
