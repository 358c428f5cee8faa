"""Epochs over a :class:`~fairesi.data.synth.Synthesizer`: the seeded epoch order, the
batches of an epoch (for the training loop, with exact resume, redraws and per-rank
slices), and the ``torch.utils.data`` view (:class:`SynthDataset` + :func:`collate_batch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import torch

from fairesi.data.batch import Batch
from fairesi.data.config import check_split
from fairesi.data.rng import M32, STREAM_ORDER, bits, sample_keys
from fairesi.data.synth import Synthesizer

__all__ = ["SynthDataset", "collate_batch", "epoch_order", "iter_batches"]


def epoch_order(synth: Synthesizer, split: str, *, shuffle: bool, epoch: int) -> torch.Tensor:
    """Order in which an epoch visits the split's samples.

    Parameters
    ----------
    synth : Synthesizer
    split : {'train', 'val', 'test'}
    shuffle : bool
        False: the samples in index order.
    epoch : int
        Epoch number (only used with ``shuffle``).

    Returns
    -------
    torch.Tensor (N,) int64
        A permutation of ``0 .. N - 1`` (N = ``synth.split_size(split)``), on the CPU.
        With ``shuffle`` it depends only on (seed, split, epoch), so it is the same on any
        machine and torch version.
    """
    n = synth.split_size(split)
    index = torch.arange(n, dtype=torch.int64)
    if not shuffle:
        return index
    key = sample_keys(synth.seed, split, torch.tensor([epoch & M32]), STREAM_ORDER)
    return torch.argsort(bits(key, index), stable=True)


def iter_batches(
    synth: Synthesizer,
    split: str,
    batch_size: int,
    *,
    shuffle: bool,
    epoch: int,
    start_batch: int = 0,
    drop_last: bool = False,
    redraw: bool = False,
    draw: int | None = None,
    n: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """Yield the batches of one epoch (for the training loop and exact resume).

    Batch ``b`` holds the samples ``order[b * batch_size : (b + 1) * batch_size]`` of the
    epoch order (:func:`epoch_order` of the whole split), of which this rank synthesises
    ``[rank::world_size]``.

    Parameters
    ----------
    synth : Synthesizer
        Batches are composed on its device.
    split : {'train', 'val', 'test'}
    batch_size : int
        Samples per batch, over all ranks together.
    shuffle : bool
        Visit the samples in the epoch's own random order (see :func:`epoch_order`).
    epoch : int
        Epoch number; with ``shuffle`` each epoch has its own order.
    start_batch : int
        Skip the first ``start_batch`` batches: resuming after ``k`` finished batches with
        ``start_batch=k`` continues with exactly the batches an uninterrupted run would see.
        In [0, number of batches of the epoch].
    drop_last : bool
        Drop a final batch smaller than ``batch_size`` (ignored with ``n``).
    redraw : bool
        Use draw ``epoch`` of every sample (see :meth:`Synthesizer.batch`): each epoch
        sees new realisations of the same source locations.
    draw : int, optional
        The draw of every sample, in [0, 2**32) (0 = the dataset's own samples). Default:
        ``epoch`` with ``redraw``, else 0. Cannot be combined with ``redraw``.
    n : int, optional
        Limit the epoch to ``n`` samples (1 <= n <= split size), rounded down to whole
        batches but at least one batch: ``max(1, n // batch_size)`` batches, each of
        ``batch_size`` samples (or the whole split, if smaller) from the epoch order of the
        whole split, so a limited shuffled epoch still draws from the whole split.
        Default: all samples, in ``ceil(N / batch_size)`` batches (``N // batch_size``
        with ``drop_last``).
    rank, world_size : int
        Distributed data parallel: rank ``rank`` (0 <= rank < world_size) gets only the
        slice ``[rank::world_size]`` of each batch's samples, so that the ranks together
        see every batch once. Default: one process, whole batches.

    Yields
    ------
    Batch
        ``x`` (b, C, T), ``target`` (b, R, T), ``source_mask`` (b, R) and ``centres``
        (b, N_s), normalised, on ``synth.device``; b = this rank's share of the batch.

    Raises
    ------
    ValueError
        At the first ``next()``, if an argument is out of range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if draw is None:
        draw = epoch if redraw else 0
    elif redraw:
        raise ValueError("give redraw=True or an explicit draw, not both")
    order = epoch_order(synth, split, shuffle=shuffle, epoch=epoch)
    if n is not None:
        if not 1 <= n <= len(order):
            raise ValueError(f"n must be in [1, {len(order)}] for the {split} split, got {n}")
        n_batches = max(1, n // batch_size)
    else:
        n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    if not 0 <= start_batch <= n_batches:
        raise ValueError(f"start_batch must be in [0, {n_batches}], got {start_batch}")
    for b in range(start_batch, n_batches):
        index = order[b * batch_size : (b + 1) * batch_size]
        yield synth.batch(split, index[rank::world_size], draw=draw)


class SynthDataset(torch.utils.data.Dataset):
    """Map-style ``torch.utils.data`` view of one split of a :class:`Synthesizer`.

    Use with ``DataLoader(..., collate_fn=collate_batch)``: the DataLoader fetches whole
    batches through :meth:`__getitems__` (one batched synthesis call per batch). Samples
    depend only on their index, so any ``num_workers`` gives identical batches. With
    workers, build the synthesizer on the CPU and move batches to the GPU in the loop (or
    skip the DataLoader and use :func:`iter_batches` on a CUDA synthesizer).

    Parameters
    ----------
    synth : Synthesizer
    split : {'train', 'val', 'test'}
    """

    def __init__(self, synth: Synthesizer, split: str) -> None:
        check_split(split)
        self.synth = synth
        self.split = split

    def __len__(self) -> int:
        return self.synth.split_size(self.split)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Sample ``i`` as a dict of ``x`` (C,T), ``target`` (R,T), ``source_mask`` (R,),
        ``centres`` (N_s,)."""
        batch = self.synth.batch(self.split, torch.tensor([int(i)]))
        return {f.name: getattr(batch, f.name)[0] for f in dataclasses.fields(batch)}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.synth.batch(self.split, torch.as_tensor(list(indices), dtype=torch.int64))


def collate_batch(items: Batch | Sequence[dict[str, torch.Tensor]]) -> Batch:
    """DataLoader ``collate_fn``: pass a :class:`Batch` through, stack per-sample dicts.

    Parameters
    ----------
    items : Batch or sequence of dict
        A whole batch (from ``__getitems__``), or B per-sample dicts of ``x`` (C, T),
        ``target`` (R, T), ``source_mask`` (R,), ``centres`` (N_s,).

    Returns
    -------
    Batch
        ``x`` (B, C, T), ``target`` (B, R, T), ``source_mask`` (B, R), ``centres``
        (B, N_s).
    """
    if isinstance(items, Batch):
        return items
    return Batch(**{name: torch.stack([it[name] for it in items]) for name in items[0]})
