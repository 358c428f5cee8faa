"""Training: one config dataclass, one loop, checkpoints that resume exactly.

The loop (:func:`train`) follows the paper's recipe (section III.B): MSE loss between the
estimated and the true normalised source map, Adam with learning rate 1e-4 and weight decay
1e-5, learning rate halved whenever the validation loss stops improving
(``ReduceLROnPlateau``), and early stopping once it has not improved for
``early_stop_patience`` epochs. Mixed precision (autocast + ``GradScaler``) is used on CUDA
only; on CPU it is a no-op.

Checkpoints
-----------
A checkpoint is one ``.pt`` file written atomically (:func:`fairesi.io.atomic_path`) and made
of plain containers only, so ``torch.load(path, weights_only=True)`` reads it::

    format        "fairesi-checkpoint"
    version       1
    state_dict    model parameters and buffers
    config        {"model": {"name", "hyper"}, "data": SimConfig fields,
                   "head_model": {"name", "n_regions", "modality", "ch_names"},
                   "train": TrainConfig fields}
    metrics       {"epoch", "step", "train_loss", "val_loss", "val_loss_zero", "best_val_loss", ...}
    optimizer, scheduler, scaler   their ``state_dict()``
    rng           {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    progress      {"epoch", "batch", "step", "epoch_loss_sum", "epoch_samples",
                   "best_val_loss", "bad_epochs", "finished"}

``last.pt`` is written every ``checkpoint_every`` steps, at the end of every epoch, when a
step or time budget runs out, on Ctrl-C and on SIGTERM (a batch scheduler's stop);
``best.pt`` whenever the validation loss improves. Resuming from ``last.pt`` restores the
model, optimizer, scheduler, scaler and random state and continues with the very next
batch (the epoch order of ``fairesi.data.epoch_order``, as in ``iter_batches(..., epoch,
start_batch)``), so a run cut into pieces gives the same weights, bit for bit, as one
uninterrupted run on the same machine and thread count.

Distributed training
--------------------
Launched with ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the loop wraps the model in
``DistributedDataParallel``; every rank takes a disjoint shard of each batch's sample indices,
and only rank 0 writes logs and checkpoints (the logged training loss is rank 0's shard; the
validation loss is reduced over all ranks). Nothing else changes, e.g.
``torchrun --nproc_per_node=8 -m fairesi train --device cuda ...``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import os
import pickle
import signal
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairesi.io import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fairesi-checkpoint"
CHECKPOINT_VERSION = 1
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

# Presets are partial configurations; a TOML file and command-line flags override them.
# ``model_hyper["preset"]`` picks the model's own size preset (e.g. FairEsiConfig.PRESETS).
PRESETS: dict[str, dict[str, Any]] = {
    # Smoke test and README demo: about a minute on 2 CPU cores. The toy head model and the
    # analytic waveform bank need no simulation; their numbers say nothing about accuracy.
    "tiny": {
        "head_model": "toy",
        "bank": "synthetic",
        "n_samples": 1200,
        "n_train_samples": 384,
        "n_val_samples": 64,
        "n_times": 64,
        "batch_size": 16,
        "max_epochs": 4,
        "lr": 1e-3,
        "checkpoint_every": 16,
        "model_hyper": {"preset": "tiny"},
    },
    # The CPU run: full SimMEG head model and bank, the model's 'cpu' size preset.
    # A 2-core CPU sees only ~10k samples an hour, so an "epoch" is 1024 samples drawn from
    # the whole shuffled training split (the LR schedule and early stopping need several
    # validations per hour) and the learning rate starts 10x above the paper's.
    # Combine with --max-minutes and --resume.
    "cpu": {
        "dataset": "SimMEG",
        "snr_db": 5.0,
        "n_sources": 1,
        "n_rings": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "max_epochs": 1000,
        "checkpoint_every": 20,
        "n_train_samples": 1024,
        "n_val_samples": 256,
        "model_hyper": {"preset": "cpu"},
    },
    # The paper's settings (section III.B) on the full configuration.
    "paper": {
        "dataset": "SimMEG",
        "batch_size": 64,
        "lr": 1e-4,
        "max_epochs": 200,
        "model_hyper": {"preset": "paper"},
    },
}


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Built from a preset, a TOML file and command-line flags (later ones win) by
    :meth:`from_sources`; stored in every checkpoint under ``config["train"]``.

    Attributes
    ----------
    model : str
        Name in ``fairesi.models.MODELS`` ('fair_esi', 'deepsif', 'convdip', ...).
    model_hyper : dict
        Keyword arguments for the model's ``from_head_model`` (its hyper-parameters).
    dataset : str
        ``SimConfig`` preset name, 'SimMEG' or 'SimEEG'.
    snr_db, n_sources, n_rings : float, int, int
        The Table II configuration: sensor SNR r (dB), number of sources N_s, neighbour
        rings N_n.
    n_times : int or None
        Samples per trial; None keeps the dataset preset's value (SimMEG 500, SimEEG 260).
    n_samples : int or None
        Size of the whole simulated configuration (split 10:1:1); None keeps 47,904.
    n_train_samples, n_val_samples : int or None
        Samples per epoch (None: the whole split). A training epoch takes the first so
        many of that epoch's shuffled order of the whole training split; validation
        always uses the first so many validation samples.
    disjoint_centres : bool
        ``SimConfig.disjoint_centres``: True (default, SPEC §4) gives each split its own
        centre regions; False draws every split's centres from all regions (the paper's
        protocol, a random split of one sample set).
    redraw : bool
        Train on draw ``epoch`` of each sample (``Synthesizer.batch(..., draw=)``): every
        epoch sees the training split's source locations with fresh waveforms, source
        SNRs, background and sensor noise, instead of the same samples again (DeepSIF
        redraws the sensor noise and source scale at every access). Validation and test
        samples never change.
    seed : int
        Seed of the data synthesis, of the model initialisation and of dropout.
    head_model : str
        'default' (embedded fsaverage5 model), 'toy' (50-region test model) or a file saved
        with ``HeadModel.save``.
    bank : str
        'default' (``fairesi.simulate.default_bank_path()``), a bank file, or 'synthetic'
        (the analytic stand-in for tests and demos; not the Jansen-Rit waveforms).
    batch_size : int
        Samples per optimizer step (over all ranks together).
    max_epochs : int
        Upper limit on epochs.
    lr, weight_decay : float
        Adam learning rate and weight decay.
    lr_factor, lr_patience : float, int
        ``ReduceLROnPlateau`` factor and patience (epochs) on the validation loss.
    early_stop_patience : int
        Stop after this many epochs without a better validation loss.
    checkpoint_every : int
        Write ``last.pt`` every so many optimizer steps (and at every epoch end).
    max_steps : int or None
        Stop (resumably) once this many optimizer steps have been taken in total.
    max_minutes : float or None
        Stop (resumably) after this much wall time in this invocation.
    out_dir : str
        Directory for ``last.pt``, ``best.pt``, ``train_log.csv`` and TensorBoard events.
    device : str
        'cpu' or 'cuda' (or 'cuda:N').
    threads : int or None
        ``torch.set_num_threads``; None leaves torch's default.
    amp : bool
        Mixed precision on CUDA (ignored on CPU).
    progress : bool
        Show a tqdm progress bar.
    """

    model: str = "fair_esi"
    model_hyper: dict[str, Any] = field(default_factory=dict)
    dataset: str = "SimMEG"
    snr_db: float = 5.0
    n_sources: int = 1
    n_rings: int = 2
    n_times: int | None = None
    n_samples: int | None = None
    n_train_samples: int | None = None
    n_val_samples: int | None = None
    disjoint_centres: bool = True
    redraw: bool = False
    seed: int = 0
    head_model: str = "default"
    bank: str = "default"
    batch_size: int = 32
    max_epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-5
    lr_factor: float = 0.5
    lr_patience: int = 2
    early_stop_patience: int = 6
    checkpoint_every: int = 200
    max_steps: int | None = None
    max_minutes: float | None = None
    out_dir: str = "runs/train"
    device: str = "cpu"
    threads: int | None = None
    amp: bool = True
    progress: bool = True

    # Fields that may change when a run is resumed; all others define the run itself.
    RUN_CONTROL = frozenset(
        {
            "max_epochs",
            "checkpoint_every",
            "max_steps",
            "max_minutes",
            "out_dir",
            "device",
            "threads",
            "amp",
            "progress",
            "early_stop_patience",
        }
    )

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_epochs", "checkpoint_every", "n_sources", "n_rings")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("n_times", "n_samples", "n_train_samples", "n_val_samples", "max_steps"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not isinstance(self.model_hyper, Mapping):
            raise TypeError(f"model_hyper must be a mapping, got {type(self.model_hyper)}")
        self.model_hyper = dict(self.model_hyper)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the configuration fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_sources(
        cls,
        preset: str | None = None,
        toml_path: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> TrainConfig:
        """Merge a preset, a TOML file and explicit overrides (later ones win).

        Parameters
        ----------
        preset : str or None
            A key of :data:`PRESETS` ('tiny', 'cpu', 'paper').
        toml_path : path-like or None
            TOML file whose top-level keys are field names of this class; ``model_hyper``
            is a table and is merged key by key with the preset's.
        overrides : mapping or None
            Field values, e.g. from command-line flags.

        Returns
        -------
        config : TrainConfig
        """
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
            values = copy.deepcopy(PRESETS[preset])
        layers: list[tuple[str, Mapping[str, Any]]] = []
        if toml_path is not None:
            path = Path(toml_path)
            if not path.is_file():
                raise FileNotFoundError(f"training config file {path} does not exist")
            try:
                layers.append((str(path), tomllib.loads(path.read_text())))
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path} is not valid TOML: {err}") from None
        if overrides:
            layers.append(("overrides", overrides))
        known = set(cls.field_names())
        for source, layer in layers:
            unknown = sorted(set(layer) - known)
            if unknown:
                raise ValueError(
                    f"unknown training option(s) {unknown} in {source}; valid: {sorted(known)}"
                )
            for key, value in layer.items():
                if key == "model_hyper":
                    values["model_hyper"] = {**values.get("model_hyper", {}), **dict(value)}
                else:
                    values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-container copy (JSON-able, ``weights_only``-loadable)."""
        return copy.deepcopy(dataclasses.asdict(self))


# --------------------------------------------------------------------------------------------
# Resolving the inputs of a run


def load_head_model(spec: str):
    """Return the head model named by ``spec``: 'default', 'toy', or a file path.

    Parameters
    ----------
    spec : str
        'default' (embedded fsaverage5 / 994-region model), 'toy' (``HeadModel.toy()``, for
        tests) or the path of a file written by ``HeadModel.save``.

    Returns
    -------
    head_model : fairesi.headmodel.HeadModel
    """
    from fairesi.headmodel import HeadModel

    if spec == "default":
        return HeadModel.default()
    if spec == "toy":
        return HeadModel.toy()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"head model {spec!r} is neither 'default', 'toy' nor an existing file"
        )
    return HeadModel.load(path)


def load_bank(spec: str, head_model, seed: int = 0):
    """Return the waveform bank named by ``spec``: 'default', 'synthetic', or a file path.

    Parameters
    ----------
    spec : str
        'default' (the file at ``fairesi.simulate.default_bank_path()``), 'synthetic' (the
        analytic stand-in of ``WaveformBank.synthetic``, for tests and demos only) or the path
        of a bank file.
    head_model : fairesi.headmodel.HeadModel
        The bank must cover its regions.
    seed : int
        Seed of the synthetic bank.

    Returns
    -------
    bank : fairesi.simulate.bank.WaveformBank
    """
    from fairesi.simulate import default_bank_path
    from fairesi.simulate.bank import WaveformBank

    if spec == "synthetic":
        logger.warning(
            "using the analytic stand-in waveform bank ('synthetic'): fine for tests and "
            "demos, but results are not comparable with the paper's Jansen-Rit data"
        )
        return WaveformBank.synthetic(head_model.n_regions, seed=seed)
    path = Path(default_bank_path() if spec == "default" else spec)
    if not path.is_file():
        hint = " (build it first with `fairesi simulate bank`)" if spec == "default" else ""
        raise FileNotFoundError(f"waveform bank {path} does not exist{hint}")
    return WaveformBank.load(path)


def make_sim_config(config: TrainConfig):
    """The ``fairesi.data.SimConfig`` of a training configuration."""
    from fairesi.data import SimConfig

    overrides: dict[str, Any] = {
        "snr_db": config.snr_db,
        "n_sources": config.n_sources,
        "n_rings": config.n_rings,
        "disjoint_centres": config.disjoint_centres,
    }
    if config.n_times is not None:
        overrides["n_times"] = config.n_times
    if config.n_samples is not None:
        overrides["n_samples"] = config.n_samples
    return SimConfig.preset(config.dataset, **overrides)


def head_model_signature(head_model, modality: str) -> dict[str, Any]:
    """What a checkpoint records about its head model, to refuse a mismatched one later."""
    lead_field = head_model.lead_field(modality)
    return {
        "name": head_model.name,
        "n_regions": int(head_model.n_regions),
        "modality": modality,
        "ch_names": list(lead_field.ch_names),
    }


def check_head_model(config: Mapping[str, Any], head_model, source: str = "checkpoint") -> None:
    """Raise ``ValueError`` if ``head_model`` differs from the one a checkpoint was trained on.

    Parameters
    ----------
    config : mapping
        The checkpoint's ``config`` (its ``head_model`` entry is compared).
    head_model : fairesi.headmodel.HeadModel
        The head model the caller wants to use.
    source : str
        Names the checkpoint in the message.
    """
    saved = config["head_model"]
    modality = saved["modality"]
    if int(head_model.n_regions) != int(saved["n_regions"]):
        raise ValueError(
            f"{source} was trained on head model {saved['name']!r} with {saved['n_regions']} "
            f"regions, but head model {head_model.name!r} has {head_model.n_regions} regions"
        )
    ch_names = list(head_model.lead_field(modality).ch_names)
    if ch_names != list(saved["ch_names"]):
        detail = (
            f"{len(saved['ch_names'])} {modality} channels, but head model "
            f"{head_model.name!r} has {len(ch_names)}"
            if len(ch_names) != len(saved["ch_names"])
            else "different channel names or order"
        )
        raise ValueError(f"{source} was trained on {detail}")


# --------------------------------------------------------------------------------------------
# Checkpoints


class Terminated(KeyboardInterrupt):
    """Raised in :func:`train` when the process receives SIGTERM (a batch scheduler's stop,
    ``kill``); like Ctrl-C, it first saves a resumable ``last.pt``."""

    #: Exit status of the ``fairesi`` command (128 + SIGTERM, as a shell reports it).
    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signum}")


class _SigtermAsInterrupt:
    """SIGTERM handling during training: :meth:`install` makes SIGTERM raise
    :class:`Terminated`, :meth:`ignore` shields the checkpoint write from a second signal,
    :meth:`restore` puts the previous handler back. Python delivers signals to the main
    thread only, so elsewhere (e.g. a training thread of a GUI) all three do nothing."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def install(self) -> None:
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def ignore(self) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def restore(self) -> None:
        if self._active and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class NonFiniteError(ValueError):
    """Training met NaN/Inf in its data or loss; the last good checkpoint was kept."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model in eval mode, on ``map_location``.
    config : dict
        ``{"model", "data", "head_model", "train"}`` as described in the module docstring.
    metrics : dict
        Training metrics at the time of writing.
    path : pathlib.Path
        The file it came from.
    head_model : fairesi.headmodel.HeadModel
        The head model the model was built for (checked against the checkpoint).
    state : dict
        The whole payload (optimizer, scheduler, scaler, RNG, progress) for resuming.
    """

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]
    path: Path
    head_model: Any
    state: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of the run that wrote this checkpoint."""
        return TrainConfig(**self.config["train"])


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file's payload with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`train`.
    map_location : str or torch.device
        Where tensors are placed.

    Returns
    -------
    payload : dict
        The plain-container payload described in the module docstring.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); the file is truncated")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    missing = {"format", "state_dict", "config", "metrics"} - (
        set(payload) if isinstance(payload, dict) else set()
    )
    if missing or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a fairesi checkpoint (missing {sorted(missing) or ['format']})"
        )
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {payload['version']}; this fairesi reads "
            f"up to version {CHECKPOINT_VERSION}"
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    head_model=None,
) -> Checkpoint:
    """Load a checkpoint and rebuild its model.

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`train` (``last.pt`` or ``best.pt``).
    map_location : str or torch.device
        Device of the returned model and tensors.
    head_model : HeadModel or None
        Head model to build the model for. It must have the checkpoint's number of regions
        and the same channel names (else ``ValueError``). None resolves the checkpoint's own
        head-model spec ('default', 'toy' or its file path).

    Returns
    -------
    checkpoint : Checkpoint
        With ``.model`` in eval mode.
    """
    from fairesi.models import build_model

    payload = read_checkpoint(path, map_location)
    config = payload["config"]
    if head_model is None:
        head_model = load_head_model(config["train"]["head_model"])
    check_head_model(config, head_model, source=f"checkpoint {path}")
    model = build_model(
        config["model"]["name"],
        head_model,
        config["head_model"]["modality"],
        int(config["data"]["n_times"]),
        **config["model"]["hyper"],
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {path} does not fit the {config['model']['name']!r} model it names "
            f"(written by another fairesi version?): {str(err).splitlines()[0]}"
        ) from None
    model.to(map_location).eval()
    return Checkpoint(
        model=model,
        config=config,
        metrics=dict(payload["metrics"]),
        path=Path(path),
        head_model=head_model,
        state=payload,
    )


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Progress:
    """Where the run stands; saved in the checkpoint so a resume continues exactly."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    finished: bool = False


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class _Log:
    """CSV (and, if installed, TensorBoard) training log, written by rank 0 only."""

    def __init__(self, out_dir: Path, resume_step: int | None) -> None:
        self.path = out_dir / "train_log.csv"
        if resume_step is None or not self.path.exists():
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerow(LOG_FIELDS)
        else:
            # Rows written after the checkpoint we resume from belong to lost work.
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
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
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})
        if self.tensorboard is not None:
            for key in ("loss", "val_loss", "val_loss_zero", "lr", "samples_per_s"):
                if row.get(key, "") != "":
                    self.tensorboard.add_scalar(f"{row['kind']}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class _Run:
    """The state of one training invocation: model, optimizer, data, logging."""

    def __init__(self, config: TrainConfig, resume: dict[str, Any] | None) -> None:
        from fairesi.data import Synthesizer
        from fairesi.models import MODELS, build_model

        self.config = config
        self.dist = _init_distributed(config)
        self.device = _resolve_device(config.device, self.dist)
        if config.threads is not None:
            torch.set_num_threads(int(config.threads))
        if config.model not in MODELS:
            raise ValueError(f"unknown model {config.model!r}; expected one of {sorted(MODELS)}")
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by the "
                f"{self.dist.world_size} distributed ranks"
            )

        self.head_model = load_head_model(config.head_model)
        self.sim_config = make_sim_config(config)
        self.modality = self.sim_config.modality
        bank = load_bank(config.bank, self.head_model, seed=config.seed)
        self.synth = Synthesizer(
            self.head_model, bank, self.sim_config, seed=config.seed, device=self.device
        )
        self.n_train = _limit(self.synth.split_size("train"), config.n_train_samples)
        self.n_val = _limit(self.synth.split_size("val"), config.n_val_samples)
        if self.n_train < config.batch_size:
            raise ValueError(
                f"the training split has {self.n_train} samples, fewer than one batch "
                f"(batch_size={config.batch_size})"
            )

        torch.manual_seed(config.seed)
        self.model = build_model(
            config.model,
            self.head_model,
            self.modality,
            self.sim_config.n_times,
            **config.model_hyper,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.progress = _Progress()
        self.metrics: dict[str, Any] = {}
        if resume is not None:
            self._restore(resume)
        self.net: nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.out_dir = Path(config.out_dir)
        self.log = None
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log = _Log(self.out_dir, self.progress.step if resume is not None else None)
        self.model_config = {
            "model": {"name": config.model, "hyper": dict(config.model_hyper)},
            "data": self.sim_config.to_dict(),
            "head_model": head_model_signature(self.head_model, self.modality),
            "train": config.to_dict(),
        }

    # -- checkpoints ------------------------------------------------------------------------
    def _restore(self, payload: dict[str, Any]) -> None:
        check_head_model(payload["config"], self.head_model, source="the checkpoint to resume")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.progress = _Progress(**payload["progress"])
        self.metrics = dict(payload["metrics"])
        _set_rng_state(payload["rng"], self.device)

    def save(self, name: str, rng: dict[str, Any] | None = None) -> None:
        """Write ``name`` ('last.pt' / 'best.pt') atomically; rank 0 only."""
        if not self.dist.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "state_dict": self.model.state_dict(),
            "config": self.model_config,
            "metrics": dict(self.metrics),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng if rng is not None else _rng_state(self.device),
            "progress": dataclasses.asdict(self.progress),
        }
        _save(self.out_dir / name, payload)

    # -- data -------------------------------------------------------------------------------
    def batches(self, split: str, epoch: int, start_batch: int) -> Iterator[Any]:
        """This rank's shard of the batches of ``split`` from ``start_batch`` on.

        The batches are those of ``fairesi.data.iter_batches`` (same epoch order, so a resume
        with ``start_batch`` sees exactly the batches an uninterrupted run would), limited
        to ``n_train_samples`` / ``n_val_samples`` (rounded down to whole batches, at least
        one): an epoch of a limited run draws its batches from the whole shuffled split.
        Under DDP each rank synthesises only its own slice of every batch. With
        ``redraw`` the training batches are draw ``epoch`` of their samples.
        """
        from fairesi.data import epoch_order

        n = self.n_train if split == "train" else self.n_val
        batch_size = self.config.batch_size
        order = epoch_order(self.synth, split, shuffle=split == "train", epoch=epoch)
        draw = epoch if split == "train" and self.config.redraw else 0
        rank, world_size = self.dist.rank, self.dist.world_size
        for b in range(start_batch, max(1, n // batch_size)):
            index = order[b * batch_size : (b + 1) * batch_size]
            yield self.synth.batch(split, index[rank::world_size], draw=draw)

    # -- one step ---------------------------------------------------------------------------
    def _loss(self, batch) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=self.use_amp):
            estimate = self.net(batch.x)
        return source_loss(estimate.float(), batch.target)

    def train_step(self, batch) -> float:
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            self._raise_non_finite(batch, value)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value

    def _raise_non_finite(self, batch, value: float) -> None:
        where = (
            f"epoch {self.progress.epoch}, batch {self.progress.batch} "
            f"(step {self.progress.step + 1})"
        )
        kept = (
            f"the last good checkpoint {self.out_dir / 'last.pt'} was kept"
            if (self.out_dir / "last.pt").exists()
            else "no checkpoint was written"
        )
        if not (torch.isfinite(batch.x).all() and torch.isfinite(batch.target).all()):
            cause = "the training data contain NaN/Inf (check the head model's lead field and the waveform bank)"
        else:
            cause = f"the loss became {value} (training diverged; try a lower --lr)"
        raise NonFiniteError(f"stopped at {where}: {cause}; {kept}")

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Validation loss of the model and of the all-zero estimate (the loss a network
        that learned nothing but "no source" reaches; only values below it show learning)."""
        self.net.eval()
        total = torch.zeros(3, dtype=torch.float64, device=self.device)
        for batch in self.batches("val", 0, 0):
            n = batch.x.shape[0]
            loss = self._loss(batch)
            zero = source_loss(torch.zeros_like(batch.target), batch.target)
            total += torch.stack([loss.double() * n, zero.double() * n, total.new_tensor(n)])
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(total)
        value, zero_value = float(total[0] / total[2]), float(total[1] / total[2])
        if not math.isfinite(value):
            raise NonFiniteError(
                f"validation loss is {value} after epoch {self.progress.epoch}; the validation "
                f"data or the model contain NaN/Inf; the last good checkpoint was kept"
            )
        return value, zero_value


def source_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's training loss: ``(1/N) * sum_n ||S_hat_n - S_n||_F^2`` (section II.C.5).

    The squared Frobenius norm of each sample's error (summed over regions and time
    samples), averaged over the ``N`` samples of the batch. It equals ``mse_loss * R * T``.
    The scale matters although Adam normalises gradients: Adam's weight decay is added to
    the gradient (coupled L2), and with the element-wise mean of ``mse_loss`` (gradients
    ~1e-7 per weight for ~20 active of 994 regions) a weight decay of 1e-5 outweighs the
    data term, so the network settles on the all-zero estimate. The summed loss keeps the
    data term ~R*T times larger, as in the paper and in DeepSIF's training script
    (``MSELoss(reduction='sum')`` over the batch, Adam weight decay 1e-6).

    Parameters
    ----------
    estimate, target : torch.Tensor (B, R, T) float
        Estimated and true (normalised) region time courses.

    Returns
    -------
    loss : torch.Tensor () float
    """
    if estimate.shape != target.shape or estimate.dim() < 2:
        raise ValueError(
            f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} must have "
            "the same (B, R, T) shape"
        )
    return (estimate - target).square().sum() / estimate.shape[0]


