"""``fairesi train``: train FAIR-ESI (or a baseline) on simulated paired data."""

from __future__ import annotations

import argparse
import ast
import logging
import os
from pathlib import Path
from typing import Any

from fairesi.cli import FairesiUserError

# (flag, config field, type, help); every flag defaults to "not given" so that the preset,
# then the TOML file, then the flags decide each value. "{default}" in a help text is
# filled in from the configuration dataclasses (TrainConfig.flat_defaults), so the help
# cannot drift from the code.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "model name in fairesi.models.MODELS (default: {default})"),
    (
        "--dataset",
        "dataset",
        str,
        "simulation preset: SimMEG, SimEEG or SimEEGMEG (default: {default})",
    ),
    ("--snr-db", "snr_db", float, "sensor SNR r in dB (default: {default})"),
    ("--n-sources", "n_sources", int, "number of sources N_s (default: {default})"),
    ("--n-rings", "n_rings", int, "neighbour rings N_n of each source patch (default: {default})"),
    (
        "--init-from",
        "init_from",
        str,
        "fine-tune: start from the weights of a checkpoint or of a shipped model "
        "('pretrained:meg', 'pretrained:eeg'); its model, hyper-parameters, trial length and "
        "dataset become this run's defaults (default: a random initialisation)",
    ),
    (
        "--mixture",
        "mixture",
        str,
        "train over several configurations at once: rows 'r/N_s/N_n' separated by commas "
        "(e.g. '-5/1/2,5/1/2,15/1/2,5/2/2,5/3/2,5/2/3', the SimMEG rows of the paper's "
        "Table II); sample i comes from row i mod the number of rows, and --snr-db, "
        "--n-sources and --n-rings are ignored (default: none)",
    ),
    (
        "--view",
        "view",
        str,
        "of SimEEGMEG: give the network only this modality's channels ('eeg' or 'meg') of "
        "the same samples (the single-modality rows of the fusion benchmark) (default: all)",
    ),
    (
        "--protocol",
        "protocol",
        str,
        "'strict' (ours) or 'paper' (the FAIR-ESI paper's, following DeepSIF's code: shared "
        "centres, its noise definition and patch growth, peaks anywhere; recorded in the "
        "checkpoint, and evaluation uses its signed Otsu rule) (default: {default})",
    ),
    (
        "--patch-growth",
        "patch_growth",
        str,
        "how a source patch grows from its centre: 'rings' (its full neighbour rings; the "
        "strict protocol's), 'candidates' (one of DeepSIF's fixed grown patches of the "
        "centre; the paper protocol's) or 'random' (a fresh random growth per sample; the "
        "paper protocol's before 'candidates') (default: the protocol's)",
    ),
    (
        "--n-times",
        "n_times",
        int,
        "samples per trial (default: the dataset's; SimMEG {default}, SimEEG 260)",
    ),
    (
        "--n-samples",
        "n_samples",
        int,
        "size of the whole simulated configuration, split 10:1:1 (default: {default})",
    ),
    (
        "--n-train-samples",
        "n_train_samples",
        int,
        "samples per training epoch, drawn from the training split (default: all)",
    ),
    ("--n-val-samples", "n_val_samples", int, "validation samples per epoch (default: all)"),
    (
        "--data",
        "data_path",
        str,
        "train on the HDF5 files of `fairesi simulate dataset` instead of synthesising: a "
        "directory with one file per split, or one training-split file (validation is then "
        "synthesised); the data configuration and seed are the files'",
    ),
    (
        "--seed",
        "seed",
        int,
        "seed of data synthesis, initialisation and dropout (default: {default})",
    ),
    (
        "--head-model",
        "head_model",
        str,
        "'default' (embedded fsaverage5 model), 'toy' (50-region test model) or a head-model "
        "file (default: {default})",
    ),
    (
        "--bank",
        "bank",
        str,
        "waveform bank: 'default' (fairesi.simulate.default_bank_path()), a file, or "
        "'synthetic' (analytic stand-in for tests/demos, not comparable with the paper) "
        "(default: {default})",
    ),
    (
        "--train-instants",
        "train_instants",
        int,
        "networks that map each time sample on its own (convdip, mmdf_esi): score K random "
        "time samples of each training window per step instead of all (loss scaled by "
        "n_times/K); validation scores whole windows (default: whole windows)",
    ),
    ("--batch-size", "batch_size", int, "samples per optimizer step (default: {default})"),
    ("--epochs", "max_epochs", int, "maximum number of epochs (default: {default})"),
    ("--lr", "lr", float, "Adam learning rate (default: {default})"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay (default: {default})"),
    (
        "--lr-patience",
        "lr_patience",
        int,
        "epochs without a better validation loss before the LR is halved (default: {default})",
    ),
    (
        "--early-stop-patience",
        "early_stop_patience",
        int,
        "epochs without a better validation loss before training stops (default: {default})",
    ),
    (
        "--checkpoint-every",
        "checkpoint_every",
        int,
        "write last.pt every this many steps, besides every epoch end (default: {default})",
    ),
    ("--max-steps", "max_steps", int, "stop (resumably) after this many optimizer steps in all"),
    (
        "--anneal-steps",
        "anneal_steps",
        int,
        "decay the learning rate linearly to zero over the last N steps before --max-steps "
        "(also on --resume)",
    ),
    (
        "--max-minutes",
        "max_minutes",
        float,
        "stop (resumably) after this many minutes of this invocation",
    ),
    (
        "--out",
        "out_dir",
        str,
        "output directory for checkpoints and logs (default: {default})",
    ),
    ("--device", "device", str, "cpu, cuda or cuda:N (default: {default})"),
    ("--threads", "threads", int, "number of CPU threads for torch (default: torch's choice)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a source-imaging network on simulated data",
        description="Train FAIR-ESI (or a baseline) on on-the-fly simulated paired data: Adam, "
        "LR halved on validation plateau, early stopping, checkpoints last.pt/best.pt and "
        "train_log.csv in --out. Values come from --preset, then --config, then the flags. "
        "Under torchrun (WORLD_SIZE > 1) training is DistributedDataParallel.",
        epilog="Example: fairesi train --preset tiny --out runs/tiny. Ctrl-C or SIGTERM "
        "(e.g. a batch scheduler's time limit) saves last.pt first (exit status 130 / 143); "
        "continue an interrupted run with: fairesi train --resume --out runs/tiny",
    )
    parser.add_argument(
        "--preset",
        default=argparse.SUPPRESS,
        help="starting configuration: 'tiny' (toy head model and synthetic bank, about a "
        "minute on 2 CPU cores), 'cpu' (SimMEG model sized for a CPU), 'wide' ('cpu' with "
        "FAIR-ESI's rank-512 size, for accuracy), 'paper' (paper settings)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML file of training settings, the flags' names with underscores "
        "(model_hyper as a table)",
    )
    parser.add_argument(
        "--hyper",
        action="append",
        metavar="KEY=VALUE",
        default=argparse.SUPPRESS,
        help="model hyper-parameter (repeatable), VALUE as a Python literal, e.g. --hyper embed_dim=64",
    )
    from fairesi.train.config import TrainConfig

    defaults = TrainConfig.flat_defaults()
    for flag, dest, kind, text in _OPTIONS:
        parser.add_argument(
            flag,
            dest=dest,
            type=kind,
            default=argparse.SUPPRESS,
            help=text.replace("{default}", str(defaults[dest])),
        )
    parser.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        default=argparse.SUPPRESS,
        help="disable mixed precision on CUDA (it is always off on CPU)",
    )
    parser.add_argument(
        "--bf16",
        dest="cpu_bf16",
        action="store_true",
        default=argparse.SUPPRESS,
        help="CPU: autocast matrix products and convolutions to bfloat16 (weights, loss and "
        "optimizer stay float32); about 2x faster steps on CPUs with AVX512-BF16 or AMX "
        "(also on --resume)",
    )
    parser.add_argument(
        "--release-memory",
        dest="keep_heap",
        action="store_false",
        default=argparse.SUPPRESS,
        help="CPU: let the C library return freed memory to the OS after each step (its "
        "default) instead of keeping it for the next step; slower steps, smaller resident "
        "memory between them (also on --resume)",
    )
    parser.add_argument(
        "--shared-centres",
        dest="disjoint_centres",
        action="store_false",
        default=argparse.SUPPRESS,
        help="draw every split's source centres from all regions (the paper's random split "
        "of one sample set) instead of disjoint per-split pools of regions (the default)",
    )
    parser.add_argument(
        "--redraw",
        dest="redraw",
        action="store_true",
        default=argparse.SUPPRESS,
        help="train each epoch on new realisations of the training samples (same source "
        "locations; fresh waveforms, SNRs, background and noise) instead of repeating them",
    )
    parser.add_argument(
        "--overwrite",
        dest="overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="let a new run replace the results of an earlier one in --out (refused otherwise)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="hide the progress bar",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CKPT",
        help="continue a run exactly where it stopped, from CKPT or from OUT/last.pt; only "
        "budgets, device, threads, output and progress options may change",
    )
    parser.set_defaults(func=run, output_kinds={"out_dir": "folder"})


