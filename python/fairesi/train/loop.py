"""The training loop: one :class:`Trainer` (setup / fit / validate / save) and :func:`train`.

The loop follows the paper's recipe (section III.B): the squared error between the
estimated and the true normalised source map (:func:`source_loss`), Adam with weight decay,
learning rate halved whenever the validation loss stops improving (``ReduceLROnPlateau``),
and early stopping once it has not improved for ``early_stop_patience`` epochs. Mixed
precision: float16 autocast + ``GradScaler`` on CUDA (``RunConfig.amp``), bfloat16 autocast
on the CPU when asked for (``RunConfig.cpu_bf16``; no scaler needed).

``last.pt`` is written every ``checkpoint_every`` steps, at the end of every epoch, when a
step or time budget runs out, on Ctrl-C and on SIGTERM (a batch scheduler's stop);
``best.pt`` whenever the validation loss improves. Resuming from ``last.pt`` restores the
model, optimizer, scheduler, scaler and random state and continues with the very next
batch (the epoch order of ``fairesi.data.epoch_order``, as in ``iter_batches(..., epoch,
start_batch)``), so a run cut into pieces gives the same weights, bit for bit, as one
uninterrupted run on the same machine and thread count.

Launched with ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the loop wraps the model
in ``DistributedDataParallel``; every rank takes a disjoint shard of each batch's sample
indices, and only rank 0 writes logs and checkpoints (the logged training loss is rank 0's
shard; the validation loss is reduced over all ranks). Nothing else changes, e.g.
``torchrun --nproc_per_node=8 -m fairesi train --device cuda ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairesi._heap import keep_freed_memory
from fairesi.data import DatasetSplits, iter_batches
from fairesi.experiment import (
    check_head_model,
    head_model_signature,
    load_head_model,
    synthesizer,
)
from fairesi.io import exclusive_output
from fairesi.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    init_source,
    read_checkpoint,
    rng_state,
    set_rng_state,
    train_config_of,
    write_checkpoint,
)
from fairesi.train.config import TrainConfig
from fairesi.train.runtime import (
    LOG_FIELDS,
    SigtermAsInterrupt,
    Terminated,
    TrainingLog,
    init_distributed,
    resolve_device,
)

__all__ = [
    "LOG_FIELDS",
    "NonFiniteError",
    "Terminated",
    "Trainer",
    "select_instants",
    "source_loss",
    "train",
]

logger = logging.getLogger(__name__)


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


def select_instants(
    x: torch.Tensor, target: torch.Tensor, instants: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The time samples ``instants`` of every window, for ``train_instants`` training.

    Parameters
    ----------
    x : torch.Tensor (B, C, T)
        Network input.
    target : torch.Tensor (B, R, T)
        Target.
    instants : torch.Tensor (B, K) int64
        Time indices per window.

    Returns
    -------
    x, target : torch.Tensor (B, C, K), (B, R, K)
        Those samples.
    scale : float
        ``T / K``: the factor that makes their :func:`source_loss` estimate the whole
        windows' without bias.
    """

    def take(a: torch.Tensor) -> torch.Tensor:
        return a.gather(2, instants[:, None, :].expand(-1, a.shape[1], -1))

    return take(x), take(target), x.shape[-1] / instants.shape[-1]


class NonFiniteError(ValueError):
    """Training met NaN/Inf in its data or loss; the last good checkpoint was kept."""


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
    #: Learning rate when the final linear decay (``RunConfig.anneal_steps``) began.
    anneal_base_lr: float | None = None


