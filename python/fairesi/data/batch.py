"""What a batch is: the :class:`Batch` and :class:`RawBatch` containers, the DeepSIF
normalisation, and the scatter of sparse patch-region values into dense per-region
tensors (shared by the synthesizer and the HDF5 reader, so both build the target the same
way).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Batch",
    "RawBatch",
    "normalise_blocks",
    "normalise_input",
    "normalise_max",
    "region_mask",
    "scatter_regions",
    "stack_modalities",
]


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


def stack_modalities(eeg: torch.Tensor, meg: torch.Tensor) -> torch.Tensor:
    """One fused input from EEG and MEG data of the same epochs, EEG channels first.

    Parameters
    ----------
    eeg : torch.Tensor (B, C_eeg, T)
    meg : torch.Tensor (B, C_meg, T)
        Same batch size and number of time samples.

    Returns
    -------
    torch.Tensor (B, C_eeg + C_meg, T)
        The layout of the 'eeg+meg' modality (normalise each block with
        :func:`normalise_input` first, as the synthesizer does).
    """
    if eeg.dim() != 3 or meg.dim() != 3:
        raise ValueError(
            f"EEG and MEG data must be (batch, channels, times), got {tuple(eeg.shape)} and "
            f"{tuple(meg.shape)}"
        )
    if eeg.shape[2] != meg.shape[2]:
        raise ValueError(
            f"EEG and MEG must cover the same time samples: EEG has {eeg.shape[2]}, MEG "
            f"{meg.shape[2]}"
        )
    if eeg.shape[0] != meg.shape[0]:
        raise ValueError(f"EEG has {eeg.shape[0]} epochs and MEG {meg.shape[0]}; pair them")
    return torch.cat([eeg, meg], dim=1)


def normalise_blocks(y: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """:func:`normalise_input` of each block of channels on its own (B, C, T) -> (B, C, T).

    Parameters
    ----------
    y : torch.Tensor (B, C, T) float
        Sensor data whose channels are consecutive blocks (e.g. EEG then MEG).
    groups : sequence of int
        Channels per block, adding up to C; one block is plain :func:`normalise_input`.
    """
    if len(groups) == 1:
        return normalise_input(y)
    return torch.cat([normalise_input(block) for block in y.split(list(groups), dim=1)], dim=1)


def normalise_input(y: torch.Tensor) -> torch.Tensor:
    """DeepSIF input normalisation of sensor data.

    Removes each channel's time mean, then each time point's channel mean, then divides
    by the sample's maximum absolute value.

    Parameters
    ----------
    y : torch.Tensor (B, C, T) float
        Sensor data, in any unit.

    Returns
    -------
    torch.Tensor (B, C, T)
        Unitless, max |value| = 1 per sample (0 for an all-constant sample).
    """
    time_mean = y.mean(dim=2, keepdim=True)  # (B, C, 1)
    # Channel mean of (y - time_mean), without materialising the difference first.
    channel_mean = y.mean(dim=1, keepdim=True) - time_mean.mean(dim=1, keepdim=True)
    return normalise_max(torch.sub(y, time_mean).sub_(channel_mean), inplace=True)


def normalise_max(a: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``a`` divided by its maximum absolute value per sample (first axis).

    Parameters
    ----------
    a : torch.Tensor (B, ...) float
        Any unit.
    inplace : bool
        Divide ``a`` itself.

    Returns
    -------
    torch.Tensor (B, ...)
        Unitless, max |value| = 1 per sample (an all-zero sample stays zero).
    """
    dims = tuple(range(1, a.ndim))
    peak = torch.linalg.vector_norm(a, ord=math.inf, dim=dims, keepdim=True)
    peak = peak.clamp_min(torch.finfo(a.dtype).tiny)
    return a.div_(peak) if inplace else a / peak


def scatter_regions(
    region_index: torch.Tensor, values: torch.Tensor, n_regions: int
) -> torch.Tensor:
    """Scatter per-patch-region values into a zero-filled dense per-region tensor.

    Padding entries (region -1) must carry zeros: they are added (not written) onto
    region 0, which is harmless because patches never overlap, so each real region
    receives exactly one value.

    Parameters
    ----------
    region_index : torch.Tensor (B, K) int64
        Region of each patch entry, -1 for padding (K = N_s * M patch slots).
    values : torch.Tensor (B, K, ...)
        Value of each entry (e.g. (B, K, T) activity in mV or normalised), on the same
        device as ``region_index``.
    n_regions : int
        R.

    Returns
    -------
    torch.Tensor (B, R, ...)
        ``values``' dtype, device and unit; zero outside the patches.
    """
    n = values.shape[0]
    index = region_index.clamp(min=0)
    index = index.reshape(*index.shape, *([1] * (values.ndim - 2))).expand_as(values)
    out = torch.zeros((n, n_regions, *values.shape[2:]), dtype=values.dtype, device=values.device)
    return out.scatter_add_(1, index, values)


def region_mask(region_index: torch.Tensor, n_regions: int) -> torch.Tensor:
    """Which regions belong to a patch.

    Parameters
    ----------
    region_index : torch.Tensor (B, K) int64
        Region of each patch entry, -1 for padding.
    n_regions : int
        R.

    Returns
    -------
    torch.Tensor (B, R) bool
    """
    return scatter_regions(region_index, (region_index >= 0).int(), n_regions) > 0