def _limit(size: int, limit: int | None) -> int:
    return size if limit is None else min(size, int(limit))


def _init_distributed(config: TrainConfig) -> _Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = config.device.startswith("cuda")
        if use_cuda:
            # NCCL needs each rank bound to its own GPU before the group forms.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def _resolve_device(name: str, dist: _Distributed) -> torch.device:
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


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    **run_control: Any,
) -> dict[str, Any]:
    """Train a model; return its final metrics.

    Parameters
    ----------
    config : TrainConfig or None
        The run; None when resuming (the checkpoint holds the configuration).
    resume : path-like or None
        A ``last.pt`` to continue from, exactly where it stopped.
    **run_control
        When resuming, new values for fields in ``TrainConfig.RUN_CONTROL`` (``max_steps``,
        ``max_minutes``, ``max_epochs``, ``device``, ``out_dir``, ...); by default
        ``out_dir`` is the checkpoint's directory.

    Returns
    -------
    metrics : dict
        ``epoch``, ``step``, ``train_loss``, ``val_loss``, ``val_loss_zero`` (the
        validation loss of the all-zero estimate), ``best_val_loss``, ``lr``,
        ``samples_per_s``, ``stopped`` (why the run ended: 'early_stop', 'max_epochs',
        'max_steps', 'max_minutes', or 'finished' if it had already stopped early).
    """
    from tqdm.auto import tqdm

    payload = None
    if resume is not None:
        if config is not None:
            raise ValueError("give either a config or a checkpoint to resume, not both")
        not_allowed = sorted(set(run_control) - TrainConfig.RUN_CONTROL)
        if not_allowed:
            raise ValueError(
                f"options {not_allowed} define the run and cannot change on resume; "
                f"allowed: {sorted(TrainConfig.RUN_CONTROL)}"
            )
        payload = read_checkpoint(resume)
        saved = TrainConfig(**payload["config"]["train"])
        run_control.setdefault("out_dir", str(Path(resume).parent))
        config = dataclasses.replace(saved, **run_control)
    elif config is None:
        raise ValueError("train() needs a TrainConfig or a checkpoint to resume")
    else:
        config = dataclasses.replace(config, **run_control)
        if (Path(config.out_dir) / "last.pt").exists():
            raise FileExistsError(
                f"{Path(config.out_dir) / 'last.pt'} exists: resume that run (--resume) or "
                "choose another output directory"
            )
    run = _Run(config, payload)
    progress = run.progress
    if progress.finished:
        logger.info("the run in %s has already finished", config.out_dir)
        return {**run.metrics, "stopped": "finished"}

    started = time.monotonic()
    n_batches = run.n_train // config.batch_size
    stopped = "max_epochs"
    # Random state at the start of an unfinished step (None between steps), so that a
    # Ctrl-C / SIGTERM checkpoint replays exactly that step on resume.
    rng_before_step = None
    sigterm = _SigtermAsInterrupt()
    sigterm.install()
    try:
        while progress.epoch < config.max_epochs:
            bar = tqdm(
                total=n_batches,
                initial=progress.batch,
                desc=f"epoch {progress.epoch}",
                disable=not (config.progress and run.dist.is_main),
                unit="batch",
                leave=False,
            )
            epoch_start, epoch_samples_here = time.monotonic(), 0
            stop_now = None
            for batch in run.batches("train", progress.epoch, progress.batch):
                rng_before_step = _rng_state(run.device)
                loss = run.train_step(batch)
                n_seen = batch.x.shape[0] * run.dist.world_size
                progress.batch += 1
                rng_before_step = None
                progress.step += 1
                progress.epoch_loss_sum += loss * n_seen
                progress.epoch_samples += n_seen
                epoch_samples_here += n_seen
                rate = epoch_samples_here / max(time.monotonic() - epoch_start, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3g}", samples_per_s=f"{rate:.1f}")
                run.metrics.update(step=progress.step, samples_per_s=rate)
                end_of_epoch = progress.batch >= n_batches
                if run.log is not None and progress.step % 10 == 0:
                    run.log.write(
                        epoch=progress.epoch,
                        step=progress.step,
                        kind="train",
                        loss=loss,
                        lr=run.optimizer.param_groups[0]["lr"],
                        samples_per_s=round(rate, 3),
                        wall_s=round(time.monotonic() - started, 3),
                    )
                if end_of_epoch:
                    break
                stop_now = _budget_exhausted(config, progress, started)
                if stop_now or progress.step % config.checkpoint_every == 0:
                    run.save("last.pt")
                if stop_now:
                    break
            bar.close()
            if stop_now:
                stopped = stop_now
                break
            if _end_epoch(run, started):
                stopped = "early_stop"
                break
            stop_now = _budget_exhausted(config, progress, started)
            if stop_now:
                stopped = stop_now
                break
        progress.finished = stopped == "early_stop"
        run.metrics["stopped"] = stopped
        run.save("last.pt")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
        sigterm.ignore()  # a second SIGTERM must not cut the checkpoint write short
        run.save("last.pt", rng=rng_before_step)
        raise
    finally:
        sigterm.restore()
        if run.log is not None:
            run.log.close()
        if run.dist.world_size > 1:
            torch.distributed.destroy_process_group()
    return {**run.metrics, "stopped": stopped}


