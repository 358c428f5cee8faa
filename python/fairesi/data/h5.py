"""HDF5 dataset files: :func:`write_dataset` (resumable shards of 4096 samples),
:func:`merge_datasets` (join the files of consecutive sample ranges), and
:class:`DatasetFile` (read a file back as a map-style ``torch`` dataset).

A file stores the normalised input ``x`` densely and the target sparsely (its patch
regions and their values); :meth:`DatasetFile.batch` scatters the target back with the
same :func:`~fairesi.data.batch.scatter_regions` as the synthesizer, so a file's batches
equal ``Synthesizer.batch`` bit for bit. ``h5py``, ``tqdm`` and :mod:`fairesi.io` are
imported when used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairesi.data.batch import Batch, normalise_max, region_mask, scatter_regions
from fairesi.data.config import SimConfig
from fairesi.data.synth import Synthesizer
from fairesi.io import atomic_path, check_hdf5_metadata

__all__ = ["DatasetFile", "merge_datasets", "write_dataset"]

_H5_FORMAT = "fairesi-dataset-1"
# A file of more samples is built from resumable shards of this many samples.
_SHARD_SAMPLES = 4096
# Per-sample arrays of a dataset file (besides the metadata datasets).
_SAMPLE_ARRAYS = (
    "x",
    "target_regions",
    "target_values",
    "sample_index",
    "centres",
    "patch_weights",
    "source_scale",
    "source_snr_db",
    "spike_index",
    "peak_sample",
    "background_start",
)


def check_range(synth: Any, split: str, start: int, n: int | None, batch_size: int) -> int:
    """Validate a sample range of a split for the dataset writers; returns its length.

    Parameters
    ----------
    synth : Synthesizer
    split : {'train', 'val', 'test'}
    start : int
        First sample, in [0, split size).
    n : int or None
        Samples from ``start`` (None: to the end of the split).
    batch_size : int
        Samples per synthesis step, >= 1.

    Returns
    -------
    int
        ``n``, resolved.
    """
    size = synth.split_size(split)
    if not 0 <= start < size:
        raise ValueError(f"start must be in [0, {size}) for the {split} split, got {start}")
    n = size - start if n is None else int(n)
    if not 1 <= n <= size - start:
        raise ValueError(
            f"n must be in [1, {size - start}] for the {split} split from start={start}, got {n}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n


def write_dataset(
    path: str | Path,
    synth: Synthesizer,
    split: str,
    n: int | None = None,
    *,
    start: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    compression_level: int = 4,
) -> Path:
    """Write samples ``start .. start + n - 1`` of ``split`` to a chunked, compressed HDF5 file.

    The file holds the normalised input ``x`` (N, C, T), the target stored sparsely as
    ``target_regions`` (N, K) int32 (patch regions, -1 = padding) and ``target_values``
    (N, K, T), the ground-truth parameters of every sample (``centres``,
    ``patch_weights``, ``source_scale``, ``source_snr_db``, ``spike_index``,
    ``peak_sample``, ``background_start``, ``sample_index``), and as attributes the
    configuration, seed, split, head model and bank descriptions, channel names/types,
    region centroids and versions. :class:`DatasetFile` reads it back into batches equal
    to ``synth.batch`` bit for bit.

    The file is written atomically. More than 4096 samples are first written as shards
    of 4096 into ``<path>.shards/`` and then merged (compressed chunks are copied as
    they are); an interrupted run started again with the same arguments keeps the
    finished shards (a damaged one, e.g. truncated, is written again, with a warning).

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file.
    synth : Synthesizer
    split : {'train', 'val', 'test'}
    n : int, optional
        Number of samples (default: the rest of the split from ``start``).
    start : int
        First sample index. Disjoint ``[start, start + n)`` ranges written by separate
        processes or machines are shards of the same dataset.
    batch_size : int
        Samples synthesised per step.
    progress : bool
        Show a tqdm progress bar.
    compression_level : int
        gzip level (0-9).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import shutil

    import h5py
    from tqdm import tqdm

    from fairesi import __version__

    n = check_range(synth, split, start, n, batch_size)
    hm = synth.head_model
    # What a shard must share with this call to be reused.
    identity = {
        "format": _H5_FORMAT,
        "config": json.dumps(synth.config.to_dict()),
        "seed": str(synth.seed),
        "split": split,
        "head_model": json.dumps(
            {"name": hm.name, "n_regions": hm.n_regions, "metadata": hm.metadata}, default=str
        ),
        "bank_metadata": json.dumps(dict(synth.bank.metadata), default=str),
        "compression_level": compression_level,
    }
    attrs = {
        **identity,
        "normalisation": "deepsif",
        "sfreq": float(synth.bank.sfreq),
        "modality": synth.config.modality,
        "fairesi_version": str(__version__),
        "torch_version": str(torch.__version__),
    }
    path = Path(path)
    bar = tqdm(total=n, desc=f"{split} samples", unit="sample", disable=not progress)
    try:
        if n <= _SHARD_SAMPLES:
            with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                _write_samples(f, synth, split, start, n, attrs, batch_size, bar)
            return path
        shard_dir = path.with_name(path.name + ".shards")
        shards = []
        for first in range(start, start + n, _SHARD_SAMPLES):
            count = min(_SHARD_SAMPLES, start + n - first)
            shard = shard_dir / f"{first:09d}-{count}.h5"
            if _is_shard_of(shard, identity, first, count):
                bar.update(count)
            else:
                with atomic_path(shard) as tmp, h5py.File(tmp, "w") as f:
                    _write_samples(f, synth, split, first, count, attrs, batch_size, bar)
            shards.append(shard)
        # Every shard was just written or decoded whole by _is_shard_of.
        _merge(shards, path, verify=False)
        shutil.rmtree(shard_dir)
        return path
    finally:
        bar.close()


