"""Paired (sensor, source) samples for training and evaluating ESI networks.

A :class:`Synthesizer` turns a :class:`~fairesi.headmodel.HeadModel` and a
:class:`~fairesi.simulate.WaveformBank` into an endless, seeded supply of samples laid out
as SPEC §4 describes, mirroring DeepSIF's loader (``loaders.SpikeEEGBuild``):

1. **Background.** Every region carries Jansen-Rit background activity: the same random
   ``n_times`` window of the bank's background traces for all regions, so inter-region
   correlations of the simulation are kept.
2. **Sources.** ``n_sources`` centre regions are drawn from the split's centre pool such
   that their patches neither overlap nor touch (centres at least ``2 * n_rings + 2``
   graph hops apart). Each patch is the centre plus its neighbour rings 1..``n_rings``
   (:meth:`HeadModel.rings`). Inside a patch the background is replaced, as in DeepSIF,
   by the source waveform times a Gaussian weight over ring distance,
   ``w = 2 ** (-(ring / h) ** 2)``, with ``h`` (the ring at which the amplitude halves)
   drawn per source from ``SimConfig.half_amplitude_rings``. DeepSIF's weights fall to
   one half at 40-60 mm from the centre; adjacent regions of the 994-region default are
   11.5 mm apart (mean centroid distance), hence the default ``h`` in [3.5, 5] rings.
3. **Waveforms.** Each source gets a spike from the bank (one of its centre region's own
   spikes when the bank has some, else any spike), normalised to unit peak and cut with a
   random time jitter so that the peak lies anywhere in ``SimConfig.peak_position`` (a
   fraction of the window). Samples before/after the bank segment repeat its edge value.
4. **Source-space SNR.** Each source is scaled like DeepSIF's ``find_alpha``: the power of
   its patch's (temporally de-meaned) projection at the sensors, over +-100 ms around the
   spike peak, is ``source_snr_db`` (drawn uniformly from ``SimConfig.source_snr_db``,
   DeepSIF's training range 10-20 dB) above the power of the projected background of all
   regions outside the patches in that same window.
5. **Projection and sensor noise.** ``y = G @ s`` with the region lead field ``G``; white
   Gaussian noise of per-channel power ``P_c * 10 ** (-snr_db / 10)`` is added, where
   ``P_c`` is the mean square of channel ``c`` of ``y`` (DeepSIF's ``add_white_noise``,
   except that it halves the noise power, so that its nominal SNR is 3 dB below what
   its data have; here the achieved SNR is the requested one).
6. **Normalisation** (DeepSIF): the input loses its time mean per channel, then its
   channel mean per time point, and is divided by its maximum absolute value; the target
   keeps only the patch regions (all others zero) and is divided by its maximum absolute
   value.

Sample ``i`` of split ``s`` is a pure function of ``(seed, s, i)``: all its random numbers
come from a counter-based hash keyed by ``(seed, s, i)``, so a sample does not depend on
the batch it is drawn in, on DataLoader workers, or on the device (CPU and CUDA agree to
float32 rounding). A *draw* ``d > 0`` of sample ``i`` (``Synthesizer.batch(..., draw=d)``)
is another realisation of it, a pure function of ``(seed, s, i, d)``: the same centre
regions, fresh spike, jitter, patch fall-off, source SNR, background window and sensor
noise. Training with a new draw each epoch (``TrainConfig.redraw``) is DeepSIF's
practice of fresh sensor noise and source scale at every ``__getitem__``, carried to every
random choice but the source location; draw 0 is the dataset's own sample.

The centre regions are partitioned once, from the seed, into disjoint train/val/test pools
(ratio ``split_ratio``): use the same seed for the splits of one experiment. With
``SimConfig.disjoint_centres=False`` every split draws its centres from all regions
instead (the paper's protocol: one sample set split at random).

The sensor projection never multiplies the full ``(R, T)`` source matrix: the lead field
times the whole background bank is computed once, and a sample only corrects the patch
regions, so the cost per sample is ``O(C * T * patch size)`` instead of ``O(C * T * R)``.

Interfaces: :meth:`Synthesizer.batch` (a :class:`Batch` on the synthesizer's device),
:meth:`Synthesizer.raw` (every un-normalised intermediate), :func:`iter_batches` /
:func:`epoch_order` for the training loop, :class:`SynthDataset` + :func:`collate_batch`
for ``torch.utils.data.DataLoader``, and :func:`write_dataset` / :class:`DatasetFile`
for HDF5 files (``fairesi simulate dataset``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import torch

if TYPE_CHECKING:
    from fairesi.headmodel import HeadModel
    from fairesi.simulate import WaveformBank

__all__ = [
    "PRESETS",
    "SPLITS",
    "Batch",
    "DatasetFile",
    "RawBatch",
    "SimConfig",
    "SynthDataset",
    "Synthesizer",
    "collate_batch",
    "epoch_order",
    "iter_batches",
    "merge_datasets",
    "normalise_input",
    "write_dataset",
]

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}

PRESETS: dict[str, dict[str, Any]] = {
    "SimMEG": {"modality": "meg", "n_times": 500},
    "SimEEG": {"modality": "eeg", "n_times": 260},
}

# Half-width of the window around the spike peak in which the source-space SNR is
# measured, in seconds (DeepSIF: +-50 samples at 500 Hz).
_SNR_HALF_WINDOW_S = 0.1
# Give up on a sample after this many rejected centre draws (only reachable when the
# pool barely fits the patches; the constructor checks that a valid draw exists).
_MAX_CENTRE_ATTEMPTS = 256


@dataclass(frozen=True)
class SimConfig:
    """What one simulated dataset configuration looks like (SPEC §4).

    Parameters
    ----------
    modality : {'meg', 'eeg'}
        Which lead field of the head model projects the sources.
    n_times : int
        Samples per example, at the bank's sampling rate (SimMEG 500, SimEEG 260).
    snr_db : float
        Sensor-space SNR in dB of the white Gaussian noise (paper: -5, 5, 15).
    n_sources : int
        Number of source patches N_s per example.
    n_rings : int
        Neighbour rings N_n grown around each centre (0 = the centre alone).
    n_samples : int
        Total number of examples over the three splits (47,904 in the paper).
    split_ratio : tuple of 3 int
        Relative sizes of train, val and test (10:1:1); also the ratio in which the
        regions are partitioned into centre pools.
    disjoint_centres : bool
        True (SPEC §4): each split draws its source centres from its own pool of regions,
        so test sources lie where training never put a centre. False: every split draws
        from all regions (the splits still hold different samples), as a random 10:1:1
        split of one sample set does; the paper's 47,904 samples are 48 per region of its
        998, split 10:1:1, so its test centres were seen in training.
    source_snr_db : tuple of 2 float
        Range (dB) of the uniformly drawn source-space SNR of each source.
    half_amplitude_rings : tuple of 2 float
        Range of the ring distance at which a patch's Gaussian weight halves.
    peak_position : tuple of 2 float
        Range of the spike peak's position as a fraction of ``n_times``.
    """

    modality: str
    n_times: int
    snr_db: float = 5.0
    n_sources: int = 1
    n_rings: int = 2
    n_samples: int = 47904
    split_ratio: tuple[int, int, int] = (10, 1, 1)
    disjoint_centres: bool = True
    source_snr_db: tuple[float, float] = (10.0, 20.0)
    half_amplitude_rings: tuple[float, float] = (3.5, 5.0)
    peak_position: tuple[float, float] = (0.3, 0.7)

    def __post_init__(self) -> None:
        # Accept lists (from JSON/HDF5 attributes) but store hashable tuples.
        for name in ("split_ratio", "source_snr_db", "half_amplitude_rings", "peak_position"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.modality not in ("meg", "eeg"):
            raise ValueError(f"modality must be 'meg' or 'eeg', got {self.modality!r}")
        if int(self.n_times) != self.n_times or self.n_times < 2:
            raise ValueError(f"n_times must be an integer >= 2, got {self.n_times!r}")
        if not math.isfinite(self.snr_db):
            raise ValueError(f"snr_db must be a finite number of dB, got {self.snr_db!r}")
        if int(self.n_sources) != self.n_sources or self.n_sources < 1:
            raise ValueError(f"n_sources must be an integer >= 1, got {self.n_sources!r}")
        if int(self.n_rings) != self.n_rings or self.n_rings < 0:
            raise ValueError(f"n_rings must be an integer >= 0, got {self.n_rings!r}")
        if len(self.split_ratio) != 3 or min(self.split_ratio) < 1:
            raise ValueError(
                f"split_ratio must be 3 positive integers (train, val, test), got {self.split_ratio!r}"
            )
        if int(self.n_samples) != self.n_samples or self.n_samples < sum(self.split_ratio):
            raise ValueError(
                f"n_samples must be an integer >= {sum(self.split_ratio)} (one per split "
                f"ratio unit), got {self.n_samples!r}"
            )
        for name, lo_bound, hi_bound in (
            ("source_snr_db", -math.inf, math.inf),
            ("half_amplitude_rings", 0.0, math.inf),
            ("peak_position", 0.0, 1.0),
        ):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo_bound <= lo <= hi <= hi_bound):
                raise ValueError(
                    f"{name} must be a finite range (lo, hi) with {lo_bound} <= lo <= hi <= "
                    f"{hi_bound}, got {(lo, hi)!r}"
                )
        if not isinstance(self.disjoint_centres, bool):
            raise ValueError(
                f"disjoint_centres must be True or False, got {self.disjoint_centres!r}"
            )
        if self.half_amplitude_rings[0] <= 0:
            raise ValueError(f"half_amplitude_rings must be > 0, got {self.half_amplitude_rings!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SimConfig:
        """Return the paper's configuration ``name`` ('SimMEG' or 'SimEEG') with overrides.

        Parameters
        ----------
        name : str
            'SimMEG' (306-channel MEG, 500 samples) or 'SimEEG' (256-channel EEG, 260
            samples).
        **overrides
            Any :class:`SimConfig` field, e.g. ``snr_db=15, n_sources=2``.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown configuration {name!r}; expected one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SimConfig field(s) {sorted(unknown)} for preset {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> SimConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**fields)

    def split_sizes(self) -> dict[str, int]:
        """Number of samples in each split: val and test round down, train takes the rest."""
        total = sum(self.split_ratio)
        sizes = [self.n_samples * r // total for r in self.split_ratio]
        sizes[0] += self.n_samples - sum(sizes)
        return dict(zip(SPLITS, sizes, strict=True))


@dataclass
class Batch:
    """A batch of normalised network inputs and targets.

    Attributes
    ----------
    x : torch.Tensor (B, C, T) float32
        Normalised sensor data (DeepSIF normalisation, max |x| = 1 per sample).
    target : torch.Tensor (B, R, T) float32
        Normalised source activity: patch regions only, max |target| = 1 per sample.
    source_mask : torch.Tensor (B, R) bool
        Regions of the ground-truth patches.
    centres : torch.Tensor (B, N_s) int64
        Centre region of each patch.
    """

    x: torch.Tensor
    target: torch.Tensor
    source_mask: torch.Tensor
    centres: torch.Tensor

    def to(self, device: str | torch.device, non_blocking: bool = False) -> Batch:
        """Return a copy with every tensor on ``device``."""
        return Batch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in dataclasses.fields(self)
            }
        )

    def pin_memory(self) -> Batch:
        """Return a copy in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            **{f.name: getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)}
        )

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class RawBatch:
    """Every intermediate of a batch before normalisation (for checks and inspection).

    ``sensor_clean + noise`` is the sensor data before normalisation and
    ``sensor_clean == lead_field.gain @ sources`` (float32 rounding).

    Attributes
    ----------
    sources : torch.Tensor (B, R, T) float32
        Source activity in mV: background everywhere, weighted spikes in the patches.
    sensor_clean : torch.Tensor (B, C, T) float32
        Noise-free sensor data, in the lead field's units times mV.
    noise : torch.Tensor (B, C, T) float32
        The white sensor noise that was added.
    centres : torch.Tensor (B, N_s) int64
    patch_regions : torch.Tensor (B, N_s, M) int64
        Regions of each patch sorted by ring, padded with -1 (M = largest patch).
    patch_weights : torch.Tensor (B, N_s, M) float32
        Gaussian weight of each patch region (0 for padding).
    source_scale : torch.Tensor (B, N_s) float32
        Amplitude (mV) given to each unit-peak spike to reach its source SNR.
    source_snr_db : torch.Tensor (B, N_s) float32
        Drawn source-space SNR of each source.
    spike_index : torch.Tensor (B, N_s) int64
        Row of the bank's ``spikes`` used by each source.
    peak_sample : torch.Tensor (B, N_s) int64
        Sample of the window at which each spike peaks.
    background_start : torch.Tensor (B,) int64
        First sample of the background window in the bank.
    """

    sources: torch.Tensor
    sensor_clean: torch.Tensor
    noise: torch.Tensor
    centres: torch.Tensor
    patch_regions: torch.Tensor
    patch_weights: torch.Tensor
    source_scale: torch.Tensor
    source_snr_db: torch.Tensor
    spike_index: torch.Tensor
    peak_sample: torch.Tensor
    background_start: torch.Tensor


# --------------------------------------------------------------------------------------
# Counter-based random numbers. A 32-bit integer hash (Wellons' "lowbias32") of
# (key, counter) gives each sample its own reproducible stream that does not depend on
# batch composition or device. The torch version runs on any device; the numba kernel is
# the same arithmetic fused into one pass for the large noise array on CPU.

_M32 = 0xFFFFFFFF
_H1, _H2 = 0x7FEB352D, 0x846CA68B
_STREAM_CENTRES, _STREAM_PARAMS, _STREAM_NOISE, _STREAM_ORDER = (
    0x243F6A88,
    0x85A308D3,
    0x13198A2E,
    0x03707344,
)
_DRAW_SALT = 0xA4093822


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _H1)
    x = x ^ (x >> 15)
    x = _mul32(x, _H2)
    return x ^ (x >> 16)


def _bits(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """32 random bits (int64) for every (key, counter) pair; shapes broadcast."""
    return _hash32(_hash32(key ^ counter) ^ key)


def _uniform(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Uniform float64 in (0, 1) for every (key, counter) pair."""
    return (_bits(key, counter).double() + 0.5) * 2.0**-32


