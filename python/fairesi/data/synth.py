"""Paired (sensor, source) samples for training and evaluating ESI networks.

A :class:`Synthesizer` turns a :class:`~fairesi.headmodel.HeadModel` and a
:class:`~fairesi.simulate.WaveformBank` into an endless, seeded supply of samples laid out
as docs/protocols.md describes (strict protocol), mirroring DeepSIF's loader (``loaders.SpikeEEGBuild``):

1. **Background.** Every region carries Jansen-Rit background activity: the same random
   ``n_times`` window of the bank's background traces for all regions, so inter-region
   correlations of the simulation are kept.
2. **Sources.** ``n_sources`` centre regions are drawn from the split's centre pool such
   that their patches neither overlap nor touch (centres at least ``2 * n_rings + 2``
   graph hops apart). Each patch is the centre plus its neighbour rings 1..``n_rings``
   (:meth:`HeadModel.rings`), or under ``SimConfig.patch_growth`` a part of them: one of
   the centre's fixed DeepSIF candidates ('candidates', :mod:`fairesi.data.growth`) or a
   fresh random growth ('random'). Inside a patch the background is replaced, as in DeepSIF,
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

A training mixture (``SimConfig.mixture``) holds one synthesizer per row, sharing this
one's bank and lead-field tensors: sample ``i`` is sample ``i`` of row ``i % K``'s
configuration (so each row's samples, and its test split, are that row's own), and
``centres`` is padded with -1 to the largest N_s. Mixtures are drawn on the fly only
(:meth:`Synthesizer.raw`, and so the HDF5 writer, refuse them).

The sensor projection never multiplies the full ``(R, T)`` source matrix: the lead field
times the whole background bank is computed once, and a sample only corrects the patch
regions, so the cost per sample is ``O(C * T * patch size)`` instead of ``O(C * T * R)``.

Interfaces: :meth:`Synthesizer.batch` (a :class:`~fairesi.data.batch.Batch` on the
synthesizer's device) and :meth:`Synthesizer.raw` (every un-normalised intermediate, a
:class:`~fairesi.data.batch.RawBatch`). The random numbers come from
:mod:`fairesi.data.rng`; epochs and DataLoader views are in :mod:`fairesi.data.sampling`,
HDF5 files in :mod:`fairesi.data.h5`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fairesi.data.batch import (
    Batch,
    RawBatch,
    normalise_blocks,
    normalise_max,
    region_mask,
    scatter_regions,
)
from fairesi.data.config import SPLITS, SimConfig, check_split
from fairesi.data.growth import candidate_table, deepsif_candidates
from fairesi.data.rng import (
    M32,
    STREAM_CENTRES,
    STREAM_NOISE,
    STREAM_PARAMS,
    draw_keys,
    sample_keys,
    standard_normal,
    uniform,
)

if TYPE_CHECKING:
    from fairesi.headmodel import HeadModel
    from fairesi.simulate import WaveformBank

__all__ = ["Synthesizer"]

# Half-width of the window around the spike peak in which the source-space SNR is
# measured, in seconds (DeepSIF: +-50 samples at 500 Hz).
_SNR_HALF_WINDOW_S = 0.1
# Give up on a sample after this many rejected centre draws (only reachable when the
# pool barely fits the patches; the constructor checks that a valid draw exists).
_MAX_CENTRE_ATTEMPTS = 256


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
        needed = config.modality.split("+")
        if not set(needed) <= set(head_model.lead_fields):
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
        #: Every simulated sensor (both modalities for 'eeg+meg').
        self.sensor_lead_field = head_model.lead_field(config.modality)
        self._n_sensors = self.sensor_lead_field.n_channels
        #: The network input's channels: the sensors, or the ``view``'s modality block.
        self.lead_field = head_model.lead_field(config.input_modality)
        self.n_regions = n_regions
        self.n_channels = self.lead_field.n_channels
        #: Channels per modality block (EEG first for 'eeg+meg'): each block gets its own
        #: input normalisation, and the source SNR weighs the blocks equally.
        self.channel_groups = self.sensor_lead_field.channel_groups
        first = 0 if config.view in (None, "eeg") else self.channel_groups[0]
        self._input_channels = slice(first, first + self.n_channels)
        self._snr_half_window = round(_SNR_HALF_WINDOW_S * float(bank.sfreq))

        hop = np.asarray(head_model.hop_distance).astype(np.int64)
        #: DeepSIF candidate tables by n_rings, shared with the mixture rows.
        self._candidate_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._build_patches(hop)
        self._build_pools(hop)

        dev = self.device
        gain = torch.as_tensor(np.asarray(self.sensor_lead_field.gain, dtype=np.float32))
        bg = torch.from_numpy(background)
        # Lead field times the whole background once: a sample then only corrects its
        # patch regions (see the module docstring).
        self._projected_background = (gain @ bg).T.contiguous().to(dev)  # (N_bg, C)
        self._background = bg.to(dev)  # (R, N_bg)
        self._gain_t = gain.T.contiguous().to(dev)  # (R, C)
        # Fused modalities: sensor powers of the source-SNR rule are summed per modality
        # after dividing each channel by its modality's mean background power, so that
        # neither modality's units dominate (None: one modality, plain sums).
        self._snr_channel_weight = None
        if len(self.channel_groups) > 1:
            power = self._projected_background.double().square().mean(0)  # (C,)
            weight = torch.cat(
                [
                    torch.full((n,), 1.0 / float(block.mean()), dtype=torch.float64)
                    for n, block in zip(
                        self.channel_groups,
                        power.split(list(self.channel_groups)),
                        strict=True,
                    )
                ]
            )
            self._snr_channel_weight = weight.float().to(dev)
        # Unit-peak spikes, as DeepSIF's ssig / max(ssig).
        self._spikes = torch.from_numpy(spikes / spikes.max(axis=1, keepdims=True)).to(dev)
        regions = np.asarray(bank.spike_regions, dtype=np.int64)
        order = np.argsort(regions, kind="stable")
        counts = np.bincount(regions, minlength=n_regions)[:n_regions]
        self._spike_order = torch.from_numpy(order)
        self._spike_counts = torch.from_numpy(counts)
        self._spike_offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        #: A mixture's row synthesizers (sharing this one's tensors), or None.
        self._rows: list[Synthesizer] | None = None
        if config.mixture:
            self._rows = [self._row(row, hop) for row in config.rows()]

    def _row(self, config: SimConfig, hop: np.ndarray) -> Synthesizer:
        """A synthesizer of one mixture row: a shallow copy (the bank and lead-field
        tensors shared) with the row's patch tables and centre pools."""
        row = copy.copy(self)
        row.config = config
        row._rows = None
        row._build_patches(hop)
        row._build_pools(hop)
        return row

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
        # Neighbourhood of the members of each region's patch (R, M, M): the random ring
        # growth keeps a region only next to a kept one.
        if self.config.patch_growth == "random":
            safe = np.where(valid, order, 0)
            self._patch_adjacent = torch.from_numpy(
                (hop[safe[:, :, None], safe[:, None, :]] == 1)
                & valid[:, :, None]
                & valid[:, None, :]
            )
        # DeepSIF's candidates as masks over the table (R, K, M) and their counts (R,).
        if self.config.patch_growth == "candidates":
            if n_rings not in self._candidate_cache:
                candidates = deepsif_candidates(
                    hop, np.asarray(self.head_model.region_centroids_mm), n_rings
                )
                member, count, _ = candidate_table(candidates, np.where(valid, order, -1))
                self._candidate_cache[n_rings] = (
                    torch.from_numpy(member),
                    torch.from_numpy(count),
                )
            self._candidates, self._candidate_count = self._candidate_cache[n_rings]
        # Patches neither overlap nor touch: centres >= 2 * n_rings + 2 hops apart
        # (negative hop = different connected component = far).
        self._min_centre_hops = 2 * n_rings + 2
        self._far = torch.from_numpy((hop < 0) | (hop >= self._min_centre_hops))

    def _build_pools(self, hop: np.ndarray) -> None:
        """Partition the regions into disjoint train/val/test centre pools (from the seed),
        or give every split all regions (``SimConfig.disjoint_centres=False``)."""
        if self.config.disjoint_centres:
            rng = np.random.default_rng([self.seed & M32, self.seed >> 32, 0x504F4F4C])
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
        check_split(split)
        return self.config.split_sizes()[split]

    def _check_index(self, split: str, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index)
        if index.ndim != 1 or index.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"index must be a 1-D integer tensor, got shape {tuple(index.shape)} dtype {index.dtype}"
            )
        index = index.to("cpu", torch.int64)
        if not index.numel():
            raise ValueError("index is empty: give at least one sample index")
        size = self.split_size(split)
        if index.min() < 0 or index.max() >= size:
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
        keys = sample_keys(self.seed, split, index, STREAM_CENTRES)[:, None]
        centres = torch.empty((index.numel(), n_sources), dtype=torch.int64)
        todo = torch.arange(index.numel())
        for attempt in range(_MAX_CENTRE_ATTEMPTS):
            counter = attempt * n_sources + torch.arange(n_sources)
            u = uniform(keys[todo], counter[None, :])  # (b, N_s)
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
        keys = draw_keys(self.seed, split, index, STREAM_PARAMS, draw)[:, None]
        u = uniform(keys, torch.arange(4 * n_s + 1)[None, :])
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
        member = self._patch_valid[centres]
        if cfg.patch_growth == "random":
            member = self._grow_partial_rings(keys, centres, 4 * n_s + 1)
        elif cfg.patch_growth == "candidates":
            member = self._pick_candidates(keys, centres, 4 * n_s + 1)
        weights = torch.exp2(-((ring / half_rings[..., None]) ** 2)) * member
        return {
            "centres": centres,
            "patch_regions": torch.where(member, self._patch_regions[centres], -1),
            "patch_weights": weights.float(),
            "source_snr_db": source_snr_db.float(),
            "spike_index": spike_index,
            "peak_sample": peak_sample,
            "background_start": background_start,
            "noise_keys": draw_keys(self.seed, split, index, STREAM_NOISE, draw),
        }

    def _pick_candidates(
        self, keys: torch.Tensor, centres: torch.Tensor, first_counter: int
    ) -> torch.Tensor:
        """Patch members (B, N_s, M) bool of ``patch_growth='candidates'``: each source
        takes one of its centre's DeepSIF candidates (:mod:`fairesi.data.growth`),
        uniformly, as DeepSIF's test samples do (``randi`` over the candidates)."""
        count = self._candidate_count[centres]  # (B, N_s)
        u = uniform(keys, first_counter + torch.arange(centres.shape[1])[None, :])
        pick = torch.minimum((u * count).long(), count - 1)
        return self._candidates[centres, pick]

    def _grow_partial_rings(
        self, keys: torch.Tensor, centres: torch.Tensor, first_counter: int
    ) -> torch.Tensor:
        """Patch members (B, N_s, M) bool of ``patch_growth='random'``: the centre and
        ring 1 whole, then ring by ring every region adjacent to a kept region of the
        previous ring is kept with probability 1/2, afresh for every sample."""
        valid = self._patch_valid[centres]  # (B, N_s, M)
        ring = self._patch_ring[centres]
        n_members = valid.shape[-1]
        counters = first_counter + torch.arange(centres.shape[1] * n_members)
        u = uniform(keys, counters[None, :]).reshape(valid.shape)
        kept = valid & (ring <= 1)
        adjacent = self._patch_adjacent[centres]  # (B, N_s, M, M)
        for k in range(2, self.config.n_rings + 1):
            reached = (adjacent & (kept & (ring == k - 1))[..., None, :]).any(-1)
            kept |= valid & (ring == k) & reached & (u < 0.5)
        return kept

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
        # A product and a sum rather than einsum's batched matmul, whose kernel (and so its
        # rounding) depends on the batch size: a sample must not depend on its batch.
        patch_gain = (
            gain_patch.reshape(n, n_s, -1, self._n_sensors) * p["patch_weights"][..., None]
        ).sum(2)  # (B, N_s, C)
        centred = waveform - waveform.mean(-1, keepdim=True)
        background_at = sensor_background.gather(
            2, snr_t.reshape(n, 1, -1).expand(-1, self._n_sensors, -1)
        ) - sensor_background.mean(-1, keepdim=True)  # (B, C, N_s * W)
        gain_power, background_power = patch_gain.square(), background_at.square()
        if self._snr_channel_weight is not None:
            gain_power = gain_power * self._snr_channel_weight
            background_power = background_power * self._snr_channel_weight[:, None]
        power_signal = gain_power.sum(-1) * (centred.gather(2, snr_t).square() * in_window).sum(-1)
        energy = background_power.sum(1).reshape(snr_t.shape)
        power_background = (energy * in_window).sum(-1)
        # Both powers are sums over the same window, so their ratio needs no window length.
        ratio = power_background / power_signal.clamp_min(torch.finfo(torch.float32).tiny)
        # In float64: the vectorised and the scalar float32 pow round differently, so a
        # sample's scale would depend on its position in the batch.
        gain = 10.0 ** (p["source_snr_db"].double() / 10.0)
        scale = torch.sqrt(gain * ratio.double()).float()

        sensor_clean = sensor_background.baddbmm_(
            (patch_gain * scale[..., None]).transpose(1, 2), waveform
        )
        # Noise std per channel: sqrt(mean_t y^2 * 10^(-snr/10)).
        # The paper's protocol: DeepSIF's half power (utils.py add_white_noise, line 73).
        half = 0.5 if cfg.protocol == "paper" else 1.0
        noise_std = torch.linalg.vector_norm(sensor_clean, dim=-1) * math.sqrt(
            half * 10.0 ** (-cfg.snr_db / 10.0) / n_t
        )  # (B, C)
        noise = standard_normal(noise_keys, self._n_sensors, n_t, dev).mul_(noise_std[..., None])

        # Activity of the patch regions (B, K, T) in mV; K = N_s * M, padding is zero.
        patch_activity = (
            (scale[..., None] * p["patch_weights"])[..., None] * waveform[:, :, None, :]
        ).reshape(n, -1, n_t)
        p["source_scale"] = scale.float()
        return _Composed(p, regions, patch_activity, sensor_clean, noise, noise_std, window)

    def normalised_input(self, y: torch.Tensor) -> torch.Tensor:
        """The network input of sensor data ``y`` (B, C_sensors, T): DeepSIF's input
        normalisation (:func:`~fairesi.data.batch.normalise_input`) of each modality block
        on its own, then the ``view``'s block if any; unitless (B, C, T)."""
        return normalise_blocks(y, self.channel_groups)[:, self._input_channels]

    def _target_and_mask(self, composed: _Composed) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised target (B, R, T) and source mask (B, R) bool."""
        target = scatter_regions(
            composed.regions, normalise_max(composed.patch_activity), self.n_regions
        )
        return target, region_mask(composed.regions, self.n_regions)

    def raw(self, split: str, index: torch.Tensor, draw: int = 0) -> RawBatch:
        """Un-normalised samples with every intermediate (for checks and storage).

        Parameters
        ----------
        split : {'train', 'val', 'test'}
        index : torch.Tensor (B,) int64
            Sample indices within the split.
        draw : int
            Realisation of the samples (see :meth:`batch`).

        Returns
        -------
        RawBatch
            ``sources`` (B, R, T) mV, ``sensor_clean`` and ``noise`` (B, C, T) in the lead
            field's units times mV, and the drawn parameters, on ``self.device``.
        """
        if self._rows is not None:
            raise ValueError(
                "a mixture configuration is drawn on the fly only (training); to store "
                "samples, write one dataset per row (SimConfig.rows())"
            )
        composed = self._compose(split, index, draw)
        activity = scatter_regions(composed.regions, composed.patch_activity, self.n_regions)
        mask = region_mask(composed.regions, self.n_regions)
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
            (B, N_s), on ``self.device``. Of a mixture, sample ``i`` comes from row
            ``i % len(mixture)`` and ``centres`` is padded with -1 to the largest N_s.
        """
        if self._rows is not None:
            return self._mixture_batch(split, index, draw)
        composed = self._compose(split, index, draw)
        target, mask = self._target_and_mask(composed)
        return Batch(
            x=self.normalised_input(composed.sensor_clean + composed.noise),
            target=target,
            source_mask=mask,
            centres=composed.params["centres"],
        )

    def _mixture_batch(self, split: str, index: torch.Tensor, draw: int) -> Batch:
        """:meth:`batch` of a mixture: each row's samples from its synthesizer, in order."""
        assert self._rows is not None
        index = self._check_index(split, index)
        which = torch.remainder(index, len(self._rows))
        parts = []
        for k, row in enumerate(self._rows):
            pick = torch.nonzero(which == k).flatten()
            if pick.numel():
                parts.append((pick, row.batch(split, index[pick], draw=draw)))
        n, n_s = index.numel(), max(row.config.n_sources for row in self._rows)
        first = parts[0][1]
        x = first.x.new_empty((n, *first.x.shape[1:]))
        target = first.target.new_empty((n, *first.target.shape[1:]))
        mask = first.source_mask.new_empty((n, *first.source_mask.shape[1:]))
        centres = first.centres.new_full((n, n_s), -1)
        for pick, part in parts:
            pick = pick.to(x.device)
            x[pick], target[pick], mask[pick] = part.x, part.target, part.source_mask
            centres[pick, : part.centres.shape[1]] = part.centres
        return Batch(x=x, target=target, source_mask=mask, centres=centres)


@dataclass
class _Composed:
    """Un-normalised pieces of a batch, on the synthesizer's device."""

    params: dict[str, torch.Tensor]  # the RawBatch parameter fields
    regions: torch.Tensor  # (B, K) int64 patch regions, -1 = padding
    patch_activity: torch.Tensor  # (B, K, T) float32, mV
    sensor_clean: torch.Tensor  # (B, C, T)
    noise: torch.Tensor  # (B, C, T)
    noise_std: torch.Tensor  # (B, C) the noise's standard deviation per channel
    window: torch.Tensor  # (B, T) int64 background samples