def _create_dataset_arrays(f, synth: Synthesizer, start: int, n: int, attrs: dict) -> dict:
    """Attributes, metadata datasets and the empty per-sample arrays of a dataset file."""
    import h5py

    cfg, lf = synth.config, synth.lead_field
    n_c, n_t, n_s, m = synth.n_channels, cfg.n_times, cfg.n_sources, synth.max_patch_size
    k = n_s * m
    f.attrs.update({**attrs, "n_samples": n, "first_sample": start})
    f.create_dataset("ch_names", data=np.array(lf.ch_names, dtype=h5py.string_dtype()))
    f.create_dataset("ch_types", data=np.array(lf.ch_types, dtype=h5py.string_dtype()))
    f.create_dataset("region_centroids_mm", data=np.asarray(synth.head_model.region_centroids_mm))
    gz = {"compression": "gzip", "compression_opts": attrs["compression_level"], "shuffle": True}
    # Large arrays are chunked per sample, for random access and chunk copies.
    shapes = {
        "x": ((n, n_c, n_t), "f4", (1, n_c, n_t)),
        "target_regions": ((n, k), "i4", (min(n, 1024), k)),
        "target_values": ((n, k, n_t), "f4", (1, k, n_t)),
        "sample_index": ((n,), "i8", None),
        "centres": ((n, n_s), "i8", None),
        "patch_weights": ((n, n_s, m), "f4", None),
        "source_scale": ((n, n_s), "f4", None),
        "source_snr_db": ((n, n_s), "f4", None),
        "spike_index": ((n, n_s), "i8", None),
        "peak_sample": ((n, n_s), "i8", None),
        "background_start": ((n,), "i8", None),
    }
    return {
        name: f.create_dataset(name, shape, dtype, chunks=chunks, **(gz if chunks else {}))
        for name, (shape, dtype, chunks) in shapes.items()
    }