def _sample_keys(seed: int, split: str, index: torch.Tensor, stream: int) -> torch.Tensor:
    """Per-sample keys (int64 in [0, 2**32)) of one random stream; ``index`` is (B,)."""
    k = torch.full_like(index, (seed & _M32) ^ 0x9E3779B9)
    for word in ((seed >> 32) & _M32, _SPLIT_CODE[split], stream):
        k = _hash32(k ^ word)
    return _hash32(k ^ index)


def _draw_keys(seed: int, split: str, index: torch.Tensor, stream: int, draw: int) -> torch.Tensor:
    """Keys of one stream for draw ``draw`` of the samples ``index`` (B,); draw 0 gives
    :func:`_sample_keys` itself, so the dataset's samples do not depend on the option."""
    keys = _sample_keys(seed, split, index, stream)
    if draw == 0:
        return keys
    return _hash32(keys ^ _hash32(torch.full_like(keys, (draw & _M32) ^ _DRAW_SALT)))


def _normal_torch(keys: torch.Tensor, n_channels: int, n_times: int) -> torch.Tensor:
    """Standard normals (B, C, T) float32 from keys (B,) int64, on the keys' device.

    Box-Muller on pairs of counters: pair ``p = c * ceil(T/2) + j`` yields samples 2j
    (cosine) and 2j+1 (sine) of channel c.
    """
    half = (n_times + 1) // 2
    pair = torch.arange(n_channels * half, device=keys.device, dtype=torch.int64)
    k = keys[:, None]
    u1 = ((_bits(k, 2 * pair) >> 8).float() + 0.5) * 2.0**-24
    u2 = ((_bits(k, 2 * pair + 1) >> 8).float() + 0.5) * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return z.reshape(keys.shape[0], n_channels, 2 * half)[..., :n_times].contiguous()


