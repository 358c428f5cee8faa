"""``fairesi export``: write a trained checkpoint as a TorchScript archive or a .pt2 package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairesi.cli import FairesiUserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained checkpoint for fairesi-infer (TorchScript or AOTInductor)",
        description="Write the model of a training checkpoint, with the metadata inference "
        "needs (channel names and order, sampling rate, samples per epoch, regions and their "
        "centroids, normalisation, versions), as a TorchScript archive (.pt) or an "
        "AOTInductor package (.pt2) for the C++ runner fairesi-infer.",
    )
    parser.add_argument(
        "checkpoint",
        help="checkpoint file written by `fairesi train`, or pretrained:NAME for a model that "
        "ships with fairesi (pretrained:meg, pretrained:eeg)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output file (.pt for TorchScript, .pt2 for AOTI)"
    )
    parser.add_argument(
        "--format",
        choices=["torchscript", "aoti"],
        default=None,
        help="torchscript (fast to export, loads anywhere libtorch runs) or aoti "
        "(torch.export + AOTInductor: compiled for this machine's CPU or a GPU, takes "
        "minutes; no op library needed); default: aoti for a .pt2 output, else torchscript",
    )
    parser.add_argument(
        "--fused-op",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TorchScript: export calls to the fused refinement op (the runner then loads "
        "libfairesi_ops.so) or, with --no-fused-op, the pure-PyTorch refinement; default: "
        "the fused op when its library is built",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="aoti: device to compile for, cpu or cuda (default: cpu)",
    )
    parser.add_argument(
        "--head-model",
        default=None,
        help="head model the checkpoint was trained on: 'default', 'toy' or a head-model "
        "file (default: the one the checkpoint names)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint`` to ``args.output``; returns the exit code."""
    from fairesi.experiment import load_head_model
    from fairesi.export import export_checkpoint, read_metadata
    from fairesi.io import check_not_an_input, exclusive_output

    shipped = args.checkpoint.startswith("pretrained:")
    checkpoint = args.checkpoint if shipped else Path(args.checkpoint)
    if not shipped and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    output = Path(args.output)
    check_not_an_input(
        output, {"checkpoint": None if shipped else checkpoint, "--head-model": args.head_model}
    )
    fmt = args.format or ("aoti" if output.suffix == ".pt2" else "torchscript")
    if fmt == "aoti" and args.fused_op:
        raise FairesiUserError("--fused-op applies to TorchScript; AOTI compiles the refinement in")
    _check_device(args.device, compiling=fmt == "aoti")
    head_model = load_head_model(args.head_model) if args.head_model else None
    if fmt == "aoti":
        print(
            "fairesi export: compiling with AOTInductor (several minutes on a CPU) ...",
            file=sys.stderr,
        )
    with exclusive_output(output):
        export_checkpoint(
            checkpoint,
            output,
            format=fmt,
            fused_op=args.fused_op,
            device=args.device,
            head_model=head_model,
        )
    meta = read_metadata(output)
    needs = "needs the fairesi op library" if meta["needs_ops_library"] else "no op library needed"
    print(
        f"wrote {output} ({fmt}; {meta['modality']}: {len(meta['ch_names'])} channels x "
        f"{meta['n_times']} samples at {meta['sfreq']:g} Hz -> {meta['n_regions']} regions; "
        f"{needs})"
    )
    return 0


def _check_device(name: str, *, compiling: bool) -> None:
    """Refuse, before any work, a ``--device`` that is not cpu/cuda, or (``compiling``:
    an AOTI export, which compiles on that device) CUDA where this torch has none."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise FairesiUserError(f"--device {name!r} is not supported; use cpu or cuda")
    if compiling and device.type == "cuda" and not torch.cuda.is_available():
        raise FairesiUserError(
            f"--device {name!r} requested but CUDA is not available here (this torch "
            f"{torch.__version__} has no usable GPU); use --device cpu"
        )