def _write_samples(f, synth, split, start, n, attrs, batch_size, bar) -> None:
    """Synthesise samples ``start .. start + n - 1`` into the open HDF5 file ``f``."""
    dsets = _create_dataset_arrays(f, synth, start, n, attrs)
    for first in range(0, n, batch_size):
        index = torch.arange(start + first, start + min(first + batch_size, n))
        composed = synth._compose(split, index)
        columns = {
            "x": synth.normalised_input(composed.sensor_clean + composed.noise),
            "target_regions": composed.regions,
            "target_values": normalise_max(composed.patch_activity),
            "sample_index": index,
            **{name: composed.params[name] for name in dsets if name in composed.params},
        }
        rows = slice(first, first + len(index))
        for name, value in columns.items():
            dsets[name][rows] = value.cpu().numpy()
        bar.update(len(index))


#: Attributes that differ between the parts of one dataset, and those that only record
#: the software that wrote a part (the merged file keeps the first part's).
_PART_ATTRS = ("n_samples", "first_sample")
_INFORMATIONAL_ATTRS = ("fairesi_version", "torch_version")
#: Per-file (not per-sample) arrays of a dataset file.
_METADATA_ARRAYS = ("ch_names", "ch_types", "region_centroids_mm")


def merge_datasets(parts: Sequence[str | Path], path: str | Path) -> Path:
    """Join dataset files holding consecutive sample ranges of one split into one file.

    The parts are files written by :func:`write_dataset` for disjoint, adjacent ranges
    ``[start, start + n)`` of the same configuration, seed, split, head model and bank (for
    instance by ``fairesi simulate dataset --start S --n N`` on the workers of a Dask or Ray
    cluster, see ``docs/scaling.md``). They may be given in any order. Compressed
    per-sample chunks are copied as they are, so merging costs about a file copy, and the
    result is identical to writing the whole range with one :func:`write_dataset` call.
    The output is written atomically; the parts are left in place.

    Parameters
    ----------
    parts : sequence of path-like
        The part files (at least one).
    path : path-like
        Output ``.h5`` file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If a file is not a fairesi dataset, the parts disagree on anything but their range
        (the attribute is named), or the ranges overlap or leave a gap.
    """
    return _merge(parts, path, verify=True)


def _merge(parts: Sequence[str | Path], path: str | Path, *, verify: bool) -> Path:
    """:func:`merge_datasets`; ``verify=False`` skips decoding the parts first (for shards
    that were just written or verified)."""
    import h5py

    if not parts:
        raise ValueError("merge_datasets needs at least one part")
    ranges = []
    for part in map(Path, parts):
        if not part.is_file():
            raise FileNotFoundError(f"dataset part {part} does not exist")
        check_hdf5_metadata(part)
        try:
            f = h5py.File(part, "r")
        except OSError:
            raise ValueError(f"dataset part {part} is not an HDF5 file") from None
        with f:
            if f.attrs.get("format") != _H5_FORMAT:
                raise ValueError(f"{part} is not a fairesi dataset")
            if verify:
                _verify_decodes(f, part)
            attrs = {k: v for k, v in f.attrs.items() if k not in _PART_ATTRS}
            ranges.append((int(f.attrs["first_sample"]), int(f.attrs["n_samples"]), part, attrs))
    ranges.sort(key=lambda r: r[0])
    first, _, first_part, reference = ranges[0]
    for _, _, part, attrs in ranges[1:]:
        differ = sorted(
            k
            for k in (reference.keys() | attrs.keys()) - set(_INFORMATIONAL_ATTRS)
            if not np.array_equal(reference.get(k), attrs.get(k))
        )
        if differ:
            raise ValueError(
                f"{part} and {first_part} are not parts of one dataset: attribute(s) "
                f"{differ} differ"
            )
    for (start, n, part, _), (next_start, _, next_part, _) in zip(
        ranges[:-1], ranges[1:], strict=True
    ):
        if start + n != next_start:
            what = "overlap" if next_start < start + n else "leave a gap"
            raise ValueError(
                f"{part} (samples {start}..{start + n - 1}) and {next_part} (from {next_start}) "
                f"{what}; the parts must cover one range without overlap"
            )
    total = sum(r[1] for r in ranges)
    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as out:
        with h5py.File(first_part, "r") as f:
            out.attrs.update(f.attrs)
            out.attrs.update({"n_samples": total, "first_sample": first})
            for name in _METADATA_ARRAYS:
                f.copy(f[name], out)
            dsets = {}
            for name in _SAMPLE_ARRAYS:
                d = f[name]
                chunks = None
                if d.chunks is not None:
                    chunks = (1 if d.chunks[0] == 1 else min(total, 1024), *d.chunks[1:])
                dsets[name] = out.create_dataset(
                    name,
                    (total, *d.shape[1:]),
                    d.dtype,
                    chunks=chunks,
                    compression=d.compression,
                    compression_opts=d.compression_opts,
                    shuffle=d.shuffle,
                )
        row = 0
        for _, n, part, _ in ranges:
            with h5py.File(part, "r") as g:
                for name in _SAMPLE_ARRAYS:
                    _copy_rows(g[name], dsets[name], row)
            row += n
    return Path(path)


