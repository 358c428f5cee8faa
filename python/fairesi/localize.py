"""Source estimates of recorded MNE data with an exported fairesi model.

:func:`localize` takes an ``mne.Evoked`` or ``mne.io.Raw`` (or a ``.fif`` file of
either) and a model written by ``fairesi export``, and returns an
``mne.SourceEstimate`` on the model's head-model source space:

1. the model's channels are picked from the recording by name (spaces ignored, so
   ``MEG0113`` matches ``MEG 0113``), in the model's order; a missing channel is an
   error naming it;
2. the sampling rate must equal the model's (resample the recording first otherwise);
3. the recording is cut into consecutive windows of the model's ``n_times`` samples;
   the last window is aligned to the end of the recording, so every sample is covered
   without padding (samples covered twice take the last window's estimate);
4. each window is normalised as in training (DeepSIF: channel time mean, then time
   point channel mean removed, divided by the window's max |x|) and run through the
   network, giving region time courses in the network's normalised units;
5. every source vertex takes its region's time course (vertices outside every region
   get zeros), so the estimate can be plotted and morphed like any MNE estimate.

The sensor positions of the head model are a template (fsaverage head, standard
montage / helmet): results on real recordings are only as good as that template fits
the subject, as for DeepSIF and FAIR-ESI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _squash(name: str) -> str:
    return name.replace(" ", "")


def read_recording(path: str | os.PathLike) -> Any:
    """Read an ``.fif`` file as ``mne.Evoked`` (first condition), ``mne.Epochs`` or
    ``mne.io.Raw``, whichever it holds (by content, not by file name).

    Parameters
    ----------
    path : path-like
        A FIF file written by MNE-Python or an acquisition system.

    Returns
    -------
    mne.Evoked | mne.Epochs | mne.io.Raw

    Raises
    ------
    ValueError
        One line when the file holds none of them (e.g. not a FIF file at all).
    """
    import mne

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recording {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"recording {path} is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    # A FIF file opens with the FIFF_FILE_ID tag (kind 100, big-endian); gzip with 1f 8b.
    if head != (100).to_bytes(4, "big") and head[:2] != b"\x1f\x8b":
        raise ValueError(f"{path} is not an MNE FIF file of Raw, Epochs or Evoked data")
    readers = (
        lambda: mne.read_evokeds(path, condition=0, verbose="error"),
        lambda: mne.read_epochs(path, preload=True, verbose="error"),
        lambda: mne.io.read_raw_fif(path, preload=True, verbose="error"),
    )
    for read in readers:
        try:
            return read()
        except (ValueError, RuntimeError, OSError, KeyError, TypeError, IndexError):
            continue  # not this kind of FIF content
    raise ValueError(f"{path} is not an MNE FIF file of Raw, Epochs or Evoked data")


#: At most this fraction of a model's channels may be bad or missing; they are then
#: interpolated with MNE (``interpolate_bads``), above it the recording is refused.
MAX_BAD_FRACTION = 0.1


def recording_data(
    inst: Any,
    metadata: dict[str, Any],
    *,
    head_model: Any = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> np.ndarray:
    """The model's channels of a recording, in the model's order and checked.

    Channels marked bad (``inst.info['bads']``) and, for EEG, channels missing from the
    recording (dropped) are interpolated with MNE's ``interpolate_bads`` (spherical splines
    for EEG, field mapping for MEG) when they are at most ``max_bad_fraction`` of the
    model's channels, with a warning that names them. Missing EEG electrodes take their
    positions from the head model's montage; a missing MEG channel cannot be rebuilt
    (its coil geometry is gone), so keep MEG channels and mark them bad instead.

    Parameters
    ----------
    inst : mne.Evoked | mne.io.Raw
        The recording; SI units (V, T, T/m) as MNE stores them.
    metadata : dict
        The exported model's metadata (``ch_names``, ``sfreq``, ``n_times``).
    head_model : fairesi.headmodel.HeadModel or None
        Electrode positions for missing EEG channels and for a recording without a
        montage (default: the embedded default head model, if the model was trained on it).
    max_bad_fraction : float
        See :data:`MAX_BAD_FRACTION`.

    Returns
    -------
    np.ndarray, shape (n_channels, n_samples), float64
    """
    sfreq = float(inst.info["sfreq"])
    if abs(sfreq - float(metadata["sfreq"])) > 1e-6 * float(metadata["sfreq"]):
        raise ValueError(
            f"the recording is sampled at {sfreq:g} Hz but the model expects "
            f"{float(metadata['sfreq']):g} Hz; resample it first "
            f"(inst.resample({float(metadata['sfreq']):g}))"
        )
    index = {_squash(name): i for i, name in enumerate(inst.ch_names)}
    wanted = [_squash(name) for name in metadata["ch_names"]]
    types = list(metadata.get("ch_types", ["eeg"] * len(wanted)))
    missing = [k for k, name in enumerate(wanted) if name not in index]
    bads = {_squash(b) for b in inst.info["bads"]}
    marked = [k for k, name in enumerate(wanted) if name in index and name in bads]
    limit = int(np.floor(max_bad_fraction * len(wanted)))
    names = metadata["ch_names"]
    if missing and (len(missing) + len(marked) > limit or any(types[k] != "eeg" for k in missing)):
        shown = ", ".join(names[k] for k in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"the recording lacks {len(missing)} of the model's {len(wanted)} channels: {shown}"
            + (
                f" (with {len(marked)} marked bad, more than the {limit} fairesi interpolates)"
                if len(missing) + len(marked) > limit
                else "; keep MEG channels in the file and mark them bad instead of dropping "
                "them (fairesi interpolates up to "
                f"{max_bad_fraction:.0%} of the channels)"
            )
        )
    if len(marked) > limit:
        raise ValueError(
            f"{len(marked)} of the model's {len(wanted)} channels are marked bad, more than "
            f"the {limit} ({max_bad_fraction:.0%}) fairesi interpolates: "
            f"{', '.join(names[k] for k in marked[:8])}{' ...' if len(marked) > 8 else ''}"
        )
    if missing or marked:
        inst = _interpolated(inst, metadata, missing, marked, head_model)
        index = {_squash(name): i for i, name in enumerate(inst.ch_names)}
    picks = [index[name] for name in wanted]
    data = inst.get_data(picks=picks) if hasattr(inst, "get_data") else inst.data[picks]
    if not np.isfinite(data).all():
        raise ValueError("the recording contains NaN or Inf samples in the model's channels")
    if data.shape[1] < int(metadata["n_times"]):
        raise ValueError(
            f"the recording has {data.shape[1]} samples; the model needs at least "
            f"{int(metadata['n_times'])} ({int(metadata['n_times']) / sfreq:g} s)"
        )
    return data


def _interpolated(
    inst: Any, metadata: dict[str, Any], missing: list[int], marked: list[int], head_model: Any
) -> Any:
    """A copy of ``inst`` reduced to the model's channels, the missing EEG channels added
    (zeros) and every bad one interpolated by MNE; warns with their names."""
    import mne

    names = list(metadata["ch_names"])
    wanted = {_squash(m) for m in names}
    present = [n for n in inst.ch_names if _squash(n) in wanted]
    inst = inst.copy().pick(present)
    positions = _montage_positions(metadata, head_model)
    if missing:
        info = mne.create_info([names[k] for k in missing], inst.info["sfreq"], "eeg")
        for ch, k in zip(info["chs"], missing, strict=True):
            ch["loc"][:3] = positions[names[k]] if names[k] in positions else np.nan
        zeros = np.zeros((len(missing), len(inst.times)))
        if isinstance(inst, mne.Evoked):
            extra = mne.EvokedArray(zeros, info, tmin=inst.times[0], nave=inst.nave)
        else:
            extra = mne.io.RawArray(zeros, info, first_samp=inst.first_samp, verbose="error")
        with extra.info._unlock():
            extra.info["dev_head_t"] = inst.info["dev_head_t"]
        inst.add_channels([extra], force_update_info=True)
    eeg = mne.pick_types(inst.info, meg=False, eeg=True)
    located = np.array([inst.info["chs"][i]["loc"][:3] for i in eeg]).reshape(-1, 3)
    if len(eeg) and (not np.isfinite(located).all() or np.allclose(located, 0)):
        # No usable montage in the file: the template electrode positions of the head model.
        for i in eeg:
            name = inst.ch_names[i]
            if name in positions:
                inst.info["chs"][i]["loc"][:3] = positions[name]
    bad = sorted({names[k] for k in missing} | {names[k] for k in marked})
    bad_names = {_squash(b) for b in bad}
    inst.info["bads"] = [n for n in inst.ch_names if _squash(n) in bad_names]
    warnings.warn(
        f"interpolating {len(bad)} bad or missing channel(s) with MNE: {', '.join(bad)}",
        stacklevel=4,
    )
    # The sphere MNE fits to the digitisation; without one, its usual head-frame origin.
    origin = "auto" if inst.info["dig"] else (0.0, 0.0, 0.04)
    return inst.interpolate_bads(reset_bads=True, origin=origin, verbose="error")


def _montage_positions(metadata: dict[str, Any], head_model: Any) -> dict[str, np.ndarray]:
    """Channel name -> template position (m, head frame) of the model's EEG channels."""
    from fairesi.headmodel import HeadModel

    if head_model is None:
        if metadata.get("head_model") != "default":
            return {}
        head_model = HeadModel.default()
    if "eeg" not in head_model.lead_fields:
        return {}
    lead_field = head_model.lead_field("eeg")
    return dict(zip(lead_field.ch_names, np.asarray(lead_field.ch_positions_m, float), strict=True))