@numba.njit(inline="always")
def _hash32_nb(x):  # pragma: no cover - compiled
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(_H1)) & np.uint64(_M32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(_H2)) & np.uint64(_M32)
    return x ^ (x >> np.uint64(16))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _normal_nb(keys, out):  # pragma: no cover - compiled
    """Same numbers as :func:`_normal_torch`, fused; ``keys`` (B,) uint64, out (B,C,T)."""
    n_batch, n_channels, n_times = out.shape
    half = (n_times + 1) // 2
    scale = np.float32(2.0**-24)
    two_pi = np.float32(2.0 * math.pi)
    for b in range(n_batch):
        k = keys[b]
        for c in range(n_channels):
            for j in range(half):
                ctr = np.uint64(2 * (c * half + j))
                a = _hash32_nb(_hash32_nb(k ^ ctr) ^ k) >> np.uint64(8)
                e = _hash32_nb(_hash32_nb(k ^ (ctr + np.uint64(1))) ^ k) >> np.uint64(8)
                u1 = (np.float32(a) + np.float32(0.5)) * scale
                u2 = (np.float32(e) + np.float32(0.5)) * scale
                radius = math.sqrt(np.float32(-2.0) * math.log(u1))
                out[b, c, 2 * j] = radius * math.cos(two_pi * u2)
                if 2 * j + 1 < n_times:
                    out[b, c, 2 * j + 1] = radius * math.sin(two_pi * u2)


