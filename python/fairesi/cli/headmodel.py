"""``fairesi headmodel``: build the default head model, or describe a head model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fairesi.cli import FairesiUserError

if TYPE_CHECKING:
    from fairesi.headmodel import HeadModel


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fairesi headmodel build`` and ``fairesi headmodel info``."""
    parser = subparsers.add_parser(
        "headmodel",
        help="build the default fsaverage5/994-region head model, or describe a head model",
        description="Head models: regions, adjacency and EEG/MEG lead fields.",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    build = actions.add_parser(
        "build",
        help="compute the fsaverage5/994-region EEG-256 + MEG-306 head model with MNE",
        description="Compute the default head model (see fairesi.headmodel.build) and save it. "
        "Takes about a minute on two cores.",
    )
    build.add_argument(
        "--out", required=True, type=Path, help="output .npz file (written atomically)"
    )
    build.add_argument(
        "--anatomy",
        type=Path,
        default=None,
        help="folder with DeepSIF's lh/rh.pial and lh/rh.nmm_994.annot (default: "
        "$FAIRESI_ANATOMY_DIR, else ../shared/data/deepsif-anatomy beside the source tree)",
    )
    build.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    build.add_argument("--verbose", action="store_true", help="show MNE's log")
    build.set_defaults(func=_build)

    info = actions.add_parser(
        "info",
        help="print a head model's sizes and build metadata",
        description="Describe a head model: regions, vertices, channels, gain ranges, metadata.",
    )
    info.add_argument(
        "model",
        nargs="?",
        default="default",
        help="'default' (embedded model), 'toy' or a head model .npz file (default: default)",
    )
    info.set_defaults(func=_info)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> int:
    from fairesi.headmodel.build import build_default_head_model

    if args.out.exists() and not args.force:
        raise FairesiUserError(f"{args.out} exists; pass --force to overwrite it")
    head_model = build_default_head_model(args.anatomy, verbose=args.verbose, progress=True)
    head_model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(_describe(head_model))
    return 0


def _info(args: argparse.Namespace) -> int:
    from fairesi.headmodel import HeadModel

    if args.model == "default":
        head_model = HeadModel.default()
    elif args.model == "toy":
        head_model = HeadModel.toy()
    else:
        head_model = HeadModel.load(args.model)
    print(_describe(head_model))
    return 0


def _describe(head_model: HeadModel) -> str:
    import json

    degree = np.asarray(head_model.adjacency.sum(axis=1)).ravel()
    lines = [
        f"head model {head_model.name!r}: {head_model.n_regions} regions, "
        f"{head_model.n_vertices} source vertices, region degree "
        f"{degree.min():.0f}-{degree.max():.0f} (mean {degree.mean():.1f})",
    ]
    for modality, lf in sorted(head_model.lead_fields.items()):
        types = {t: lf.ch_types.count(t) for t in dict.fromkeys(lf.ch_types)}
        norms = np.linalg.norm(lf.gain, axis=0)
        lines.append(
            f"  {modality}: {lf.n_channels} channels {types}, region gain norm "
            f"{norms.min():.3g}-{norms.max():.3g}"
        )
    lines.append("  metadata: " + json.dumps(head_model.metadata, indent=2).replace("\n", "\n  "))
    return "\n".join(lines)