def window_starts(n_samples: int, n_times: int) -> np.ndarray:
    """Start samples of consecutive windows covering ``n_samples`` (last one end-aligned).

    Parameters
    ----------
    n_samples : int
        Length of the recording, >= ``n_times``.
    n_times : int
        Window length.

    Returns
    -------
    np.ndarray, shape (n_windows,), int64
    """
    starts = list(range(0, n_samples - n_times + 1, n_times))
    if starts[-1] + n_times < n_samples:
        starts.append(n_samples - n_times)
    return np.asarray(starts, dtype=np.int64)


def localize_regions(
    model: Any, data: np.ndarray, *, batch_size: int = 16, progress: bool = False
) -> np.ndarray:
    """Region time courses of a (channels, samples) recording, window by window.

    Parameters
    ----------
    model : fairesi.export.ExportedModel
        Loaded with :func:`fairesi.export.load_exported`.
    data : np.ndarray, shape (n_channels, n_samples)
        The model's channels in its order (see :func:`recording_data`).
    batch_size : int
        Windows per forward pass.
    progress : bool
        Show a progress bar over the windows.

    Returns
    -------
    np.ndarray, shape (n_regions, n_samples), float32
        The network's estimate, normalised per window as in training.
    """
    from tqdm.auto import tqdm

    n_times = int(model.metadata["n_times"])
    starts = window_starts(data.shape[1], n_times)
    out = np.zeros((int(model.metadata["n_regions"]), data.shape[1]), dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    batches = range(0, len(starts), batch_size)
    for first in tqdm(batches, desc="localize", unit="batch", disable=not progress):
        chunk = starts[first : first + batch_size]
        windows = torch.stack([x[:, s : s + n_times] for s in chunk])  # (B, C, T)
        estimate = model(windows).numpy()  # (B, R, T)
        for s, est in zip(chunk, estimate, strict=True):
            out[:, s : s + n_times] = est
    return out


def localize(
    model: str | os.PathLike | Any,
    inst: Any,
    *,
    head_model: Any = None,
    batch_size: int = 16,
) -> Any:
    """Estimate the sources of a recording with an exported model.

    Parameters
    ----------
    model : path-like | fairesi.export.ExportedModel
        A ``.pt`` (TorchScript) or ``.pt2`` (AOTInductor) file from ``fairesi export``.
    inst : mne.Evoked | mne.Epochs | mne.io.Raw | path-like
        The recording, or a ``.fif`` file of it (see :func:`read_recording`).
    head_model : fairesi.headmodel.HeadModel | None
        Source space to expand regions onto; None uses the embedded default, which must be
        the one the model was trained on.
    batch_size : int
        Windows per forward pass.

    Returns
    -------
    stc : mne.SourceEstimate, or a list of them for Epochs (one per epoch)
        ``(n_vertices, n_samples)`` on the head model's source space, starting at the
        recording's first time point; arbitrary (normalised) units.
    """
    import mne

    from fairesi.export import load_exported
    from fairesi.headmodel import HeadModel

    exported = model if hasattr(model, "metadata") else load_exported(model)
    if isinstance(inst, str | os.PathLike):
        inst = read_recording(inst)
    if isinstance(inst, mne.BaseEpochs):  # one estimate per epoch, as apply_inverse_epochs
        return [
            localize(exported, inst[k].average(), head_model=head_model, batch_size=batch_size)
            for k in range(len(inst))
        ]
    if head_model is None:
        head_model = HeadModel.default()
    check_head_model(exported.metadata, head_model)
    data = recording_data(inst, exported.metadata, head_model=head_model)
    regions = localize_regions(exported, data, batch_size=batch_size)
    return source_estimate(
        regions, head_model, tmin=float(inst.times[0]), tstep=1.0 / float(inst.info["sfreq"])
    )


def check_head_model(metadata: dict[str, Any], head_model: Any) -> None:
    """Refuse (one line) a head model other than the one an exported model was trained on.

    Parameters
    ----------
    metadata : dict
        The exported model's metadata (``head_model``, ``n_regions``, and
        ``head_model_sha256`` for exports that carry it).
    head_model : fairesi.headmodel.HeadModel
    """
    meta = metadata
    same = head_model.n_regions == int(meta["n_regions"]) and head_model.name == meta["head_model"]
    if same and "head_model_sha256" in meta:  # exports before the hash carry only the name
        same = head_model.content_hash == meta["head_model_sha256"]
    if not same:
        raise ValueError(
            f"the model was trained on head model {meta['head_model']!r} ({meta['n_regions']} "
            f"regions, content {str(meta.get('head_model_sha256', '?'))[:12]}), not on "
            f"{head_model.name!r} ({head_model.n_regions} regions, content "
            f"{head_model.content_hash[:12]}); pass the head model it was trained on "
            "(--head-model)"
        )


def _vertex_values(regions: np.ndarray, vertex_region: np.ndarray) -> np.ndarray:
    """(R, T) region values -> (V, T) float32 vertex values (0 outside every region)."""
    out = regions[np.maximum(vertex_region, 0)].astype(np.float32, copy=False)
    out[vertex_region < 0] = 0.0
    return out


def source_estimate(regions: np.ndarray, head_model: Any, *, tmin: float, tstep: float) -> Any:
    """An ``mne.SourceEstimate`` of region time courses: every vertex takes its region's.

    Parameters
    ----------
    regions : np.ndarray, shape (R, T)
        Region time courses (:func:`localize_regions`), normalised units.
    head_model : fairesi.headmodel.HeadModel
        Its source space (``vertno``, ``vertex_region``).
    tmin : float
        Time of the first sample, s.
    tstep : float
        Sampling interval, s.

    Returns
    -------
    mne.SourceEstimate
        ``(V, T)`` float32; vertices outside every region are 0. It holds V x T values in
        memory: for long recordings use :func:`write_stc_streamed`.
    """
    import mne

    return mne.SourceEstimate(
        _vertex_values(regions, np.asarray(head_model.vertex_region)),
        vertices=[np.asarray(v) for v in head_model.vertno],
        tmin=tmin,
        tstep=tstep,
        subject=head_model.metadata.get("subject", "fsaverage"),
    )


def write_stc_streamed(
    regions: np.ndarray,
    head_model: Any,
    stem: str | os.PathLike,
    *,
    tmin: float,
    tstep: float,
    chunk: int = 1024,
) -> list[Path]:
    """Write the vertex-wise estimate of region time courses as MNE ``.stc`` files, a
    block of samples at a time, so memory stays at ``chunk`` x V values whatever the
    recording's length (``mne.read_source_estimate`` reads the result).

    Parameters
    ----------
    regions : np.ndarray, shape (R, T)
        Region time courses, normalised units.
    head_model : fairesi.headmodel.HeadModel
        Its source space (``vertno`` per hemisphere, ``vertex_region``).
    stem : path-like
        Writes ``STEM-lh.stc`` and ``STEM-rh.stc`` (each atomically).
    tmin, tstep : float
        Time of the first sample and sampling interval, s.
    chunk : int
        Samples per block.

    Returns
    -------
    list of pathlib.Path
        The two files.
    """
    from fairesi.io import atomic_path

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    vertex_region = np.asarray(head_model.vertex_region)
    bounds = np.cumsum([0] + [len(v) for v in head_model.vertno])
    written = []
    for hemi, vertno in zip(("lh", "rh"), head_model.vertno, strict=True):
        path = stem.with_name(f"{stem.name}-{hemi}.stc")
        part = vertex_region[bounds[len(written)] : bounds[len(written) + 1]]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # MNE's .stc layout: tmin and tstep in ms (>f4), the vertex count and numbers
            # (>u4), the sample count (>u4), then the data sample by sample (>f4).
            f.write(np.array([1000 * tmin, 1000 * tstep], dtype=">f4").tobytes())
            f.write(np.array(len(vertno), dtype=">u4").tobytes())
            f.write(np.asarray(vertno, dtype=">u4").tobytes())
            f.write(np.array(regions.shape[1], dtype=">u4").tobytes())
            for start in range(0, regions.shape[1], chunk):
                block = _vertex_values(regions[:, start : start + chunk], part)
                f.write(np.ascontiguousarray(block.T, dtype=">f4").tobytes())
        written.append(path)
    return written


def pretrained_for_recording(
    inst: Any, *, directory: str | os.PathLike | None = None
) -> tuple[str, Any, Any]:
    """The shipped model whose channels the recording holds, ready for :func:`localize`.

    Parameters
    ----------
    inst : mne.Evoked | mne.io.Raw | mne.Epochs
        The recording (its channel names are matched, spaces ignored).
    directory : path-like or None
        Where the shipped models are (default: the package's).

    Returns
    -------
    name : str
        The model's name (the one needing the most channels, when several fit).
    model : fairesi.export.ExportedModel
        Its network with export metadata, as :func:`localize` takes it.
    head_model : fairesi.headmodel.HeadModel
        Its head model.

    Raises
    ------
    ValueError
        One line: no shipped model fits; names what each lacks and the own-montage route.
    """
    from fairesi.export import ExportedModel, build_metadata
    from fairesi.models import available_pretrained, pretrained

    have = {_squash(name) for name in inst.ch_names}
    names = available_pretrained(directory)
    if not names:
        raise ValueError(
            "no pretrained model ships with this fairesi yet: give an exported model "
            "(`fairesi localize MODEL rec.fif`; train and export one for your montage with "
            "`fairesi train` and `fairesi export`)"
        )
    lacking: dict[str, list[str]] = {}
    fits = []
    for name in names:
        shipped = pretrained(name, directory=directory)
        channels = list(shipped.config["head_model"]["ch_names"])
        lacking[name] = [c for c in channels if _squash(c) not in have]
        if not lacking[name]:
            fits.append((len(channels), name, shipped))
    if not fits:
        detail = "; ".join(
            f"{name} lacks {len(miss)} channels (e.g. {', '.join(miss[:3])})"
            for name, miss in lacking.items()
        )
        raise ValueError(
            f"the recording's channels fit no shipped model ({detail}); for another "
            "montage train and export a model for it (`fairesi train`, `fairesi export`) and "
            "run `fairesi localize MODEL rec.fif --head-model HEAD`"
        )
    _, name, shipped = max(fits, key=lambda fit: fit[0])
    config = shipped.config
    metadata = build_metadata(
        shipped.head_model,
        config["head_model"]["modality"],
        int(config["data"]["n_times"]),
        model_name=config["model"]["name"],
    )
    model = ExportedModel(module=shipped.model, metadata=metadata, format="pytorch")
    return name, model, shipped.head_model


def save_regions(
    regions: np.ndarray, region_names: list[str], times: np.ndarray, path: str | os.PathLike
) -> Path:
    """Save region time courses atomically as ``.h5`` or ``.csv``.

    Parameters
    ----------
    regions : np.ndarray, shape (R, T)
        Region time courses (:func:`localize_regions`), normalised units.
    region_names : list of str, length R
    times : np.ndarray, shape (T,)
        Time of every sample, s.
    path : path-like
        ``.h5`` (datasets ``data`` (R, T) float32, ``region_names``, ``times``) or ``.csv``
        (a row per region: its name, then its values; the header holds the times).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import h5py

    from fairesi.io import atomic_path

    path = Path(path)
    if regions.shape != (len(region_names), len(times)):
        raise ValueError(
            f"regions {regions.shape} must be (R, T) = ({len(region_names)}, {len(times)})"
        )
    with atomic_path(path) as tmp:
        if path.suffix == ".h5":
            with h5py.File(tmp, "w") as f:
                f.create_dataset("data", data=regions.astype(np.float32), compression="gzip")
                f.create_dataset("region_names", data=np.array(region_names, dtype=object),
                                 dtype=h5py.string_dtype())  # fmt: skip
                f.create_dataset("times", data=np.asarray(times, dtype=np.float64))
        elif path.suffix == ".csv":
            with open(tmp, "w") as f:
                f.write("region," + ",".join(f"{t:.6g}" for t in times) + "\n")
                for name, row in zip(region_names, regions, strict=True):
                    f.write(name + "," + ",".join(f"{v:.6g}" for v in row) + "\n")
        else:
            raise ValueError(f"region time courses are written as .h5 or .csv, got {path}")
    return path


def save_estimate(stc: Any, path: str | os.PathLike) -> list[Path]:
    """Save a source estimate atomically as ``.stc`` (two files) or ``.h5``.

    Parameters
    ----------
    stc : mne.SourceEstimate
    path : path-like
        Ending in ``.h5``: exactly that HDF5 file. A directory (existing, or written with a
        trailing separator): ``DIR/estimate-lh.stc`` and ``DIR/estimate-rh.stc``. Else the
        ``.stc`` stem: ``STEM-lh.stc`` and ``STEM-rh.stc``.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    text = os.fspath(path)
    path = Path(path)
    if text.endswith(os.sep) or path.is_dir():
        path = path / "estimate"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".stc-") as tmp:
        if path.suffix == ".h5":
            stc.save(Path(tmp) / "estimate", ftype="h5", overwrite=True, verbose="error")
            (written,) = Path(tmp).iterdir()  # MNE names it estimate-stc.h5
            shutil.move(written, path)
            return [path]
        stem = path.with_suffix("") if path.suffix == ".stc" else path
        stc.save(Path(tmp) / stem.name, ftype="stc", overwrite=True, verbose="error")
        written = []
        for file in sorted(Path(tmp).iterdir()):
            target = stem.parent / file.name
            shutil.move(file, target)
            written.append(target)
    return written