def _verify_decodes(f, part: Path, block: int = 1024) -> None:
    """Decode every sample array of an open part, block by block; raise ``ValueError``
    naming the part and the rows if a compressed chunk is corrupt (merging copies chunks
    without decoding them, so a bad one would only fail when the merged file is read)."""
    for name in _SAMPLE_ARRAYS:
        data = f[name]
        for start in range(0, data.shape[0], block):
            try:
                data[start : start + block]
            except OSError as err:
                raise ValueError(
                    f"dataset part {part} is corrupt: {name} rows {start}.."
                    f"{min(start + block, data.shape[0]) - 1} cannot be decoded ({err})"
                ) from None


def _is_shard_of(shard: Path, identity: dict, first: int, count: int) -> bool:
    """Whether ``shard`` is a finished shard of samples ``first .. first + count - 1``
    written with the same ``identity`` attributes.

    A shard that exists but is not whole (truncated, a corrupt chunk, samples missing:
    a disk that filled up, a copy cut short) is removed with a one-line warning on stderr,
    so that it is written again instead of failing the merge.
    """
    import sys

    import h5py

    if not shard.is_file():
        return False
    try:
        with h5py.File(shard, "r") as g:
            if not all(g.attrs.get(key) == value for key, value in identity.items()):
                return False  # another configuration's shard: written over
            if (int(g.attrs.get("first_sample", -1)), int(g.attrs.get("n_samples", -1))) != (
                first,
                count,
            ) or any(name not in g or g[name].shape[0] != count for name in _SAMPLE_ARRAYS):
                raise ValueError(f"it does not hold samples {first}..{first + count - 1}")
            _verify_decodes(g, shard, block=256)
        return True
    except (OSError, ValueError, KeyError) as err:
        print(
            f"fairesi: warning: dataset shard {shard} is corrupt or truncated "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "discarding it and writing it again",
            file=sys.stderr,
        )
        shard.unlink(missing_ok=True)
        return False


