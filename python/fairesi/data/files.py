"""Dataset files as a source of training batches (``fairesi train --data``).

:class:`DatasetSplits` holds the files that ``fairesi simulate dataset`` wrote for one data
configuration (one file per split, each naming its split in its attributes) and offers the
part of the :class:`~fairesi.data.synth.Synthesizer` interface that
:func:`~fairesi.data.sampling.iter_batches` uses (``seed``, ``config``, ``split_size``,
``batch``). A file that holds a whole split (samples ``0 .. N-1``) gives exactly the
batches that on-the-fly synthesis with the same seed gives; a file of a sample range is
used as a split of its own rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from fairesi.data.batch import Batch
from fairesi.data.config import SPLITS, SimConfig
from fairesi.data.h5 import DatasetFile

__all__ = ["DatasetSplits"]


class DatasetSplits:
    """Dataset files of one configuration and seed, one per split.

    Parameters
    ----------
    files : mapping
        Split name -> :class:`~fairesi.data.h5.DatasetFile`; all of one configuration,
        seed and head model.

    Attributes
    ----------
    config : SimConfig
    seed : int
    n_regions : int
    head_model_name : str
    """

    def __init__(self, files: Mapping[str, DatasetFile]) -> None:
        if not files:
            raise ValueError("no dataset files given")
        self.files = dict(files)
        first = next(iter(self.files.values()))
        for split, f in self.files.items():
            if f.split != split:
                raise ValueError(f"{f.path} holds the {f.split} split, not {split}")
            for what in ("config", "seed", "n_regions"):
                if getattr(f, what) != getattr(first, what):
                    raise ValueError(
                        f"{f.path} and {first.path} differ in {what}: they are not splits of "
                        "one dataset"
                    )
        self.config: SimConfig = first.config
        self.seed = first.seed
        self.n_regions = first.n_regions
        self.head_model_name = str(json.loads(first.attrs["head_model"])["name"])

    @classmethod
    def open(cls, path: str | Path) -> DatasetSplits:
        """Open a directory of dataset files, or one file.

        Parameters
        ----------
        path : path-like
            A directory: every ``*.h5`` in it is a dataset file, at most one per split.
            A file: that file alone (its own split).

        Returns
        -------
        splits : DatasetSplits
        """
        path = Path(path)
        if path.is_dir():
            paths = sorted(path.glob("*.h5"))
            if not paths:
                raise FileNotFoundError(f"{path} holds no dataset files (*.h5)")
        elif path.is_file():
            paths = [path]
        else:
            raise FileNotFoundError(f"dataset path {path} does not exist")
        files: dict[str, DatasetFile] = {}
        for p in paths:
            f = DatasetFile(p)
            if f.split in files:
                raise ValueError(
                    f"{path} holds two files of the {f.split} split ({files[f.split].path.name}, "
                    f"{p.name}); merge them first with `fairesi simulate merge`"
                )
            files[f.split] = f
        return cls(files)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in ``SPLITS`` order."""
        return tuple(s for s in SPLITS if s in self.files)

    def split_size(self, split: str) -> int:
        """Number of samples of ``split`` (the rows of its file)."""
        if split not in self.files:
            raise ValueError(
                f"the dataset files hold no {split} split (they hold {list(self.splits)}); "
                f"write it with `fairesi simulate dataset --split {split}`"
            )
        return len(self.files[split])

    def batch(self, split: str, index: torch.Tensor, draw: int = 0) -> Batch:
        """Rows ``index`` (B,) of the split's file as a :class:`Batch` (CPU, float32).

        ``draw`` must be 0: a file holds one realisation of every sample (redraws need
        on-the-fly synthesis).
        """
        if draw != 0:
            raise ValueError(
                "dataset files hold one realisation of each sample: training with --redraw "
                "needs on-the-fly synthesis (drop --data)"
            )
        self.split_size(split)
        return self.files[split].batch(index)