def _standard_normal(keys: torch.Tensor, n_channels: int, n_times: int, device: torch.device):
    """Standard normals (B, C, T) float32 on ``device`` from CPU keys (B,) int64."""
    if device.type == "cpu":
        out = np.empty((keys.shape[0], n_channels, n_times), dtype=np.float32)
        _normal_nb(keys.numpy().astype(np.uint64), out)
        return torch.from_numpy(out)
    return _normal_torch(keys.to(device), n_channels, n_times)


# --------------------------------------------------------------------------------------


class Synthesizer:
    """On-the-fly, seeded generator of paired (sensor, source) samples.

    Parameters
    ----------
    head_model : HeadModel
        Regions, adjacency and lead fields; must have ``config.modality``.
    bank : WaveformBank
        Spike waveforms and background activity of the same regions.
    config : SimConfig
        The dataset configuration.
    seed : int
        Dataset seed (non-negative, < 2**64): fixes the centre pools and every sample.
    device : str or torch.device
        Where the batches are composed and returned ('cpu', 'cuda', ...).

    Raises
    ------
    ValueError
        If the head model lacks the modality, the bank's regions do not match the head
        model, the bank is too short for ``n_times``, or a split's centre pool cannot hold
        ``n_sources`` non-touching patches of ``n_rings`` rings.
    """

    def __init__(
        self,
        head_model: HeadModel,
        bank: WaveformBank,
        config: SimConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        if int(seed) != seed or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        if config.modality not in head_model.lead_fields:
            raise ValueError(
                f"head model {head_model.name!r} has no {config.modality!r} lead field "
                f"(available: {sorted(head_model.lead_fields)}); configuration needs "
                f"modality={config.modality!r}"
            )
        n_regions = head_model.n_regions
        background = np.asarray(bank.background, dtype=np.float32)
        spikes = np.asarray(bank.spikes, dtype=np.float32)
        if background.ndim != 2 or background.shape[0] != n_regions:
            raise ValueError(
                f"waveform bank has background for {background.shape[0]} regions but head "
                f"model {head_model.name!r} has {n_regions} regions; build the bank on the "
                "head model's connectome"
            )
        if background.shape[1] < config.n_times:
            raise ValueError(
                f"waveform bank background has {background.shape[1]} samples, fewer than "
                f"n_times={config.n_times}"
            )
        if spikes.ndim != 2 or spikes.shape[0] == 0:
            raise ValueError(f"waveform bank has no spikes (spikes shape {spikes.shape})")
        peak_values = spikes[:, spikes.shape[1] // 2]
        if not np.all(peak_values > 0):
            raise ValueError(
                "every bank spike must have a positive peak at index segment_len // 2; "
                f"{int(np.sum(peak_values <= 0))} do not"
            )

        self.head_model = head_model
        self.bank = bank
        self.config = config
        self.seed = int(seed)
        self.device = torch.device(device)
        self.lead_field = head_model.lead_field(config.modality)
        self.n_regions = n_regions
        self.n_channels = self.lead_field.n_channels
        self._snr_half_window = round(_SNR_HALF_WINDOW_S * float(bank.sfreq))

        hop = np.asarray(head_model.hop_distance).astype(np.int64)
        self._build_patches(hop)
        self._build_pools(hop)

        dev = self.device
        gain = torch.as_tensor(np.asarray(self.lead_field.gain, dtype=np.float32))
        bg = torch.from_numpy(background)
        # Lead field times the whole background once: a sample then only corrects its
        # patch regions (see the module docstring).
        self._projected_background = (gain @ bg).T.contiguous().to(dev)  # (N_bg, C)
        self._background = bg.to(dev)  # (R, N_bg)
        self._gain_t = gain.T.contiguous().to(dev)  # (R, C)
        # Unit-peak spikes, as DeepSIF's ssig / max(ssig).
        self._spikes = torch.from_numpy(spikes / spikes.max(axis=1, keepdims=True)).to(dev)
        regions = np.asarray(bank.spike_regions, dtype=np.int64)
        order = np.argsort(regions, kind="stable")
        counts = np.bincount(regions, minlength=n_regions)[:n_regions]
        self._spike_order = torch.from_numpy(order)
        self._spike_counts = torch.from_numpy(counts)
        self._spike_offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]))

    # ----------------------------------------------------------------------------------
    def _build_patches(self, hop: np.ndarray) -> None:
        """Per-region patch tables: regions within ``n_rings`` hops, sorted by ring."""
        n_rings = self.config.n_rings
        member = (hop >= 0) & (hop <= n_rings)
        self.max_patch_size = int(member.sum(axis=1).max())
        order = np.argsort(np.where(member, hop, np.iinfo(np.int64).max), axis=1, kind="stable")
        order = order[:, : self.max_patch_size]
        valid = np.take_along_axis(member, order, axis=1)
        ring = np.where(valid, np.take_along_axis(hop, order, axis=1), 0)
        self._patch_regions = torch.from_numpy(np.where(valid, order, -1))  # (R, M)
        self._patch_ring = torch.from_numpy(ring.astype(np.float64))  # (R, M)
        self._patch_valid = torch.from_numpy(valid)  # (R, M)
        # Patches neither overlap nor touch: centres >= 2 * n_rings + 2 hops apart
        # (negative hop = different connected component = far).
        self._min_centre_hops = 2 * n_rings + 2
        self._far = torch.from_numpy((hop < 0) | (hop >= self._min_centre_hops))

    def _build_pools(self, hop: np.ndarray) -> None:
        """Partition the regions into disjoint train/val/test centre pools (from the seed),
        or give every split all regions (``SimConfig.disjoint_centres=False``)."""
        if self.config.disjoint_centres:
            rng = np.random.default_rng([self.seed & _M32, self.seed >> 32, 0x504F4F4C])
            perm = rng.permutation(self.n_regions)
            total = sum(self.config.split_ratio)
            sizes = [self.n_regions * r // total for r in self.config.split_ratio]
            sizes[0] += self.n_regions - sum(sizes)
            bounds = np.cumsum([0, *sizes])
            self.centre_pools: dict[str, np.ndarray] = {
                s: np.sort(perm[bounds[k] : bounds[k + 1]]) for k, s in enumerate(SPLITS)
            }
        else:
            self.centre_pools = {s: np.arange(self.n_regions) for s in SPLITS}
        far = self._far.numpy()
        for split, pool in self.centre_pools.items():
            chosen: list[int] = []
            for region in pool:  # greedy: proves that at least one valid draw exists
                if all(far[region, c] for c in chosen):
                    chosen.append(int(region))
                if len(chosen) == self.config.n_sources:
                    break
            if len(chosen) < self.config.n_sources:
                raise ValueError(
                    f"n_sources={self.config.n_sources} is too large for the {split} split: "
                    f"its centre pool of {len(pool)} of the {self.n_regions} regions cannot "
                    f"hold {self.config.n_sources} non-touching patches of "
                    f"n_rings={self.config.n_rings} (centres >= {self._min_centre_hops} hops "
                    f"apart); found at most {len(chosen)}"
                )

    # ----------------------------------------------------------------------------------
    def split_size(self, split: str) -> int:
        """Number of samples in ``split`` ('train', 'val' or 'test')."""
        _check_split(split)
        return self.config.split_sizes()[split]

    def _check_index(self, split: str, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index)
        if index.ndim != 1 or index.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"index must be a 1-D integer tensor, got shape {tuple(index.shape)} dtype {index.dtype}"
            )
        index = index.to("cpu", torch.int64)
        size = self.split_size(split)
        if index.numel() and (index.min() < 0 or index.max() >= size):
            raise ValueError(
                f"sample indices must lie in [0, {size}) for the {split} split, got "
                f"min {int(index.min())}, max {int(index.max())}"
            )
        return index

    def _draw_centres(self, split: str, index: torch.Tensor) -> torch.Tensor:
        """Centre regions (B, N_s): sequential uniform draws among pool regions far from
        the centres drawn so far; a dead end redraws the sample with fresh counters."""
        n_sources = self.config.n_sources
        pool = torch.from_numpy(self.centre_pools[split])
        far = self._far[pool][:, pool]  # (P, P)
        keys = _sample_keys(self.seed, split, index, _STREAM_CENTRES)[:, None]
        centres = torch.empty((index.numel(), n_sources), dtype=torch.int64)
        todo = torch.arange(index.numel())
        for attempt in range(_MAX_CENTRE_ATTEMPTS):
            counter = attempt * n_sources + torch.arange(n_sources)
            u = _uniform(keys[todo], counter[None, :])  # (b, N_s)
            allowed = torch.ones((todo.numel(), pool.numel()), dtype=torch.bool)
            dead = torch.zeros(todo.numel(), dtype=torch.bool)
            for k in range(n_sources):
                count = allowed.sum(1)
                dead |= count == 0
                j = torch.clamp((u[:, k] * count).long(), max=torch.clamp(count - 1, min=0))
                pos = (allowed.cumsum(1) <= j[:, None]).sum(1).clamp(max=pool.numel() - 1)
                centres[todo, k] = pool[pos]
                allowed &= far[pos]
            todo = todo[dead]
            if todo.numel() == 0:
                return centres
        raise RuntimeError(
            f"could not place {n_sources} non-touching patches for {todo.numel()} samples "
            f"after {_MAX_CENTRE_ATTEMPTS} attempts"
        )

    def _draw(self, split: str, index: torch.Tensor, draw: int) -> dict[str, torch.Tensor]:
        """All random choices of the samples (CPU tensors); ``draw`` re-keys all but the
        centres."""
        cfg = self.config
        n_s, n_t = cfg.n_sources, cfg.n_times
        centres = self._draw_centres(split, index)
        keys = _draw_keys(self.seed, split, index, _STREAM_PARAMS, draw)[:, None]
        u = _uniform(keys, torch.arange(4 * n_s + 1)[None, :])
        u_spike, u_peak, u_snr, u_half = (u[:, k * n_s : (k + 1) * n_s] for k in range(4))
        u_background = u[:, 4 * n_s]

        count = self._spike_counts[centres]
        own = self._spike_order[
            self._spike_offsets[centres] + torch.minimum((u_spike * count).long(), count - 1)
        ]
        n_spikes = self._spikes.shape[0]
        anyone = torch.clamp((u_spike * n_spikes).long(), max=n_spikes - 1)
        spike_index = torch.where(count > 0, own, anyone)

        lo, hi = cfg.peak_position
        peak_sample = torch.clamp(((lo + (hi - lo) * u_peak) * n_t).long(), 0, n_t - 1)
        lo, hi = cfg.source_snr_db
        source_snr_db = lo + (hi - lo) * u_snr
        lo, hi = cfg.half_amplitude_rings
        half_rings = lo + (hi - lo) * u_half
        n_start = self._background.shape[1] - n_t + 1
        background_start = torch.clamp((u_background * n_start).long(), max=n_start - 1)

        ring = self._patch_ring[centres]  # (B, N_s, M)
        weights = torch.exp2(-((ring / half_rings[..., None]) ** 2)) * self._patch_valid[centres]
        return {
            "centres": centres,
            "patch_regions": self._patch_regions[centres],
            "patch_weights": weights.float(),
            "source_snr_db": source_snr_db.float(),
            "spike_index": spike_index,
            "peak_sample": peak_sample,
            "background_start": background_start,
            "noise_keys": _draw_keys(self.seed, split, index, _STREAM_NOISE, draw),
        }

    def _compose(self, split: str, index: torch.Tensor, draw: int = 0) -> _Composed:
        """Un-normalised pieces of a batch, on ``self.device``."""
        cfg, dev = self.config, self.device
        index = self._check_index(split, index)
        if int(draw) != draw or not 0 <= draw < 2**32:
            raise ValueError(f"draw must be an integer in [0, 2**32), got {draw!r}")
        p = self._draw(split, index, int(draw))
        noise_keys = p.pop("noise_keys")
        p = {k: v.to(dev) for k, v in p.items()}
        n, n_s, n_t = index.numel(), cfg.n_sources, cfg.n_times
        t = torch.arange(n_t, device=dev)

        # Jittered unit-peak spikes (B, N_s, T); indices outside the segment repeat its edge.
        seg_len = self._spikes.shape[1]
        seg_t = (seg_len // 2 - p["peak_sample"])[..., None] + t
        waveform = self._spikes[p["spike_index"][..., None], seg_t.clamp(0, seg_len - 1)]

        # Background of the regions outside the patches, at the sensors: the projected bank
        # window minus the patch regions' share.
        window = p["background_start"][:, None] + t  # (B, T)
        regions = p["patch_regions"].reshape(n, -1)  # (B, K)
        valid = regions >= 0
        safe = regions.clamp(min=0)
        gain_patch = self._gain_t[safe] * valid[..., None]  # (B, K, C)
        background_patch = self._background[safe[..., None], window[:, None, :]]  # (B, K, T)
        sensor_background = torch.baddbmm(
            self._projected_background[window].transpose(1, 2),
            gain_patch.transpose(1, 2),
            background_patch,
            alpha=-1.0,
        )  # (B, C, T)

        # Source-space SNR (DeepSIF find_alpha): patch vs background power at the sensors,
        # temporally de-meaned, within +-100 ms of the spike peak (clipped to the window).
        offsets = torch.arange(-self._snr_half_window, self._snr_half_window + 1, device=dev)
        snr_t = p["peak_sample"][..., None] + offsets  # (B, N_s, W)
        in_window = ((snr_t >= 0) & (snr_t < n_t)).float()
        snr_t = snr_t.clamp(0, n_t - 1)
        patch_gain = torch.einsum(
            "bkmc,bkm->bkc", gain_patch.reshape(n, n_s, -1, self.n_channels), p["patch_weights"]
        )  # (B, N_s, C)
        centred = waveform - waveform.mean(-1, keepdim=True)
        power_signal = patch_gain.square().sum(-1) * (
            centred.gather(2, snr_t).square() * in_window
        ).sum(-1)
        background_at = sensor_background.gather(
            2, snr_t.reshape(n, 1, -1).expand(-1, self.n_channels, -1)
        ) - sensor_background.mean(-1, keepdim=True)  # (B, C, N_s * W)
        energy = background_at.square().sum(1).reshape(snr_t.shape)
        power_background = (energy * in_window).sum(-1)
        # Both powers are sums over the same window, so their ratio needs no window length.
        ratio = power_background / power_signal.clamp_min(torch.finfo(torch.float32).tiny)
        scale = torch.sqrt(10.0 ** (p["source_snr_db"] / 10.0) * ratio)

        sensor_clean = sensor_background.baddbmm_(
            (patch_gain * scale[..., None]).transpose(1, 2), waveform
        )
        # Noise std per channel: sqrt(mean_t y^2 * 10^(-snr/10)).
        noise_std = torch.linalg.vector_norm(sensor_clean, dim=-1) * math.sqrt(
            10.0 ** (-cfg.snr_db / 10.0) / n_t
        )  # (B, C)
        noise = _standard_normal(noise_keys, self.n_channels, n_t, dev).mul_(noise_std[..., None])

        # Activity of the patch regions (B, K, T) in mV; K = N_s * M, padding is zero.
        patch_activity = (
            (scale[..., None] * p["patch_weights"])[..., None] * waveform[:, :, None, :]
        ).reshape(n, -1, n_t)
        p["source_scale"] = scale.float()
        return _Composed(p, regions, patch_activity, sensor_clean, noise, window)

    def _scatter_regions(self, composed: _Composed, values: torch.Tensor) -> torch.Tensor:
        """Scatter per-patch-region values (B, K, ...) into a zero (B, R, ...) tensor.

        Padding entries carry zeros and are added (not written) onto region 0, which is
        harmless because patches never overlap.
        """
        n = values.shape[0]
        index = composed.regions.clamp(min=0)
        index = index.reshape(*index.shape, *([1] * (values.ndim - 2))).expand_as(values)
        out = torch.zeros(
            (n, self.n_regions, *values.shape[2:]), dtype=values.dtype, device=values.device
        )
        return out.scatter_add_(1, index, values)

    def _target_and_mask(self, composed: _Composed) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised target (B, R, T) and source mask (B, R) bool."""
        target = self._scatter_regions(composed, _normalise_max(composed.patch_activity))
        mask = self._scatter_regions(composed, (composed.regions >= 0).int()) > 0
        return target, mask

    def raw(self, split: str, index: torch.Tensor, draw: int = 0) -> RawBatch:
        """Un-normalised samples with every intermediate (for checks and storage).

        Parameters
        ----------
        split : {'train', 'val', 'test'}
        index : torch.Tensor (B,) int64
            Sample indices within the split.
        draw : int
            Realisation of the samples (see :meth:`batch`).
        """
        composed = self._compose(split, index, draw)
        activity = self._scatter_regions(composed, composed.patch_activity)
        mask = self._scatter_regions(composed, (composed.regions >= 0).int()) > 0
        background = self._background[:, composed.window].permute(1, 0, 2)  # (B, R, T)
        return RawBatch(
            sources=torch.where(mask[..., None], activity, background),
            sensor_clean=composed.sensor_clean,
            noise=composed.noise,
            **composed.params,
        )

    def batch(self, split: str, index: torch.Tensor, draw: int = 0) -> Batch:
        """Normalised samples ``index`` of ``split``.

        Parameters
        ----------
        split : {'train', 'val', 'test'}
        index : torch.Tensor (B,) int64
            Sample indices within the split, in [0, split_size(split)).
        draw : int
            Realisation, in [0, 2**32): 0 is the dataset's sample; any other value keeps
            its centre regions and draws every other random choice (spike, jitter,
            fall-off, source SNR, background window, sensor noise) afresh, as a pure
            function of ``(seed, split, index, draw)``.

        Returns
        -------
        Batch
            ``x`` (B, C, T), ``target`` (B, R, T), ``source_mask`` (B, R), ``centres``
            (B, N_s), on ``self.device``.
        """
        composed = self._compose(split, index, draw)
        target, mask = self._target_and_mask(composed)
        return Batch(
            x=normalise_input(composed.sensor_clean + composed.noise),
            target=target,
            source_mask=mask,
            centres=composed.params["centres"],
        )


@dataclass
class _Composed:
    """Un-normalised pieces of a batch, on the synthesizer's device."""

    params: dict[str, torch.Tensor]  # the RawBatch parameter fields
    regions: torch.Tensor  # (B, K) int64 patch regions, -1 = padding
    patch_activity: torch.Tensor  # (B, K, T) float32, mV
    sensor_clean: torch.Tensor  # (B, C, T)
    noise: torch.Tensor  # (B, C, T)
    window: torch.Tensor  # (B, T) int64 background samples


def normalise_input(y: torch.Tensor) -> torch.Tensor:
    """DeepSIF input normalisation of sensor data ``y`` (B, C, T).

    Removes each channel's time mean, then each time point's channel mean, then divides
    by the sample's maximum absolute value.
    """
    time_mean = y.mean(dim=2, keepdim=True)  # (B, C, 1)
    # Channel mean of (y - time_mean), without materialising the difference first.
    channel_mean = y.mean(dim=1, keepdim=True) - time_mean.mean(dim=1, keepdim=True)
    return _normalise_max(torch.sub(y, time_mean).sub_(channel_mean), inplace=True)


def _normalise_max(a: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``a`` divided by its maximum absolute value per sample (first axis)."""
    dims = tuple(range(1, a.ndim))
    peak = torch.linalg.vector_norm(a, ord=math.inf, dim=dims, keepdim=True)
    peak = peak.clamp_min(torch.finfo(a.dtype).tiny)
    return a.div_(peak) if inplace else a / peak


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def epoch_order(synth: Synthesizer, split: str, *, shuffle: bool, epoch: int) -> torch.Tensor:
    """Order (N,) int64 in which an epoch visits the split's samples.

    With ``shuffle`` it is a permutation that depends only on (seed, split, epoch), so it
    is the same on any machine and torch version.
    """
    n = synth.split_size(split)
    index = torch.arange(n, dtype=torch.int64)
    if not shuffle:
        return index
    key = _sample_keys(synth.seed, split, torch.tensor([epoch & _M32]), _STREAM_ORDER)
    return torch.argsort(_bits(key, index), stable=True)


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
) -> Iterator[Batch]:
    """Yield the batches of one epoch (for the training loop and exact resume).

    Parameters
    ----------
    synth : Synthesizer
    split : {'train', 'val', 'test'}
    batch_size : int
    shuffle : bool
        Visit the samples in the epoch's own random order (see :func:`epoch_order`).
    epoch : int
        Epoch number; with ``shuffle`` each epoch has its own order.
    start_batch : int
        Skip the first ``start_batch`` batches: resuming after ``k`` finished batches with
        ``start_batch=k`` continues with exactly the batches an uninterrupted run would see.
    drop_last : bool
        Drop a final batch smaller than ``batch_size``.
    redraw : bool
        Use draw ``epoch`` of every sample (see :meth:`Synthesizer.batch`): each epoch
        sees new realisations of the same source locations.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_order(synth, split, shuffle=shuffle, epoch=epoch)
    n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    if not 0 <= start_batch <= n_batches:
        raise ValueError(f"start_batch must be in [0, {n_batches}], got {start_batch}")
    draw = epoch if redraw else 0
    for b in range(start_batch, n_batches):
        yield synth.batch(split, order[b * batch_size : (b + 1) * batch_size], draw=draw)


class SynthDataset(torch.utils.data.Dataset):
    """Map-style ``torch.utils.data`` view of one split of a :class:`Synthesizer`.

    Use with ``DataLoader(..., collate_fn=collate_batch)``: the DataLoader fetches whole
    batches through :meth:`__getitems__` (one batched synthesis call per batch). Samples
    depend only on their index, so any ``num_workers`` gives identical batches. With
    workers, build the synthesizer on the CPU and move batches to the GPU in the loop (or
    skip the DataLoader and use :func:`iter_batches` on a CUDA synthesizer).
    """

    def __init__(self, synth: Synthesizer, split: str) -> None:
        _check_split(split)
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
    """DataLoader ``collate_fn``: pass a :class:`Batch` through, stack per-sample dicts."""
    if isinstance(items, Batch):
        return items
    return Batch(**{name: torch.stack([it[name] for it in items]) for name in items[0]})


# --------------------------------------------------------------------------------------
# HDF5 storage

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
    finished shards.

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
    from fairesi.io import atomic_path

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
            if _is_shard_of(shard, identity):
                bar.update(count)
            else:
                with atomic_path(shard) as tmp, h5py.File(tmp, "w") as f:
                    _write_samples(f, synth, split, first, count, attrs, batch_size, bar)
            shards.append(shard)
        merge_datasets(shards, path)
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
            "x": normalise_input(composed.sensor_clean + composed.noise),
            "target_regions": composed.regions,
            "target_values": _normalise_max(composed.patch_activity),
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
    import h5py

    from fairesi.io import atomic_path

    if not parts:
        raise ValueError("merge_datasets needs at least one part")
    ranges = []
    for part in map(Path, parts):
        if not part.is_file():
            raise FileNotFoundError(f"dataset part {part} does not exist")
        with h5py.File(part, "r") as f:
            if f.attrs.get("format") != _H5_FORMAT:
                raise ValueError(f"{part} is not a fairesi dataset")
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


def _is_shard_of(shard: Path, identity: dict) -> bool:
    """Whether ``shard`` is a finished shard written with the same ``identity`` attributes."""
    import h5py

    if not shard.is_file():
        return False
    try:
        with h5py.File(shard, "r") as g:
            return all(g.attrs.get(key) == value for key, value in identity.items())
    except OSError:  # not an HDF5 file: rewrite it
        return False


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
        with h5py.File(self.path, "r") as f:
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
        """Rows ``positions`` of the file as a :class:`Batch` (on the CPU)."""
        positions = np.asarray(torch.as_tensor(positions, dtype=torch.int64))
        if positions.ndim != 1 or (
            positions.size and (positions.min() < 0 or positions.max() >= self._len)
        ):
            raise ValueError(f"positions must be a 1-D array within [0, {self._len})")
        f = self._h5()
        # h5py reads increasing unique indices; read sorted rows and undo the order.
        rows, inverse = np.unique(positions, return_inverse=True)

        def read(name: str) -> torch.Tensor:
            return torch.from_numpy(f[name][rows][inverse])

        regions = read("target_regions").long()
        values = read("target_values")
        n, n_t = len(positions), values.shape[-1]
        target = torch.zeros((n, self.n_regions, n_t), dtype=torch.float32)
        target.scatter_add_(1, regions.clamp(min=0)[..., None].expand(-1, -1, n_t), values)
        mask = torch.zeros((n, self.n_regions), dtype=torch.int32)
        mask.scatter_add_(1, regions.clamp(min=0), (regions >= 0).int())
        return Batch(x=read("x"), target=target, source_mask=mask > 0, centres=read("centres"))

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
