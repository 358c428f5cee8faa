"""``fairesi headmodel``: build the default head model, make one from a user's MNE forward
solution (``from-forward``, see docs/own-montage.md), or describe a head model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fairesi.cli import FairesiUserError

# = fairesi.headmodel.parcellation.PARCELLATIONS (a test checks), spelled out here so that
# `fairesi --help` does not import the head model package.
PARCELLATIONS = ("deepsif994", "aparc", "aparc.a2009s")

if TYPE_CHECKING:
    from fairesi.headmodel import HeadModel


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fairesi headmodel build``, ``from-forward`` and ``info``."""
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
        "$FAIRESI_ANATOMY_DIR, else the copy shipped in fairesi/resources/anatomy)",
    )
    build.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    build.add_argument("--verbose", action="store_true", help="show MNE's log")
    build.set_defaults(func=_build)

    from_forward = actions.add_parser(
        "from-forward",
        help="make a head model from your own MNE forward solution (own montage or head)",
        description="Sum the fixed-orientation gains of an MNE forward solution (surface "
        "source space, EEG and/or MEG) over the regions of a parcellation and save the "
        "head model for `fairesi simulate bank/train/localize --head-model`. deepsif994 "
        "(default) is the shipped 994-region parcellation of the default model: used as is "
        "on fsaverage, morphed with MNE from fsaverage (which must be in --subjects-dir) "
        "for any other subject. aparc and aparc.a2009s are the subject's own FreeSurfer "
        "annotations. See docs/own-montage.md.",
    )
    from_forward.add_argument("forward", type=Path, help="MNE forward solution (*-fwd.fif)")
    from_forward.add_argument(
        "-o", "--out", required=True, type=Path, help="output .npz file (written atomically)"
    )
    from_forward.add_argument(
        "--parcellation",
        choices=PARCELLATIONS,
        default="deepsif994",
        help="regions of the head model (default: deepsif994)",
    )
    from_forward.add_argument(
        "--subject",
        default=None,
        help="FreeSurfer subject of the forward (default: the one its source space names)",
    )
    from_forward.add_argument(
        "--subjects-dir",
        type=Path,
        default=None,
        help="FreeSurfer subjects directory (default: $SUBJECTS_DIR); not needed for "
        "deepsif994 on fsaverage",
    )
    from_forward.add_argument(
        "--name", default=None, help="head model name (default: SUBJECT_PARCELLATION)"
    )
    from_forward.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    from_forward.add_argument("--verbose", action="store_true", help="show MNE's log")
    from_forward.set_defaults(func=_from_forward)

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


def _from_forward(args: argparse.Namespace) -> int:
    """``fairesi headmodel from-forward``: read, parcellate, sum, save, describe."""
    import sys

    from fairesi.headmodel import HeadModel
    from fairesi.headmodel.parcellation import forward_subject, parcellation_labels

    if args.out.exists() and not args.force:
        raise FairesiUserError(f"{args.out} exists; pass --force to overwrite it")
    log = "info" if args.verbose else "error"
    fwd = _read_forward(args.forward, log)
    subject = args.subject or forward_subject(fwd)
    if subject is None:
        raise FairesiUserError(f"{args.forward} names no FreeSurfer subject; pass --subject")
    labels = parcellation_labels(
        args.parcellation,
        fwd["src"],
        subject=subject,
        subjects_dir=args.subjects_dir,
        verbose=log,
    )
    name = args.name or f"{subject}_{args.parcellation}"
    head_model = HeadModel.from_forward(fwd, labels, name=name)
    head_model.metadata.update(
        {
            "parcellation": args.parcellation,
            "subject": subject,
            "forward_file": args.forward.name,
            "build_command": f"fairesi headmodel from-forward {args.forward.name} "
            f"--parcellation {args.parcellation} --subject {subject}",
        }
    )
    if args.subject and forward_subject(fwd) not in (None, args.subject):
        print(
            f"fairesi headmodel: warning: --subject {args.subject!r} differs from the "
            f"forward's subject {forward_subject(fwd)!r}",
            file=sys.stderr,
        )
    outside = int(np.sum(head_model.vertex_region < 0))
    if outside:
        print(
            f"fairesi headmodel: note: {outside} of {head_model.n_vertices} source vertices "
            f"lie in no {args.parcellation} region (e.g. the medial wall) and are ignored",
            file=sys.stderr,
        )
    head_model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(_describe(head_model))
    return 0


def _read_forward(path: Path, log: str) -> Any:
    """``mne.read_forward_solution(path)``; a missing or non-forward file is a user error."""
    import mne

    if not path.is_file():
        raise FairesiUserError(f"{path} does not exist")
    try:
        return mne.read_forward_solution(path, verbose=log)
    except Exception as err:  # MNE raises ValueError, AttributeError, ... on foreign files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FairesiUserError(
            f"{path} is not an MNE forward solution ({reason}); make one with "
            "mne.make_forward_solution and mne.write_forward_solution"
        ) from err


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