def _first_line(err: BaseException) -> str:
    """``"Type: first line of the message"`` of an exception."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _copy_rows(source, dest, row: int) -> None:
    """Copy all rows of HDF5 dataset ``source`` into ``dest`` from ``row`` on; per-sample
    chunks are copied still compressed."""
    if source.chunks is not None and source.chunks[0] == 1 and source.chunks == dest.chunks:
        tail = (0,) * (source.ndim - 1)
        for i in range(source.shape[0]):
            mask, chunk = source.id.read_direct_chunk((i, *tail))
            dest.id.write_direct_chunk((row + i, *tail), chunk, mask)
    else:
        dest[row : row + source.shape[0]] = source[()]


class DatasetFile(torch.utils.data.Dataset):
    """Samples written by :func:`write_dataset`, as a map-style ``torch`` dataset.

    The file is opened lazily in each process, so the object can be handed to DataLoader
    workers. Use ``collate_fn=collate_batch``.

    Parameters
    ----------
    path : path-like
        An HDF5 file written by :func:`write_dataset`.

    Attributes
    ----------
    config : SimConfig
    seed : int
    split : str
    n_regions : int
    attrs : dict
        All file attributes.
    """

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"dataset file {self.path} does not exist")
        check_hdf5_metadata(self.path)
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(
                f"{self.path} is not a readable HDF5 file ({_first_line(err)})"
            ) from None
        try:
            with f:
                if f.attrs.get("format") != _H5_FORMAT:
                    raise ValueError(
                        f"{self.path} is not a fairesi dataset (format attribute "
                        f"{f.attrs.get('format')!r}, expected {_H5_FORMAT!r})"
                    )
                self.attrs = dict(f.attrs)
                self._len = f["x"].shape[0]
            self.config = SimConfig.from_dict(json.loads(self.attrs["config"]))
            self.seed = int(self.attrs["seed"])
            self.split = str(self.attrs["split"])
            self.n_regions = int(json.loads(self.attrs["head_model"])["n_regions"])
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as err:
            if isinstance(err, ValueError) and str(err).startswith(str(self.path)):
                raise
            raise ValueError(
                f"dataset file {self.path} is damaged: its metadata cannot be read "
                f"({_first_line(err)}); write the file again"
            ) from None
        self._file = None
        self._file_pid = -1

    def _h5(self):
        import h5py

        # A handle inherited through fork (DataLoader workers) is not safe to share.
        if self._file is None or self._file_pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._file_pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return self._len

    def batch(self, positions: Sequence[int] | torch.Tensor) -> Batch:
        """Rows ``positions`` of the file as a :class:`Batch` (on the CPU).

        Parameters
        ----------
        positions : sequence of int or torch.Tensor (B,) int64
            Rows in [0, len(self)), in any order, repeats allowed.

        Returns
        -------
        Batch
            ``x`` (B, C, T) float32, ``target`` (B, R, T) float32 (both normalised,
            unitless), ``source_mask`` (B, R) bool, ``centres`` (B, N_s) int64.
        """
        positions = np.asarray(torch.as_tensor(positions, dtype=torch.int64))
        if positions.ndim != 1 or (
            positions.size and (positions.min() < 0 or positions.max() >= self._len)
        ):
            raise ValueError(f"positions must be a 1-D array within [0, {self._len})")
        f = self._h5()
        # h5py reads increasing unique indices; read sorted rows and undo the order.
        rows, inverse = np.unique(positions, return_inverse=True)

        def read(name: str) -> torch.Tensor:
            try:
                return torch.from_numpy(f[name][rows][inverse])
            except (OSError, KeyError, RuntimeError, TypeError) as err:
                raise ValueError(
                    f"dataset file {self.path} is damaged: {name} of rows {rows[:5].tolist()}"
                    f"... cannot be read ({_first_line(err)}); write the file again"
                ) from None

        regions = read("target_regions").long()
        if regions.numel() and (regions.min() < -1 or regions.max() >= self.n_regions):
            raise ValueError(
                f"dataset file {self.path} is damaged: target_regions of rows "
                f"{rows[:5].tolist()}... lie outside [-1, {self.n_regions}); write the file again"
            )
        target = scatter_regions(regions, read("target_values"), self.n_regions)
        mask = region_mask(regions, self.n_regions)
        x = read("x")
        for name, values in (("x", x), ("target_values", target)):
            if not torch.isfinite(values).all():
                raise ValueError(
                    f"dataset file {self.path}: {name} of rows {rows[:5].tolist()}... holds "
                    "NaN/Inf; write the file again"
                )
        return Batch(x=x, target=target, source_mask=mask, centres=read("centres"))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Row ``i`` as a dict of ``x``, ``target``, ``source_mask``, ``centres``."""
        batch = self.batch([int(i)])
        return {f.name: getattr(batch, f.name)[0] for f in dataclasses.fields(batch)}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.batch(list(indices))

    def close(self) -> None:
        """Close the HDF5 file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None
