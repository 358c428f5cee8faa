"""The configuration of a training run: ``TrainConfig(data, optim, run)`` and its presets.

A run is defined by what it learns from (the model and its hyper-parameters, the simulated
data configuration :class:`fairesi.data.SimConfig`, the head model, the waveform bank, the
seed and the epoch sampling) and how it optimises (:class:`OptimConfig`); how it is run
(:class:`RunConfig`: budgets, output, device, threads) may change when a run is resumed.
Every field lives in exactly one place. Flat ``KEY=VALUE`` settings (a preset, a TOML file,
command-line flags) are routed to their section by name: all field names are unique, and
``dataset`` names the :data:`fairesi.data.PRESETS` entry the data configuration starts
from.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairesi._validate import check_int, check_positive_int
from fairesi.data import DatasetSplits, SimConfig

__all__ = ["PRESETS", "OptimConfig", "RunConfig", "TrainConfig"]

# Presets are partial flat configurations; a TOML file and command-line flags override them.
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
    # A CPU run: full SimMEG head model and bank, the model's 'cpu' size preset. A 2-core
    # CPU sees only ~10k samples an hour, so an "epoch" is 1024 samples drawn from the whole
    # shuffled training split (the LR schedule and early stopping need several validations
    # per hour) and the learning rate starts 10x above the paper's. Combine with
    # --max-minutes and --resume.
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

# 'cpu' with FAIR-ESI's 'wide' size (rank 512 instead of 256: the 'cpu' size's output rank
# caps SimMEG 5/1/2 precision near 80% under the paper protocol, 'wide''s near 95%;
# bench/RESULTS.md § accuracy). FAIR-ESI only: the other models have no 'wide' size.
PRESETS["wide"] = {**copy.deepcopy(PRESETS["cpu"]), "model_hyper": {"preset": "wide"}}

#: The data configuration a run starts from when nothing names another.
DEFAULT_DATASET = "SimMEG"


@dataclass(frozen=True)
class OptimConfig:
    """How a run optimises (paper section III.B: Adam, LR halved on a validation plateau).

    Attributes
    ----------
    batch_size : int
        Samples per optimizer step (over all ranks together).
    lr, weight_decay : float
        Adam learning rate and (coupled) weight decay.
    lr_factor, lr_patience : float, int
        ``ReduceLROnPlateau`` factor and patience (epochs) on the validation loss.
    early_stop_patience : int
        Stop after this many epochs without a better validation loss (may change on resume).
    max_epochs : int
        Upper limit on epochs (may change on resume).
    """

    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    lr_factor: float = 0.5
    lr_patience: int = 2
    early_stop_patience: int = 6
    max_epochs: int = 100

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "early_stop_patience"):
            check_positive_int(name, getattr(self, name))
        check_int("lr_patience", self.lr_patience, minimum=0)
        for name in ("lr", "weight_decay", "lr_factor"):
            if not isinstance(getattr(self, name), int | float) or isinstance(
                getattr(self, name), bool
            ):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")


@dataclass(frozen=True)
class RunConfig:
    """How a run is executed; every field may change when the run is resumed.

    Attributes
    ----------
    checkpoint_every : int
        Write ``last.pt`` every so many optimizer steps (and at every epoch end).
    max_steps : int or None
        Stop (resumably) once this many optimizer steps have been taken in total.
    anneal_steps : int or None
        Spend the last ``anneal_steps`` steps before ``max_steps`` decaying the learning
        rate linearly to zero, from its value when the decay begins (the plateau schedule
        is suspended from then on). Needs ``max_steps``; may be set on resume, to end a
        run with a decay.
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
    cpu_bf16 : bool
        On the CPU, autocast matrix products and convolutions to bfloat16 (weights, loss
        and optimizer stay float32; FAIR-ESI's fused BiGRU runs in bfloat16 too). On a CPU
        with AVX512-BF16 a training step takes ~0.45x (DeepSIF) to ~0.5x (FAIR-ESI 'wide')
        of its float32 time (bench/step_cost.py). Off by default; ignored on CUDA.
    keep_heap : bool
        On the CPU under glibc, keep freed memory in the process heap for the next step
        (``fairesi._heap.keep_freed_memory``: blocks up to 256 MiB from the heap, no
        trimming) instead of handing large blocks back to the OS after every step and
        page-faulting them in again; a 'wide' MEG step takes ~0.75x the CPU time. It is
        process-wide and stays for the life of the process (resident memory stays near
        its peak); False leaves the C library's defaults.
    progress : bool
        Show a tqdm progress bar.
    overwrite : bool
        Let a new run replace the results of an earlier one in ``out_dir``; without it
        such a run is refused before any work.
    """

    checkpoint_every: int = 200
    max_steps: int | None = None
    anneal_steps: int | None = None
    max_minutes: float | None = None
    out_dir: str = "runs/train"
    device: str = "cpu"
    threads: int | None = None
    amp: bool = True
    cpu_bf16: bool = False
    keep_heap: bool = True
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_positive_int("checkpoint_every", self.checkpoint_every)
        check_positive_int("max_steps", self.max_steps, allow_none=True)
        check_positive_int("anneal_steps", self.anneal_steps, allow_none=True)
        if self.anneal_steps is not None and self.max_steps is None:
            raise ValueError("anneal_steps needs max_steps: the decay ends at max_steps")
        check_positive_int("threads", self.threads, allow_none=True)
        if self.max_minutes is not None and not (
            isinstance(self.max_minutes, int | float) and self.max_minutes > 0
        ):
            raise ValueError(f"max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def _default_data() -> SimConfig:
    return SimConfig.preset(DEFAULT_DATASET)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Built from a preset, a TOML file and command-line flags (later ones win) by
    :meth:`from_sources`; stored in every checkpoint (``config["data"]`` holds ``data``,
    ``config["train"]`` the rest, see :mod:`fairesi.train.checkpoint`).

    Attributes
    ----------
    model : str
        Name in ``fairesi.models.MODELS`` ('fair_esi', 'deepsif', 'convdip', ...).
    model_hyper : dict
        Keyword arguments for the model's ``from_head_model`` (its hyper-parameters).
    data : fairesi.data.SimConfig
        The simulated data configuration (Table II's r, N_s, N_n; trial length; protocol).
    head_model : str
        'default' (embedded fsaverage5 model), 'toy' (50-region test model) or a file saved
        with ``HeadModel.save``.
    bank : str
        'default' (``fairesi.simulate.default_bank_path()``), a bank file, or 'synthetic'
        (the analytic stand-in for tests and demos; not the Jansen-Rit waveforms).
    seed : int
        Seed of the data synthesis, of the model initialisation and of dropout.
    n_train_samples, n_val_samples : int or None
        Samples per epoch (None: the whole split). A training epoch takes the first so
        many of that epoch's shuffled order of the whole training split; validation
        always uses the first so many validation samples.
    data_path : str or None
        Train on the dataset files that ``fairesi simulate dataset`` wrote (a directory of
        split files, or one training-split file; :class:`fairesi.data.DatasetSplits`)
        instead of synthesising samples on the fly. ``data`` and ``seed`` must be the
        files' (:meth:`from_sources` takes them from the files); without a validation
        file the validation split is synthesised (it needs the bank).
    redraw : bool
        Train on draw ``epoch`` of each sample (``Synthesizer.batch(..., draw=)``): every
        epoch sees the training split's source locations with fresh waveforms, source
        SNRs, background and sensor noise, instead of the same samples again (DeepSIF
        redraws the sensor noise and source scale at every access). Validation and test
        samples never change.
    train_instants : int or None
        For networks that map every time sample on its own (``PER_INSTANT`` of the model's
        configuration: ConvDip, MMDF-ESI): each training step scores only this many time
        samples of every window, drawn at random per window, with the loss scaled by
        ``n_times / train_instants`` (an unbiased estimate of the whole window's loss).
        Such a network's cost is per time sample, so a step costs that fraction of a
        whole-window step (ConvDip's and MMDF-ESI's published networks take one instant
        per input).
        None: whole windows. Validation always scores whole windows.
    init_from : str or None
        Fine-tune: start from the weights of a checkpoint file or of a shipped model
        (``'pretrained:NAME'``, :func:`fairesi.models.pretrained`) instead of a random
        initialisation. Its model, hyper-parameters, head-model channels and trial length
        must be this run's (:func:`fairesi.train.checkpoint.init_source` reads it; the
        ``fairesi train --init-from`` flag takes them from it). The optimizer starts
        afresh.
    optim : OptimConfig
    run : RunConfig
    """

    model: str = "fair_esi"
    model_hyper: dict[str, Any] = field(default_factory=dict)
    data: SimConfig = field(default_factory=_default_data)
    head_model: str = "default"
    bank: str = "default"
    seed: int = 0
    n_train_samples: int | None = None
    n_val_samples: int | None = None
    data_path: str | None = None
    redraw: bool = False
    train_instants: int | None = None
    init_from: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    #: Flat settings that may change when a run is resumed; all others define the run.
    RUN_CONTROL = frozenset(
        {f.name for f in dataclasses.fields(RunConfig)} | {"max_epochs", "early_stop_patience"}
    )

    def __post_init__(self) -> None:
        for name in ("n_train_samples", "n_val_samples", "train_instants"):
            check_positive_int(name, getattr(self, name), allow_none=True)
        check_int("seed", self.seed, minimum=0)
        if not isinstance(self.model_hyper, Mapping):
            raise TypeError(f"model_hyper must be a mapping, got {type(self.model_hyper)}")
        object.__setattr__(self, "model_hyper", dict(self.model_hyper))
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from):
            raise ValueError(
                f"init_from must be a checkpoint path or 'pretrained:NAME', got {self.init_from!r}"
            )
        if self.redraw and self.data_path is not None:
            raise ValueError(
                "redraw trains on new realisations of the samples, which dataset files do "
                "not hold: use on-the-fly synthesis (no data_path) or drop redraw"
            )
        for name, kind in (("data", SimConfig), ("optim", OptimConfig), ("run", RunConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.train_instants is not None and self.train_instants > self.data.n_times:
            raise ValueError(
                f"train_instants ({self.train_instants}) must be at most the window's "
                f"n_times ({self.data.n_times})"
            )

    # -- flat settings -------------------------------------------------------------------
    @classmethod
    def flat_keys(cls) -> dict[str, str]:
        """Every flat setting name -> its section ('', 'data', 'optim' or 'run')."""
        keys = {f.name: "" for f in dataclasses.fields(cls) if f.name not in _SECTIONS}
        keys["dataset"] = "data"
        for section, kind in _SECTIONS.items():
            keys.update({f.name: section for f in dataclasses.fields(kind)})
        return keys

    @classmethod
    def flat_defaults(cls) -> dict[str, Any]:
        """Every flat setting name -> its default (data ones: the default dataset's)."""
        values = cls().flat()
        values.update(cls().data.to_dict())
        values["dataset"] = DEFAULT_DATASET
        return values

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from flat settings (each field name at most once; see module doc).

        Parameters
        ----------
        values : mapping
            Field names of this class, of :class:`OptimConfig`, :class:`RunConfig` and
            :class:`fairesi.data.SimConfig`, and ``dataset`` (a ``SimConfig`` preset name,
            default 'SimMEG'). Missing ones take their defaults.

        Returns
        -------
        config : TrainConfig
        """
        keys = cls.flat_keys()
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: {sorted(keys)}")
        sections: dict[str, dict[str, Any]] = {"": {}, "data": {}, "optim": {}, "run": {}}
        for key, value in values.items():
            sections[keys[key]][key] = value
        data = dict(sections["data"])
        dataset = data.pop("dataset", DEFAULT_DATASET)
        top = sections[""]
        if top.get("data_path") is not None:
            return cls._from_files(top, data, dataset, sections)
        return cls(
            **top,
            data=SimConfig.preset(dataset, **data),
            optim=OptimConfig(**sections["optim"]),
            run=RunConfig(**sections["run"]),
        )

    @classmethod
    def _from_files(cls, top, data, dataset, sections) -> TrainConfig:
        """from_flat when ``data_path`` is set: the data configuration and seed are the
        files'; data settings or a seed that disagree with them are refused."""
        files = DatasetSplits.open(top["data_path"])
        have = {**files.config.to_dict(), "seed": files.seed}
        given = {**data, **({"seed": top["seed"]} if "seed" in top else {})}
        if "dataset" in sections["data"]:
            given["modality"] = SimConfig.preset(dataset).modality
        clash = sorted(k for k, v in given.items() if have.get(k) != _plain(v))
        if clash:
            raise ValueError(
                f"{top['data_path']} holds data with other {clash} than given "
                f"({', '.join(f'{k}={have[k]!r}' for k in clash)}); with data_path the "
                "data configuration and seed are the files'"
            )
        return cls(
            **{**top, "seed": files.seed},
            data=files.config,
            optim=OptimConfig(**sections["optim"]),
            run=RunConfig(**sections["run"]),
        )

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
            A key of :data:`PRESETS` ('tiny', 'cpu', 'wide', 'paper').
        toml_path : path-like or None
            TOML file of flat settings (see :meth:`flat_keys`); ``model_hyper`` is a table
            and is merged key by key with the preset's.
        overrides : mapping or None
            Flat settings, e.g. from command-line flags.

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
        known = set(cls.flat_keys())
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
        if values.get("data_path") is not None:
            # Dataset files bring their own data configuration and seed: a preset's are
            # dropped, while ones given explicitly must agree with the files.
            given = {k for _, layer in layers for k in layer}
            keys = cls.flat_keys()
            values = {
                k: v
                for k, v in values.items()
                if k in given or not (keys[k] == "data" or k == "seed")
            }
        return cls.from_flat(values)

    def _top_level(self) -> dict[str, Any]:
        """Copies of the fields outside the sections."""
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in _SECTIONS
        }

    def flat(self) -> dict[str, Any]:
        """The settings of the sections ``optim`` and ``run`` and of the top level, flat
        (the data configuration is ``self.data``)."""
        return {
            **self._top_level(),
            **dataclasses.asdict(self.optim),
            **dataclasses.asdict(self.run),
        }

    def replace(self, **flat: Any) -> TrainConfig:
        """A copy with flat settings of the top level, ``optim`` or ``run`` changed."""
        keys = self.flat_keys()
        bad = sorted(k for k in flat if keys.get(k) not in ("", "optim", "run"))
        if bad:
            raise ValueError(f"replace() changes top-level, optim and run settings, not {bad}")
        top = {k: v for k, v in flat.items() if keys[k] == ""}
        optim = {k: v for k, v in flat.items() if keys[k] == "optim"}
        run = {k: v for k, v in flat.items() if keys[k] == "run"}
        return dataclasses.replace(
            self,
            **top,
            optim=dataclasses.replace(self.optim, **optim),
            run=dataclasses.replace(self.run, **run),
        )

    # -- checkpoint form -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-container form of everything but ``data`` (a checkpoint's ``config["train"]``;
        ``config["data"]`` holds ``self.data.to_dict()``)."""
        return {
            **self._top_level(),
            "optim": dataclasses.asdict(self.optim),
            "run": dataclasses.asdict(self.run),
        }

    @classmethod
    def from_dict(cls, train: Mapping[str, Any], data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` with the data configuration's dict.

        Also reads the flat ``config["train"]`` of checkpoints of format version 1, which
        repeated seven data fields (dataset, snr_db, n_sources, n_rings, n_times, n_samples,
        disjoint_centres) that ``config["data"]`` holds as well; those are dropped.
        """
        sim = SimConfig.from_dict(dict(data))
        if "optim" in train:
            rest = {k: v for k, v in train.items() if k not in ("optim", "run")}
            return cls(
                **rest,
                data=sim,
                optim=OptimConfig(**train["optim"]),
                run=RunConfig(**train["run"]),
            )
        keys = cls.flat_keys()
        flat = {k: v for k, v in train.items() if keys.get(k) in ("", "optim", "run")}
        return dataclasses.replace(cls.from_flat(flat), data=sim)


def _plain(value: Any) -> Any:
    """Tuples as lists, as ``SimConfig.to_dict`` writes them."""
    return list(value) if isinstance(value, tuple) else value


_SECTIONS: dict[str, type] = {"data": SimConfig, "optim": OptimConfig, "run": RunConfig}