def _budget_exhausted(config: TrainConfig, progress: _Progress, started: float) -> str | None:
    if config.max_steps is not None and progress.step >= config.max_steps:
        return "max_steps"
    if config.max_minutes is not None and time.monotonic() - started >= 60 * config.max_minutes:
        return "max_minutes"
    return None


def _end_epoch(run: _Run, started: float) -> bool:
    """Validate, step the LR schedule, write checkpoints; True if training should stop."""
    progress = run.progress
    train_loss = progress.epoch_loss_sum / max(progress.epoch_samples, 1)
    val_loss, val_loss_zero = run.validate()
    run.scheduler.step(val_loss)
    improved = val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss = val_loss
        progress.bad_epochs = 0
    else:
        progress.bad_epochs += 1
    lr = run.optimizer.param_groups[0]["lr"]
    run.metrics.update(
        epoch=progress.epoch,
        train_loss=train_loss,
        val_loss=val_loss,
        val_loss_zero=val_loss_zero,
        best_val_loss=progress.best_val_loss,
        lr=lr,
    )
    if run.log is not None:
        run.log.write(
            epoch=progress.epoch,
            step=progress.step,
            kind="epoch",
            loss=train_loss,
            val_loss=val_loss,
            lr=lr,
            samples_per_s=round(run.metrics.get("samples_per_s", 0.0), 3),
            wall_s=round(time.monotonic() - started, 3),
            val_loss_zero=val_loss_zero,
        )
        logger.info(
            "epoch %d: train loss %.4g, val loss %.4g (%.3f x the all-zero estimate's), lr %.3g",
            progress.epoch,
            train_loss,
            val_loss,
            val_loss / val_loss_zero if val_loss_zero > 0 else math.nan,
            lr,
        )
    progress.epoch += 1
    progress.batch = 0
    progress.epoch_loss_sum = 0.0
    progress.epoch_samples = 0
    stop = progress.bad_epochs >= run.config.early_stop_patience
    if improved:
        run.save("best.pt")
    run.save("last.pt")
    return stop
