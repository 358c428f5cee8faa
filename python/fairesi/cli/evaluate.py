"""``fairesi evaluate``: Table II metrics of a trained checkpoint on its test split."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="compute precision, recall, LE, SD and nMSE of a checkpoint on its test split",
        description="Rebuild the checkpoint's data configuration (same seed, so the same "
        "samples), run the model on a split and write metrics.md, metrics.csv (mean ± std, "
        "paper Table II units), per_sample.csv and reconstruction.png (one sample, ground "
        "truth vs estimate). The Markdown table is printed, with the paper's FAIR-ESI row "
        "beside it when the configuration is one of Table II's.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="checkpoint file (best.pt or last.pt); or --pretrained NAME",
    )
    parser.add_argument(
        "--pretrained",
        metavar="NAME",
        default=None,
        help="score a model that ships with fairesi ('meg', 'eeg') on freshly synthesised "
        "test samples (--seed, --n, --protocol, --bank) instead of a checkpoint",
    )
    parser.add_argument(
        "--config",
        metavar="R/NS/NN",
        default=None,
        help="with --pretrained: test samples of this configuration (SNR dB / sources / "
        "rings, e.g. '5/1/2'); default: each configuration the model was trained on, one "
        "report per configuration",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --pretrained: seed of the fresh samples (default: training seed + 1000)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split to evaluate (default: test)",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="evaluate only the first N samples of the split (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: eval-SPLIT next to the checkpoint)",
    )
    parser.add_argument(
        "--head-model",
        default=None,
        help="'default', 'toy' or a head-model file; must match the checkpoint's regions and "
        "channels (default: the checkpoint's own)",
    )
    parser.add_argument(
        "--bank",
        default=None,
        help="waveform bank: 'default', a file, or 'synthetic' (default: the checkpoint's own)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="samples per forward pass (default: 32)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.add_argument(
        "--draw",
        type=int,
        default=0,
        help="realisation of the samples: 0 (default) is the split itself; another value "
        "keeps their source locations and draws new waveforms, SNRs and noise (with "
        "--split train: seen locations, unseen data)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="EVAL",
        help="an earlier evaluation (its directory or per_sample.csv) of the same samples: "
        "also print and write the paired difference (this - that, mean ± standard error)",
    )
    parser.add_argument(
        "--protocol",
        choices=("strict", "paper"),
        default=None,
        help="evaluate under this protocol: 'paper' (the FAIR-ESI paper's, following "
        "DeepSIF's code: shared centres, its noise definition and patch growth, peaks "
        "anywhere, its signed Otsu rule, empty reconstructions left out) or 'strict' "
        "(ours); default: the checkpoint's own",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run, output_kinds={"out": "folder"})


def run(args: argparse.Namespace) -> int:
    """Run ``fairesi evaluate``; returns the exit code."""
    import torch

    from fairesi.evaluate import evaluate_checkpoint

    if (args.checkpoint is None) == (args.pretrained is None):
        raise ValueError("give a checkpoint or --pretrained NAME (one of them)")
    if args.pretrained is not None:
        return _run_pretrained(args)
    earlier = _read_against(args, args.n)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        n=args.n,
        head_model=args.head_model,
        bank=args.bank,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        draw=args.draw,
        protocol=args.protocol,
    )
    suffix = f"-{args.protocol}" if args.protocol else ""
    out_dir = args.out or args.checkpoint.parent / f"eval-{args.split}{suffix}"
    _report(args, result, out_dir, args.checkpoint.name, earlier)
    return 0


def _run_pretrained(args: argparse.Namespace) -> int:
    """``fairesi evaluate --pretrained NAME``: a shipped model on fresh samples."""
    import torch

    from fairesi.evaluate import evaluate_pretrained, pretrained_rows

    rows = [args.config] if args.config else pretrained_rows(args.pretrained)
    n = 256 if args.n is None else args.n
    if args.against is not None and len(rows) != 1:
        raise ValueError(
            f"--against compares one set of samples: give --config (the model was "
            f"trained on {len(rows)} configurations: {', '.join(rows)})"
        )
    earlier = _read_against(args, n)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out_dir = args.out or Path(f"eval-pretrained-{args.pretrained}")
    for row in rows:
        result = evaluate_pretrained(
            args.pretrained,
            n=n,
            seed=args.seed,
            protocol=args.protocol,
            bank=args.bank or "default",
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.no_progress,
            configuration=row,
        )
        label = f"pretrained {args.pretrained}"
        where = out_dir if len(rows) == 1 else out_dir / row.replace("/", "_")
        print(f"\n{label}, r/N_s/N_n = {row}, {result.protocol} protocol:")
        _report(args, result, where, label, earlier)
    return 0


def _read_against(args: argparse.Namespace, n: int | None):
    """``--against``'s (sample index, per-sample metrics), or None without it; refused
    before the (long) evaluation when the sample count ``n`` is known and differs."""
    import numpy as np

    from fairesi.evaluate import read_per_sample

    if args.against is None:
        return None
    earlier = read_per_sample(args.against)
    if n is not None and not np.array_equal(earlier[0], np.arange(n)):
        raise ValueError(_other_samples(args, earlier[0], n))
    return earlier


def _report(args: argparse.Namespace, result, out_dir: Path, label: str, earlier) -> None:
    """Write and print one evaluation's report, with the paired difference to
    ``earlier`` (:func:`_read_against`) when given."""
    import numpy as np

    from fairesi.evaluate import format_paired_table, write_report

    appendix = ""
    if earlier is not None:
        index, per_sample = earlier
        if not np.array_equal(index, result.sample_index):
            raise ValueError(_other_samples(args, index, len(result.sample_index)))
        appendix = (
            f"Paired difference on the same samples (this - {args.against}), mean ± "
            "standard error:\n\n"
            + format_paired_table(per_sample, {label: result.per_sample}, base_label="earlier")
        )
    paths = write_report(result, out_dir, label=label, appendix=appendix)
    print(result.table(label=label), end="")
    if appendix:
        print("\n" + appendix, end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def _other_samples(args: argparse.Namespace, index, n: int) -> str:
    return (
        f"{args.against} holds other samples ({len(index)}) than this evaluation (the first "
        f"{n} of the {args.split} split); pair evaluations of the same split and --n"
    )