class Trainer:
    """One training invocation, in the shape of a torchtune recipe.

    ``Trainer(config, resume=payload).setup()`` builds the data, model, optimizer and log
    (restoring a checkpoint payload exactly when given); :meth:`fit` runs the loop until a
    budget, the epoch limit or early stopping ends it; :meth:`validate` and :meth:`save`
    are its pieces; :meth:`cleanup` closes the log and the process group.

    Parameters
    ----------
    config : TrainConfig
        The run.
    resume : dict or None
        A checkpoint payload (:func:`fairesi.train.read_checkpoint`) to continue from.
    """

    def __init__(self, config: TrainConfig, resume: dict[str, Any] | None = None) -> None:
        self.config = config
        self._resume = resume
        self._signals = SigtermAsInterrupt()

    # -- setup -------------------------------------------------------------------------
    def setup(self) -> Trainer:
        """Build everything the loop needs; returns ``self``."""
        from fairesi.models import MODELS, build_model, resolved_hyper, stored_hyper

        config, optim, run = self.config, self.config.optim, self.config.run
        self.dist = init_distributed(run.device)
        self.device = resolve_device(run.device, self.dist)
        if run.threads is not None:
            torch.set_num_threads(int(run.threads))
        if run.keep_heap and self.device.type == "cpu":
            keep_freed_memory()
        if config.model not in MODELS:
            raise ValueError(f"unknown model {config.model!r}; expected one of {sorted(MODELS)}")
        if optim.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {optim.batch_size} is not divisible by the "
                f"{self.dist.world_size} distributed ranks"
            )
        self.head_model, self.sources = self._data_sources()
        self.modality = config.data.input_modality
        self.n_train = _limit(self.sources["train"].split_size("train"), config.n_train_samples)
        self.n_val = _limit(self.sources["val"].split_size("val"), config.n_val_samples)
        if self.n_train < optim.batch_size:
            raise ValueError(
                f"the training split has {self.n_train} samples, fewer than one batch "
                f"(batch_size={optim.batch_size})"
            )

        torch.manual_seed(config.seed)
        hyper = config.model_hyper
        if self._resume is not None:  # the network it saved, whatever today's defaults
            hyper = stored_hyper({"name": config.model, **self._resume["config"]["model"]})
        self.model = build_model(
            config.model,
            self.head_model,
            self.modality,
            config.data.n_times,
            **hyper,
        ).to(self.device)
        if config.train_instants is not None and not getattr(
            self.model.config, "PER_INSTANT", False
        ):
            raise ValueError(
                f"train_instants applies to networks that map each time sample on its own "
                f"(convdip, mmdf_esi); {config.model} reads whole windows"
            )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=optim.lr_factor, patience=optim.lr_patience
        )
        self.use_amp = bool(run.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        cpu_bf16 = bool(run.cpu_bf16 and self.device.type == "cpu")
        #: The forward's autocast: float16 on CUDA with amp, bfloat16 on the CPU with cpu_bf16.
        self.autocast = {
            "device_type": self.device.type,
            "dtype": torch.bfloat16 if cpu_bf16 else None,
            "enabled": self.use_amp or cpu_bf16,
        }
        self.progress = _Progress()
        self.metrics: dict[str, Any] = {}
        if self._resume is not None:
            self._restore(self._resume)
        elif config.init_from is not None:
            self._init_weights(config.init_from)
        self.net: nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.out_dir = Path(run.out_dir)
        self.log = None
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            resumed = None if self._resume is None else (self.progress.step, self.progress.epoch)
            self.log = TrainingLog(self.out_dir, resumed)
        self.model_config = {
            "model": {
                "name": config.model,
                "hyper": dict(config.model_hyper),
                "resolved": resolved_hyper(self.model),
            },
            "data": config.data.to_dict(),
            "head_model": head_model_signature(self.head_model, self.modality),
            "train": config.to_dict(),
        }
        return self

    def _data_sources(self) -> tuple[Any, dict[str, Any]]:
        """The head model and, per split, what batches come from: the synthesizer, or the
        dataset files of ``data_path`` (validation synthesised when they hold none)."""
        config = self.config
        spec = dict(bank=config.bank, seed=config.seed, device=self.device)
        if config.data_path is None:
            synth = synthesizer(config.data, head_model=config.head_model, **spec)
            return synth.head_model, {"train": synth, "val": synth}
        files = DatasetSplits.open(config.data_path)
        if files.config != config.data or files.seed != config.seed:
            raise ValueError(
                f"{config.data_path} holds another data configuration or seed than the run's "
                "(build the run with TrainConfig.from_sources to take the files')"
            )
        head_model = load_head_model(config.head_model)
        if (files.n_regions, files.head_model_name) != (head_model.n_regions, head_model.name):
            raise ValueError(
                f"{config.data_path} was written for head model {files.head_model_name!r} "
                f"({files.n_regions} regions), not {head_model.name!r} "
                f"({head_model.n_regions} regions); pass --head-model"
            )
        files.split_size("train")  # refuses files without a training split
        if "val" in files.splits:
            return head_model, {"train": files, "val": files}
        return head_model, {
            "train": files,
            "val": synthesizer(config.data, head_model=head_model, **spec),
        }

    def _init_weights(self, spec: str) -> None:
        """Fine-tuning: the weights of ``init_from``, which must be this run's network."""
        from fairesi.models import build_model, resolved_hyper, stored_hyper

        source, state = init_source(spec)
        check_head_model(source, self.head_model, source=f"init_from {spec}")
        config = self.config
        if int(source["data"]["n_times"]) != config.data.n_times:
            raise ValueError(
                f"init_from {spec} takes {source['data']['n_times']} samples per trial, this "
                f"run {config.data.n_times}; use --n-times {source['data']['n_times']}"
            )
        name = source["model"]["name"]
        theirs = build_model(
            name, self.head_model, self.modality, config.data.n_times,
            **stored_hyper(source["model"]),
        )  # fmt: skip
        ours, stored = resolved_hyper(self.model), resolved_hyper(theirs)
        if name != config.model or stored != ours:
            differ = sorted(k for k, v in stored.items() if ours.get(k) != v)
            raise ValueError(
                f"init_from {spec} holds another network ({name}; differing: "
                f"{differ or ['model']}) than this run's ({config.model}); train the same "
                "model and hyper-parameters (the CLI's --init-from takes them from it)"
            )
        self.model.load_state_dict(state)

    def _restore(self, payload: dict[str, Any]) -> None:
        check_head_model(payload["config"], self.head_model, source="the checkpoint to resume")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.progress = _Progress(**payload["progress"])
        self.metrics = dict(payload["metrics"])
        set_rng_state(payload["rng"], self.device)

    # -- checkpoints -------------------------------------------------------------------
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
            "rng": rng if rng is not None else rng_state(self.device),
            "progress": dataclasses.asdict(self.progress),
        }
        write_checkpoint(self.out_dir / name, payload)

    # -- data --------------------------------------------------------------------------
    def batches(self, split: str, epoch: int, start_batch: int) -> Iterator[Any]:
        """This rank's shard of the batches of ``split`` from ``start_batch`` on
        (``fairesi.data.iter_batches``, limited to ``n_train_samples`` / ``n_val_samples``;
        with ``redraw`` the training batches are draw ``epoch`` of their samples)."""
        train = split == "train"
        batches = iter_batches(
            self.sources[split],
            split,
            self.config.optim.batch_size,
            n=self.n_train if train else self.n_val,
            shuffle=train,
            epoch=epoch,
            start_batch=start_batch,
            draw=epoch if train and self.config.redraw else 0,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return (batch.to(self.device) for batch in batches)

    # -- one step ----------------------------------------------------------------------
    def _loss(self, batch, instants: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``batch``; with ``instants`` (B, K) time indices, of those samples
        of every window only, scaled by T / K (``train_instants``)."""
        x, target, scale = batch.x, batch.target, 1.0
        if instants is not None:
            x, target, scale = select_instants(x, target, instants)
        with torch.autocast(**self.autocast):
            estimate = self.net(x)
        return source_loss(estimate.float(), target) * scale

    def _draw_instants(self, batch) -> torch.Tensor | None:
        """``train_instants`` random time indices per window, (B, K) sorted, or None.

        Drawn from torch's CPU generator, whose state a checkpoint saves, so a resumed run
        draws the same ones.
        """
        k = self.config.train_instants
        if k is None:
            return None
        n_batch, n_times = batch.x.shape[0], batch.x.shape[-1]
        order = torch.rand(n_batch, n_times).argsort(dim=1)[:, :k]
        return order.sort(dim=1).values.to(batch.x.device)

    def train_step(self, batch) -> float:
        """One optimizer step on ``batch``; returns its loss."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch, self._draw_instants(batch))
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
            cause = (
                "the training data contain NaN/Inf (check the head model's lead field and "
                "the waveform bank)"
            )
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

    # -- the loop ----------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until a budget, ``max_epochs`` or early stopping ends the run.

        Returns
        -------
        metrics : dict
            See :func:`train`.
        """
        from tqdm.auto import tqdm

        config, run, progress = self.config, self.config.run, self.progress
        if progress.finished:
            logger.info("the run in %s has already finished", run.out_dir)
            return {**self.metrics, "stopped": "finished"}
        started = time.monotonic()
        n_batches = self.n_train // config.optim.batch_size
        stopped = "max_epochs"
        # Random state at the start of an unfinished step (None between steps), so that a
        # Ctrl-C / SIGTERM checkpoint replays exactly that step on resume.
        rng_before_step = None
        sigterm = self._signals
        sigterm.install()
        try:
            while progress.epoch < config.optim.max_epochs:
                bar = tqdm(
                    total=n_batches,
                    initial=progress.batch,
                    desc=f"epoch {progress.epoch}",
                    disable=not (run.progress and self.dist.is_main),
                    unit="batch",
                    leave=False,
                )
                epoch_start, epoch_samples_here = time.monotonic(), 0
                stop_now = None
                for batch in self.batches("train", progress.epoch, progress.batch):
                    rng_before_step = rng_state(self.device)
                    self._anneal_lr()
                    loss = self.train_step(batch)
                    n_seen = batch.x.shape[0] * self.dist.world_size
                    progress.batch += 1
                    rng_before_step = None
                    progress.step += 1
                    progress.epoch_loss_sum += loss * n_seen
                    progress.epoch_samples += n_seen
                    epoch_samples_here += n_seen
                    rate = epoch_samples_here / max(time.monotonic() - epoch_start, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}", samples_per_s=f"{rate:.1f}")
                    self.metrics.update(step=progress.step, samples_per_s=rate)
                    if self.log is not None and progress.step % 10 == 0:
                        self.log.write(
                            epoch=progress.epoch,
                            step=progress.step,
                            kind="train",
                            loss=loss,
                            lr=self.optimizer.param_groups[0]["lr"],
                            samples_per_s=round(rate, 3),
                            wall_s=round(time.monotonic() - started, 3),
                        )
                    if progress.batch >= n_batches:
                        break
                    stop_now = self._budget_exhausted(started)
                    if stop_now or progress.step % run.checkpoint_every == 0:
                        self.save("last.pt")
                    if stop_now:
                        break
                bar.close()
                if stop_now:
                    stopped = stop_now
                    break
                if self.end_epoch(started):
                    stopped = "early_stop"
                    break
                stop_now = self._budget_exhausted(started)
                if stop_now:
                    stopped = stop_now
                    break
            progress.finished = stopped == "early_stop"
            self.metrics["stopped"] = stopped
            self.save("last.pt")
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
            sigterm.ignore()  # a second SIGTERM must not cut the checkpoint write short
            self.save("last.pt", rng=rng_before_step)
            raise
        finally:
            sigterm.restore()
        return {**self.metrics, "stopped": stopped}

    def _anneal_lr(self) -> None:
        """Set the learning rate of the next step during the final linear decay: from the
        rate when the decay began down to ``base / anneal_steps`` at the last step."""
        run, progress = self.config.run, self.progress
        if run.anneal_steps is None:  # RunConfig requires max_steps with it
            return
        left = run.max_steps - progress.step  # steps still to take, this one included
        if left > run.anneal_steps or left <= 0:
            return
        if progress.anneal_base_lr is None:
            progress.anneal_base_lr = float(self.optimizer.param_groups[0]["lr"])
            logger.info(
                "step %d: the learning rate decays linearly from %.3g to zero by step %d",
                progress.step,
                progress.anneal_base_lr,
                run.max_steps,
            )
        for group in self.optimizer.param_groups:
            group["lr"] = progress.anneal_base_lr * left / run.anneal_steps

    def _budget_exhausted(self, started: float) -> str | None:
        run, step = self.config.run, self.progress.step
        if run.max_steps is not None and step >= run.max_steps:
            return "max_steps"
        if run.max_minutes is not None and time.monotonic() - started >= 60 * run.max_minutes:
            return "max_minutes"
        return None

    def end_epoch(self, started: float) -> bool:
        """Validate, step the LR schedule, write checkpoints; True if training should stop.

        Validation may be interrupted (the resumed run validates again). Everything after
        it is one commit: signals are held back until ``best.pt`` (when improved) and then
        ``last.pt``, which refers to it, are written, so an interrupted run never resumes
        with a schedule, log or best loss that its files do not match.
        """
        val_loss, val_loss_zero = self.validate()
        with self._signals.deferred():
            return self._commit_epoch(val_loss, val_loss_zero, started)

    def _commit_epoch(self, val_loss: float, val_loss_zero: float, started: float) -> bool:
        progress = self.progress
        train_loss = progress.epoch_loss_sum / max(progress.epoch_samples, 1)
        if progress.anneal_base_lr is None:  # the final decay replaces the plateau schedule
            self.scheduler.step(val_loss)
        improved = val_loss < progress.best_val_loss
        if improved:
            progress.best_val_loss = val_loss
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.metrics.update(
            epoch=progress.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_loss_zero=val_loss_zero,
            best_val_loss=progress.best_val_loss,
            lr=lr,
        )
        if self.log is not None:
            self.log.write(
                epoch=progress.epoch,
                step=progress.step,
                kind="epoch",
                loss=train_loss,
                val_loss=val_loss,
                lr=lr,
                samples_per_s=round(self.metrics.get("samples_per_s", 0.0), 3),
                wall_s=round(time.monotonic() - started, 3),
                val_loss_zero=val_loss_zero,
            )
            logger.info(
                "epoch %d: train loss %.4g, val loss %.4g (%.3f x the all-zero estimate's), "
                "lr %.3g",
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
        stop = progress.bad_epochs >= self.config.optim.early_stop_patience
        if improved:
            self.save("best.pt")
        self.save("last.pt")
        return stop

    def cleanup(self) -> None:
        """Close the log and the distributed process group."""
        if self.log is not None:
            self.log.close()
        if self.dist.world_size > 1:
            torch.distributed.destroy_process_group()


#: The files a run writes into its output directory.
RUN_FILES = ("last.pt", "best.pt", "train_log.csv")


def _limit(size: int, limit: int | None) -> int:
    return size if limit is None else min(size, int(limit))


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
        New values of flat settings in ``TrainConfig.RUN_CONTROL`` (``max_steps``,
        ``max_minutes``, ``max_epochs``, ``device``, ``out_dir``, ...); when resuming,
        ``out_dir`` defaults to the checkpoint's directory.

    Returns
    -------
    metrics : dict
        ``epoch``, ``step``, ``train_loss``, ``val_loss``, ``val_loss_zero`` (the
        validation loss of the all-zero estimate), ``best_val_loss``, ``lr``,
        ``samples_per_s``, ``stopped`` (why the run ended: 'early_stop', 'max_epochs',
        'max_steps', 'max_minutes', or 'finished' if it had already stopped early).
    """
    payload = None
    not_allowed = sorted(set(run_control) - TrainConfig.RUN_CONTROL)
    if resume is not None:
        if config is not None:
            raise ValueError("give either a config or a checkpoint to resume, not both")
        if not_allowed:
            raise ValueError(
                f"options {not_allowed} define the run and cannot change on resume; "
                f"allowed: {sorted(TrainConfig.RUN_CONTROL)}"
            )
        payload = read_checkpoint(resume)
        run_control.setdefault("out_dir", str(Path(resume).parent))
        config = train_config_of(payload["config"]).replace(**run_control)
    elif config is None:
        raise ValueError("train() needs a TrainConfig or a checkpoint to resume")
    else:
        config = config.replace(**run_control)
        out_dir = Path(config.run.out_dir)
        if (out_dir / "last.pt").exists() and not config.run.overwrite:
            raise FileExistsError(
                f"{out_dir / 'last.pt'} exists: resume that run (--resume), choose another "
                "output directory, or pass --overwrite to replace it"
            )
        earlier = [n for n in RUN_FILES if (out_dir / n).exists()]
        if earlier and not config.run.overwrite:
            raise FileExistsError(
                f"{out_dir} holds the results of an earlier run ({', '.join(earlier)}): choose "
                "another output directory, or pass --overwrite to replace them"
            )
        if config.run.overwrite:
            for name in RUN_FILES:  # a stale best.pt must not outlive the run it came from
                (out_dir / name).unlink(missing_ok=True)
    # One writer per run directory (rank 0 writes; the other ranks only read).
    lock = (
        exclusive_output(config.run.out_dir, directory=True)
        if _is_rank_zero()
        else contextlib.nullcontext()
    )
    with lock:
        trainer = Trainer(config, payload).setup()
        try:
            return trainer.fit()
        finally:
            trainer.cleanup()


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
