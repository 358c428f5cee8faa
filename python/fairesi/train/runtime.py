"""What a training process needs around the loop: SIGTERM as a resumable interrupt,
torchrun's process group and device, and the CSV/TensorBoard log.

Used by :mod:`fairesi.train.loop` only.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairesi.io import atomic_path

__all__ = ["LOG_FIELDS", "Terminated", "TrainingLog"]

LOG_FIELDS = (
    "epoch",
    "step",
    "kind",
    "loss",
    "val_loss",
    "lr",
    "samples_per_s",
    "wall_s",
    "val_loss_zero",
)


class Terminated(KeyboardInterrupt):
    """Raised in :func:`train` when the process receives SIGTERM (a batch scheduler's stop,
    ``kill``); like Ctrl-C, it first saves a resumable ``last.pt``."""

    #: Exit status of the ``fairesi`` command (128 + SIGTERM, as a shell reports it).
    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signum}")


class SigtermAsInterrupt:
    """SIGTERM handling during training: :meth:`install` makes SIGTERM raise
    :class:`Terminated`, :meth:`ignore` shields the checkpoint write from a second signal,
    :meth:`deferred` holds SIGTERM and Ctrl-C back while a block commits state,
    :meth:`restore` puts the previous handler back. Python delivers signals to the main
    thread only, so elsewhere (e.g. a training thread of a GUI) they do nothing."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def install(self) -> None:
        """Make SIGTERM raise :class:`Terminated` (main thread only)."""
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def ignore(self) -> None:
        """Ignore SIGTERM from now on, e.g. while the final checkpoint is written."""
        if self._active:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Run a block with SIGTERM and SIGINT held back; one that arrived meanwhile is
        raised (as :class:`Terminated` or ``KeyboardInterrupt``) when the block is done,
        so the block's state changes are committed whole or not at all."""
        if not self._active:
            yield
            return
        caught: list[int] = []
        term = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
        interrupt = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, term)
            signal.signal(signal.SIGINT, interrupt)
        if signal.SIGTERM in caught:
            raise Terminated(f"received signal {int(signal.SIGTERM)}")
        if caught:
            raise KeyboardInterrupt

    def restore(self) -> None:
        """Put back the SIGTERM handler that :meth:`install` replaced."""
        if self._active and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, else gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device.startswith("cuda")
        if use_cuda:
            # NCCL needs each rank bound to its own GPU before the group forms.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def resolve_device(name: str, dist: Distributed) -> torch.device:
    """The torch device of ``name`` ('cpu', 'cuda', 'cuda:N'); under torchrun each rank
    takes its ``LOCAL_RANK`` GPU. Raises ``ValueError`` when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here")
        if dist.world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


class TrainingLog:
    """CSV (and, if installed, TensorBoard) training log, written by rank 0 only."""

    def __init__(self, out_dir: Path, resumed: tuple[int, int] | None) -> None:
        """``resumed``: (step, epoch) of the checkpoint a run continues from (its next
        epoch to commit), or None for a new run, which starts an empty log."""
        self.path = out_dir / "train_log.csv"
        if resumed is None or not self.path.exists():
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerow(LOG_FIELDS)
        else:
            # Rows written after the checkpoint we resume from belong to lost work: later
            # steps, and the row of an epoch whose end the checkpoint had not committed (a
            # kill -9 between the row and last.pt), which the resumed run writes again.
            step, epoch = resumed
            with open(self.path, newline="") as f:
                rows = [
                    r
                    for r in csv.DictReader(f)
                    if int(r["step"]) <= step
                    and not (r["kind"] == "epoch" and int(r["epoch"]) >= epoch)
                ]
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, LOG_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional
            pass
        else:
            self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, **row: Any) -> None:
        """Append one row (keys of ``LOG_FIELDS``; missing ones left empty) to the CSV,
        and its losses, rate and throughput to TensorBoard."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})
        if self.tensorboard is not None:
            for key in ("loss", "val_loss", "val_loss_zero", "lr", "samples_per_s"):
                if row.get(key, "") != "":
                    self.tensorboard.add_scalar(f"{row['kind']}/{key}", row[key], row["step"])

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the CSV is closed after each row)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
