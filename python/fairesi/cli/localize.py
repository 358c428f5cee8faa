"""``fairesi localize``: source estimate of a recorded ``.fif`` with an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``localize`` subcommand."""
    p = subparsers.add_parser(
        "localize",
        help="source estimate (mne.SourceEstimate) of an Evoked/Epochs/Raw .fif with an exported "
        "model",
        description="Pick the model's channels from a recorded MNE .fif (Evoked, Epochs or "
        "Raw, told apart by content; Epochs give one estimate per epoch, STEM_epochNNN), run "
        "the exported model window by window (DeepSIF normalisation) and "
        "save the region estimate expanded to the source space's vertices as .stc or .h5. "
        "The recording must be sampled at the model's rate.",
    )
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="[MODEL] RECORDING",
        help="a model written by `fairesi export` (.pt or .pt2), then the MNE .fif file "
        "(Evoked *-ave.fif, or Raw); without MODEL the shipped pretrained model that fits "
        "the recording's channels is used",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output: STEM (writes STEM-lh.stc and STEM-rh.stc) or FILE.h5",
    )
    p.add_argument(
        "--head-model",
        default="default",
        help="'default' or a head-model file saved with HeadModel.save (default: default)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="windows per forward pass (default: 16)"
    )
    p.add_argument(
        "--regions",
        action="store_true",
        help="write the region time courses (regions x samples, with region names) to -o "
        "FILE.h5 or FILE.csv instead of a vertex-wise SourceEstimate (far smaller)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also save the estimate at its strongest sample painted on the cortex (four "
        "views; matplotlib only, no 3-D backend)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_localize, output_kinds={"output": "any"})


def run_localize(args: argparse.Namespace) -> int:
    """Localize as asked on the command line; returns the exit code."""
    import mne

    from fairesi.headmodel import HeadModel
    from fairesi.localize import (
        localize,
        pretrained_for_recording,
        read_recording,
        save_estimate,
    )

    if len(args.inputs) > 2:
        raise ValueError(f"expected [MODEL] RECORDING, got {len(args.inputs)} paths")
    head_model = None if args.head_model == "default" else HeadModel.load(args.head_model)
    recording = args.inputs[-1]
    if len(args.inputs) == 2:
        model = args.inputs[0]
    else:
        inst = read_recording(recording)
        name, model, shipped_head = pretrained_for_recording(inst)
        head_model = head_model or shipped_head
        recording = inst
        print(f"using the pretrained {name!r} model (fairesi.models.pretrained)")
    if args.plot is not None:
        from fairesi.io import check_not_an_input

        check_not_an_input(args.plot, {f"input {k + 1}": p for k, p in enumerate(args.inputs)})
    if args.regions:
        return _write_regions(args, model, recording, head_model)
    inst = recording if hasattr(recording, "info") else read_recording(recording)
    if not isinstance(inst, mne.BaseEpochs):
        return _write_estimate(args, model, inst, head_model or HeadModel.default())
    # Epochs: one estimate per epoch (as apply_inverse_epochs), STEM_epoch000...
    stcs = localize(model, inst, head_model=head_model, batch_size=args.batch_size)
    output = Path(args.output)
    written = []
    for k, one in enumerate(stcs):
        name = f"{output.with_suffix('').name}_epoch{k:03d}{output.suffix}"
        written += save_estimate(one, output.with_name(name))
    print(f"wrote {len(written)} files for {len(stcs)} epochs, e.g. {written[0]}")
    if args.plot is not None:  # the first epoch
        head = head_model or HeadModel.default()
        _plot(args.plot, head, _region_means(stcs[0].data, head), stcs[0].times)
    return 0


#: Largest vertex-wise estimate written as one in-memory ``.h5`` (V x T float32 bytes);
#: longer recordings go to streamed ``.stc`` files or ``--regions``.
H5_LIMIT_BYTES = 1 << 30


def _write_estimate(args: argparse.Namespace, model, inst, head_model) -> int:
    """Evoked or Raw: region time courses window by window (progress bar), then the
    vertex-wise estimate streamed into ``.stc`` files (bounded memory) or one ``.h5``."""
    import os

    from fairesi.export import load_exported
    from fairesi.localize import (
        check_head_model,
        localize_regions,
        recording_data,
        save_estimate,
        source_estimate,
        write_stc_streamed,
    )

    output = Path(args.output)
    exported = model if hasattr(model, "metadata") else load_exported(model)
    check_head_model(exported.metadata, head_model)
    n_bytes = 4 * head_model.n_vertices * len(inst.times)
    if output.suffix == ".h5" and n_bytes > H5_LIMIT_BYTES:
        raise ValueError(
            f"a vertex-wise .h5 of this recording would hold {n_bytes / 2**30:.1f} GiB in "
            "memory; write -o STEM (.stc files, streamed) or --regions FILE.h5 instead"
        )
    data = recording_data(inst, exported.metadata, head_model=head_model)
    regions = localize_regions(
        exported, data, batch_size=args.batch_size, progress=not args.no_progress
    )
    tmin, tstep = float(inst.times[0]), 1.0 / float(inst.info["sfreq"])
    if output.suffix == ".h5":
        written = save_estimate(
            source_estimate(regions, head_model, tmin=tmin, tstep=tstep), output
        )
    else:
        if os.fspath(args.output).endswith(os.sep) or output.is_dir():
            output = output / "estimate"
        written = write_stc_streamed(
            regions, head_model, output.with_suffix("") if output.suffix == ".stc" else output,
            tmin=tmin, tstep=tstep,
        )  # fmt: skip
    print(
        f"wrote {', '.join(map(str, written))}: {head_model.n_vertices} vertices x "
        f"{regions.shape[1]} samples ({tmin:g} s to {inst.times[-1]:g} s)"
    )
    if args.plot is not None:
        _plot(args.plot, head_model, regions, inst.times)
    return 0


def _region_means(vertex_data, head_model):
    """(V, T) vertex values in the head model's vertex order -> (R, T) region means."""
    import numpy as np

    region = np.asarray(head_model.vertex_region)
    inside = region >= 0
    sums = np.zeros((head_model.n_regions, vertex_data.shape[1]))
    np.add.at(sums, region[inside], np.asarray(vertex_data)[inside])
    counts = np.bincount(region[inside], minlength=head_model.n_regions)
    return sums / np.maximum(counts, 1)[:, None]


def _plot(path: Path, head_model, region_data, times) -> None:
    """``--plot``: the region values at the strongest sample, on the cortex."""
    import numpy as np

    from fairesi.figures import brain_surface, plot_brain

    surface = brain_surface(head_model)
    if surface is None:
        raise ValueError(
            "--plot paints on the fsaverage5 surface; this head model is not on it "
            "(write --regions and plot the region values yourself)"
        )
    peak = int(np.argmax(np.abs(region_data).sum(0)))
    plot_brain(
        surface,
        region_data[:, peak],
        path,
        title=f"fairesi estimate at {times[peak]:.3f} s (normalised units)",
    )
    print(f"wrote {path}")


def _write_regions(args: argparse.Namespace, model, recording, head_model) -> int:
    """``--regions``: region time courses only, no vertex expansion."""
    import mne

    from fairesi.export import load_exported
    from fairesi.localize import localize_regions, read_recording, recording_data, save_regions

    exported = model if hasattr(model, "metadata") else load_exported(model)
    inst = recording if hasattr(recording, "info") else read_recording(recording)
    if isinstance(inst, mne.BaseEpochs):
        raise ValueError("--regions takes Evoked or Raw recordings; average the Epochs first")
    data = recording_data(inst, exported.metadata, head_model=head_model)
    regions = localize_regions(
        exported, data, batch_size=args.batch_size, progress=not args.no_progress
    )
    path = save_regions(regions, list(exported.metadata["region_names"]), inst.times, args.output)
    print(f"wrote {path}: {regions.shape[0]} regions x {regions.shape[1]} samples")
    if args.plot is not None:
        from fairesi.headmodel import HeadModel

        _plot(args.plot, head_model or HeadModel.default(), regions, inst.times)
    return 0
