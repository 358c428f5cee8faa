"""Training: one configuration, one loop, checkpoints that resume exactly.

- :mod:`~fairesi.train.config`: :class:`TrainConfig` ``(data, optim, run)`` and the presets.
- :mod:`~fairesi.train.loop`: :class:`Trainer` (setup / fit / validate / save) and
  :func:`train`, the paper's recipe (section III.B) with exact resume, SIGTERM handling and
  torchrun DDP.
- :mod:`~fairesi.train.checkpoint`: the checkpoint file format, :func:`load_checkpoint`.

Layering: this package imports :mod:`fairesi.data`, :mod:`fairesi.experiment` and
:mod:`fairesi.models`; :mod:`fairesi.evaluate`, :mod:`fairesi.benchmark`,
:mod:`fairesi.export` and the CLI import it, never the reverse.
"""

from fairesi.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    load_checkpoint,
    read_checkpoint,
    train_config_of,
)
from fairesi.train.config import PRESETS, OptimConfig, RunConfig, TrainConfig
from fairesi.train.loop import (
    LOG_FIELDS,
    NonFiniteError,
    Terminated,
    Trainer,
    source_loss,
    train,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LOG_FIELDS",
    "PRESETS",
    "Checkpoint",
    "NonFiniteError",
    "OptimConfig",
    "RunConfig",
    "Terminated",
    "TrainConfig",
    "Trainer",
    "load_checkpoint",
    "read_checkpoint",
    "source_loss",
    "train",
    "train_config_of",
]
