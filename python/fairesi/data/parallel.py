"""Write one dataset file with the workers of a Dask cluster (``fairesi simulate dataset
--dask``): the sample range is cut into parts, every part is written by
:func:`~fairesi.data.h5.write_dataset` as a Dask task, and the parts are joined by
:func:`~fairesi.data.h5.merge_datasets`, so the file is the one a single writer makes.

``dask`` is imported only through :mod:`fairesi.cluster` when a client is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from contextlib import closing
from pathlib import Path
from typing import Any

from fairesi.data.h5 import (
    _H5_FORMAT,
    _SHARD_SAMPLES,
    check_range,
    merge_datasets,
    write_dataset,
)
from fairesi.data.synth import Synthesizer

__all__ = ["write_dataset_dask"]


def _write_part(
    synth: Synthesizer,
    path: str,
    split: str,
    start: int,
    n: int,
    batch_size: int,
    compression_level: int,
) -> str:
    """One Dask task: samples ``start .. start + n - 1`` of ``split`` written to ``path``."""
    write_dataset(
        path,
        synth,
        split,
        n,
        start=start,
        batch_size=batch_size,
        progress=False,
        compression_level=compression_level,
    )
    return path


def _parts_key(synth: Synthesizer, split: str, compression_level: int) -> str:
    """Hash of what a part must share with the call that reuses it."""
    hm = synth.head_model
    identity = {
        "format": _H5_FORMAT,
        "config": synth.config.to_dict(),
        "seed": str(synth.seed),
        "split": split,
        "head_model": {"name": hm.name, "n_regions": hm.n_regions, "metadata": hm.metadata},
        "bank_metadata": dict(synth.bank.metadata),
        "compression_level": compression_level,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_dataset_dask(
    path: str | Path,
    synth: Synthesizer,
    split: str,
    n: int | None = None,
    *,
    client: Any,
    start: int = 0,
    part_samples: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    compression_level: int = 4,
) -> Path:
    """Write samples ``start .. start + n - 1`` of ``split`` as :func:`write_dataset` does,
    the work spread over the workers of a Dask cluster.

    The range is cut into parts of ``part_samples`` samples; each part is one Dask task
    that writes ``<path>.parts/<key>/<first>-<count>.h5`` (``key`` a hash of the
    synthesizer's configuration, seed, head model, bank, split and compression), and the
    parts are merged into ``path`` (atomically) and then deleted. The result holds the
    same attributes, arrays and compressed chunks as one :func:`write_dataset` call,
    whatever the number of workers and the order they finish in. Parts finished by an
    interrupted call are kept and reused when it is run again with the same arguments
    and part size; a part whose worker died is written again by another worker.

    ``path``'s folder must be on a file system that every worker can write (on one
    machine, e.g. ``local:N``, it always is).

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file.
    synth : Synthesizer
        Sent once to every worker.
    split : {'train', 'val', 'test'}
    n : int, optional
        Number of samples (default: the rest of the split from ``start``).
    client : dask.distributed.Client
        E.g. from :func:`fairesi.cluster.connect`.
    start : int
        First sample index.
    part_samples : int, optional
        Samples per part (task), at most 4096. Default: about four parts per worker, at
        least ``batch_size`` and at most 4096 samples each.
    batch_size : int
        Samples synthesised per step inside a task.
    progress : bool
        Show a tqdm progress bar (samples of finished parts).
    compression_level : int
        gzip level (0-9).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from tqdm import tqdm

    from fairesi.cluster import map_unordered

    n = check_range(synth, split, start, n, batch_size)
    if part_samples is None:
        workers = max(1, len(client.scheduler_info()["workers"]))
        part_samples = min(_SHARD_SAMPLES, max(batch_size, math.ceil(n / (4 * workers))))
    if not 1 <= part_samples <= _SHARD_SAMPLES:
        raise ValueError(f"part_samples must be in [1, {_SHARD_SAMPLES}], got {part_samples}")
    path = Path(path)
    root = path.with_name(path.name + ".parts")
    folder = root / _parts_key(synth, split, compression_level)
    folder.mkdir(parents=True, exist_ok=True)
    parts, todo = [], []
    bar = tqdm(total=n, desc=f"{split} samples", unit="sample", disable=not progress)
    try:
        for first in range(start, start + n, part_samples):
            count = min(part_samples, start + n - first)
            part = folder / f"{first:09d}-{count}.h5"  # written atomically: exists = done
            parts.append(part)
            if part.is_file():
                bar.update(count)
            else:
                args = (str(part), split, first, count, batch_size, compression_level)
                todo.append((count, args))
        tasks = map_unordered(client, _write_part, todo, shared=synth, name="fairesi-dataset")
        with closing(tasks):
            for count, _ in tasks:
                bar.update(count)
        merge_datasets(parts, path)
    finally:
        bar.close()
    shutil.rmtree(root)
    return path