def parse_hyper(items: list[str], *, literal_only: bool = False) -> dict[str, Any]:
    """``--hyper KEY=VALUE`` items as a dict of model hyper-parameters.

    Parameters
    ----------
    items : list of str
        ``KEY=VALUE`` strings; VALUE is read as a Python literal (``256``, ``'all'``,
        ``None``).
    literal_only : bool
        Refuse a VALUE that is not a literal; by default such a VALUE is kept as the
        string it is (``--hyper norm=all``).

    Returns
    -------
    hyper : dict
        KEY -> value, later items winning.

    Raises
    ------
    FairesiUserError
        An item without ``=`` or without a key, or (``literal_only``) a non-literal VALUE.
    """
    hyper: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise FairesiUserError(f"--hyper expects KEY=VALUE, got {item!r}")
        try:
            hyper[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if literal_only:
                raise FairesiUserError(
                    f"--hyper {item!r}: VALUE must be a Python literal"
                ) from None
            hyper[key] = text
    return hyper


#: The dataset preset of a stored configuration's modality.
_DATASET_OF_MODALITY = {"meg": "SimMEG", "eeg": "SimEEG", "eeg+meg": "SimEEGMEG"}


def _defaults_from_init(spec: str, overrides: dict[str, Any]) -> None:
    """``--init-from``: the source's model, hyper-parameters, dataset, trial length and head
    model, wherever the command line does not set them (they win over a preset's)."""
    from fairesi.models import stored_hyper
    from fairesi.train.checkpoint import init_source

    source, _ = init_source(spec)
    if "model" not in overrides:
        overrides["model"] = source["model"]["name"]
    if "model_hyper" not in overrides:
        overrides["model_hyper"] = stored_hyper(source["model"])
    data = source["data"]
    if "dataset" not in overrides and data.get("modality") in _DATASET_OF_MODALITY:
        overrides["dataset"] = _DATASET_OF_MODALITY[data["modality"]]
    if "n_times" not in overrides:
        overrides["n_times"] = int(data["n_times"])
    if "head_model" not in overrides:
        overrides["head_model"] = source["train"].get("head_model", "default")


def run(args: argparse.Namespace) -> int:
    """Run ``fairesi train``; returns the exit code."""
    from fairesi.train import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    given = vars(args)
    overrides = {name: given[name] for name in TrainConfig.flat_keys() if name in given}
    if "hyper" in given:
        overrides["model_hyper"] = parse_hyper(given["hyper"])
    if args.resume is not None:
        defining = sorted(set(overrides) - TrainConfig.RUN_CONTROL)
        defining += [k for k in ("preset", "config") if k in given]
        if defining:
            raise FairesiUserError(
                f"--resume continues the checkpoint's own configuration; these options cannot "
                f"change it: {defining}"
            )
        out_dir = Path(overrides.get("out_dir", TrainConfig.flat_defaults()["out_dir"]))
        resume = Path(args.resume) if args.resume else out_dir / "last.pt"
        metrics = train(resume=resume, **overrides)
        out = Path(overrides.get("out_dir", resume.parent))
    else:
        if given.get("init_from"):
            _defaults_from_init(given["init_from"], overrides)
        config = TrainConfig.from_sources(
            preset=given.get("preset"), toml_path=given.get("config"), overrides=overrides
        )
        metrics = train(config)
        out = Path(config.run.out_dir)
    summary = f"stopped ({metrics['stopped']}) after {metrics.get('step', 0)} steps"
    if "val_loss" in metrics:
        summary += (
            f", {metrics['epoch'] + 1} epochs: val loss {metrics['val_loss']:.4g} "
            f"(best {metrics['best_val_loss']:.4g})"
        )
        if metrics.get("val_loss_zero"):
            summary += f"; the all-zero estimate scores {metrics['val_loss_zero']:.4g}"
    if os.environ.get("RANK", "0") == "0":  # one summary under torchrun
        print(f"{summary}; checkpoints in {out}")
    return 0
