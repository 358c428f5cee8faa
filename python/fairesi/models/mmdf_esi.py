"""MMDF-ESI: EEG and MEG fused early through squeeze-and-excitation (Jiao et al., Brain
Informatics 2023, "Multi-modal deep fusion for EEG/MEG source imaging").

The network reads like the abstract's Fig. 1, one module per box, applied to every time
sample (like ConvDip, the authors' model maps one time instant to one source vector)::

    x (B, C_eeg + C_meg, T) -> per time sample, split by modality
      -> ModalityEncoder per modality  (N, F, G, G)     scalp image (N = B*T), dilated
                                                         conv, ReLU, max-pool
      -> concatenate                   (N, 2F, G, G)    EEG maps, then MEG maps
      -> SqueezeExcitation             (N, 2F, G, G)    one learnt weight per map
      -> decoder MLP                   (N, R)
    -> (B, R, T)

Our reading of what the abstract leaves open, after the authors' public code
(BAGL-lab/ESI-Deep-Learning, ``MMDF_ESI_functions.py`` at commit 7e73f3f; it has no
licence, so nothing is copied):

* **Scalp images.** The authors place each sensor in a cell of a hand-made lookup table
  and zero-pad the EEG image to the MEG image's size. We interpolate every modality's
  sensors onto a common ``G x G`` grid (:func:`~fairesi.models.convdip.
  sensor_grid_interpolation`, ConvDip's topographic maps), so the two maps align pixel by
  pixel and any montage works; Neuromag's magnetometers and gradiometers at one position
  are separate image layers.
* **Encoders.** As the authors': per modality one 3x3 convolution with dilation 2 and
  ``F`` filters (8), ReLU, and a 3x3 max-pool with stride 1. We pad the convolution to
  keep the grid size ("same"), where the authors' padding of 1 shrinks it by 2 pixels.
* **Squeeze-and-excitation** over the ``2F`` concatenated maps: squeeze = mean over the
  pixels of each map, excitation = Linear(2F, 2F / r), ReLU, Linear(2F / r, 2F),
  sigmoid, with reduction ``r = 2`` (the authors' 16 -> 8 -> 16); every map is multiplied
  by its weight, so the network learns how much each modality's features count.
* **Decoder.** Flatten, Linear(2F G G, H), ReLU, Linear(H, R) with ``H = 500`` (the
  authors'); linear output, as our targets are signed.
* **Initialisation** (ours; the authors keep PyTorch's defaults). The encoders'
  convolution biases and the decoder's output layer start at zero, so the network starts
  at the all-zero estimate and its feature maps carry the data, not a constant. With
  PyTorch's defaults a 3x3 convolution draws biases of up to ``1/3`` (EEG's one image
  layer; 0.19 for Neuromag's three), several times the normalised input's typical value
  at one time sample (~0.06), so every feature map is nearly the same constant for every
  input; the decoder's first steps then move all hidden units' pre-activations together,
  and with the random output's error to shed (~4x the all-zero estimate's) they all go
  below zero. Measured with ``bench/mmdf_init_check.py`` on SimEEGMEG ('cpu' preset, 16
  windows x 32 instants per step, Adam): with the defaults every hidden unit was dead
  after 25 steps at lr 1e-3 (76% at 1e-4) and the network stayed at the all-zero
  estimate; with ours 49% of the units stayed alive at 1e-3 (96% at 1e-4) and the loss
  fell (``bench/RESULTS.md`` § fusion).
* **Training.** The network maps every time sample on its own, so it may learn from a few
  random samples of each window per step (``fairesi train --train-instants K``, used by
  ``bench/fusion_train.sh`` with K = 32): a step then costs K / T of a whole-window step.
* **Inputs.** One tensor of ``C_eeg + C_meg`` channels, EEG first (the ``'eeg+meg'`` lead
  field's order); each modality block normalised on its own (the data pipeline does it).
* **One modality** (ours, not in the paper; ``build_model("mmdf_esi", head, "eeg")`` or
  ``fairesi train --model mmdf_esi --dataset SimEEGMEG --view eeg``): the same network with
  that modality's encoder only, its ``F`` maps weighted by the same squeeze-and-excitation
  (attention within the modality, no fusion). It is the fused network's single-modality
  ablation, which separates what fusion adds from what the architecture adds. Its grid
  size defaults to the fused network's on the same head model (when that has both
  modalities), so its encoder has the fused network's encoder's shape; a head model with
  one modality gets ConvDip's density for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from fairesi._validate import check_int, check_positive_int
from fairesi.models.base import SourceModel
from fairesi.models.config import PresetConfig
from fairesi.models.convdip import SensorGrid, sensor_grid_interpolation
from fairesi.models.fusion import SqueezeExcitation

__all__ = ["MmdfEsi", "MmdfEsiConfig", "ModalityEncoder"]


@dataclass(frozen=True)
class MmdfEsiConfig(PresetConfig):
    """Hyper-parameters of :class:`MmdfEsi`.

    Attributes
    ----------
    n_channels, n_regions, n_times : int
        Sensors C = C_eeg + C_meg, source regions R, samples per window T (the network
        works per sample; T sizes nothing).
    grid_size : int | None
        Side G of every modality's scalp images; None: ConvDip's density for the modality
        with more sensor positions (of the head model's two, for a single-modality
        network: :meth:`MmdfEsi.from_head_model`).
    conv_filters : int
        F, filters of each modality's encoder (authors: 8).
    reduction : int
        Squeeze-and-excitation reduction ratio r (authors: 2).
    fc_hidden : int
        H, hidden units of the decoder (authors: 500).
    """

    n_channels: int
    n_regions: int
    n_times: int
    grid_size: int | None = None
    conv_filters: int = 8
    reduction: int = 2
    fc_hidden: int = 256

    MODEL_LABEL: ClassVar[str] = "MMDF-ESI"
    PER_INSTANT: ClassVar[bool] = True
    #: 'paper' is the authors' size; 'cpu' halves the decoder (it runs on every time
    #: sample and dominates the cost); 'tiny' for tests.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(conv_filters=4, fc_hidden=32),
        "cpu": dict(conv_filters=8, fc_hidden=256),
        "paper": dict(conv_filters=8, fc_hidden=500),
    }

    def __post_init__(self) -> None:
        for name in ("n_channels", "n_regions", "n_times", "conv_filters", "fc_hidden"):
            check_positive_int(f"MmdfEsiConfig.{name}", getattr(self, name))
        check_positive_int("MmdfEsiConfig.reduction", self.reduction)
        check_int("MmdfEsiConfig.grid_size", self.grid_size, minimum=3, allow_none=True)
        if 2 * self.conv_filters < self.reduction:
            raise ValueError(
                f"MmdfEsiConfig.reduction ({self.reduction}) must be <= 2 * conv_filters "
                f"({2 * self.conv_filters})"
            )


class ModalityEncoder(nn.Module):
    """One modality's sensor values to feature maps: (N, C_m) -> (N, F, G, G).

    Its fixed scalp-image interpolation (:class:`~fairesi.models.convdip.SensorGrid`),
    then a 3x3 convolution with dilation 2 ('same' padding), ReLU, and a 3x3 max-pool with
    stride 1.

    Parameters
    ----------
    interpolation : np.ndarray, shape (L * G * G, C_m)
        From :func:`~fairesi.models.convdip.sensor_grid_interpolation`.
    n_layers, grid_size : int
        L and G of that matrix.
    n_filters : int
        F.
    """

    def __init__(
        self, interpolation: np.ndarray, n_layers: int, grid_size: int, n_filters: int
    ) -> None:
        super().__init__()
        matrix = torch.as_tensor(interpolation, dtype=torch.float32)
        self.n_channels = int(matrix.shape[1])
        self.grid = SensorGrid(matrix, n_layers, grid_size)
        self.conv = nn.Conv2d(n_layers, n_filters, 3, dilation=2, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, values: Tensor) -> Tensor:
        """(N, C_m) -> (N, F, G, G)."""
        return self.pool(torch.relu(self.conv(self.grid(values))))


class MmdfEsi(SourceModel):
    """MMDF-ESI: per-modality encoders, early squeeze-and-excitation fusion, MLP decoder.

    Parameters
    ----------
    config : MmdfEsiConfig
        Sizes.
    grids : list of (np.ndarray, int)
        Per modality, EEG first (two: EEG and MEG, fused; one: that modality alone, the
        module docstring's single-modality ablation): the interpolation matrix
        (L_m * G * G, C_m) of :func:`~fairesi.models.convdip.sensor_grid_interpolation`
        and its layer count L_m.
    grid_size : int
        G, shared by the modalities.
    """

    config_class = MmdfEsiConfig

    def __init__(
        self, config: MmdfEsiConfig, grids: list[tuple[np.ndarray, int]], grid_size: int
    ) -> None:
        super().__init__(config)
        if len(grids) not in (1, 2):
            raise ValueError(f"MMDF-ESI takes one or two modalities (EEG, MEG), got {len(grids)}")
        groups = [int(matrix.shape[1]) for matrix, _ in grids]
        if sum(groups) != config.n_channels:
            raise ValueError(
                f"the modalities' {groups} channels do not add up to n_channels {config.n_channels}"
            )
        self.n_regions = config.n_regions
        self.groups = groups
        self.encoders = nn.ModuleList(
            [
                ModalityEncoder(matrix, n_layers, grid_size, config.conv_filters)
                for matrix, n_layers in grids
            ]
        )
        n_maps = len(grids) * config.conv_filters
        self.fusion = SqueezeExcitation(n_maps, config.reduction)
        self.hidden = nn.Linear(n_maps * grid_size * grid_size, config.fc_hidden)
        self.output = nn.Linear(config.fc_hidden, config.n_regions)
        # Start at the all-zero estimate, with feature maps free of a constant offset (the
        # module docstring says why: with PyTorch's defaults every hidden unit dies).
        for encoder in self.encoders:
            nn.init.zeros_(encoder.conv.bias)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @property
    def channel_groups(self) -> list[int]:
        """Channels per modality, in input order (EEG, MEG; one entry for one modality)."""
        return [int(encoder.n_channels) for encoder in self.encoders]

    @classmethod
    def from_head_model(
        cls,
        head_model: Any,
        modality: str,
        n_times: int,
        preset: str = "cpu",
        **overrides: Any,
    ) -> MmdfEsi:
        """Build MMDF-ESI for a head model's ``'eeg+meg'`` lead field, or for one modality
        (the fusion ablation; :meth:`SourceModel.from_head_model` for the parameters).

        On one modality, a ``grid_size`` left unset becomes the fused network's on the same
        head model (when it has both modalities), so the two networks' encoders match.
        """
        from fairesi.headmodel import FUSED_MODALITY

        preset_grid = cls.config_class.PRESETS.get(preset, {}).get("grid_size")
        grid_size = overrides.get("grid_size", preset_grid)
        if modality != FUSED_MODALITY and grid_size is None:
            if {"eeg", "meg"} <= set(head_model.lead_fields):
                overrides["grid_size"] = _grid_side(head_model.lead_field(FUSED_MODALITY))
        return super().from_head_model(head_model, modality, n_times, preset, **overrides)

    @classmethod
    def _from_config(cls, config: MmdfEsiConfig, lead_field: Any) -> MmdfEsi:
        """The network for a lead field: one grid per modality block (two for 'eeg+meg',
        one for 'eeg' or 'meg', the single-modality ablation)."""
        groups = lead_field.channel_groups
        bounds = np.cumsum([0, *groups])
        blocks = [slice(int(bounds[k]), int(bounds[k + 1])) for k in range(len(groups))]
        positions = np.asarray(lead_field.ch_positions_m)
        types = list(lead_field.ch_types)
        grid_size = _grid_side(lead_field) if config.grid_size is None else config.grid_size
        grids = []
        for b in blocks:
            matrix, n_layers, _ = sensor_grid_interpolation(positions[b], types[b], grid_size)
            grids.append((matrix, n_layers))
        return cls(config, grids, grid_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_eeg + C_meg, T) sensor data, EEG first (or one modality's (B, C, T)) ->
        (B, R, T) source activity."""
        self.check_modalities(x, self.groups)
        self.check_input(x)
        n_batch, n_times = x.shape[0], x.shape[2]
        values = x.transpose(1, 2).reshape(n_batch * n_times, self.n_channels)  # (N, C)
        features = []
        start = 0
        for encoder in self.encoders:
            stop = start + encoder.n_channels
            features.append(encoder(values[:, start:stop]))  # (N, F, G, G)
            start = stop
        fused = self.fusion(torch.cat(features, dim=1))  # (N, M F, G, G), M modalities
        sources = self.output(torch.relu(self.hidden(fused.flatten(1))))  # (N, R)
        return sources.reshape(n_batch, n_times, self.n_regions).transpose(1, 2)


def _grid_side(lead_field: Any) -> int:
    """ConvDip's grid side for the denser of a lead field's modality blocks."""
    bounds = np.cumsum([0, *lead_field.channel_groups])
    positions = np.asarray(lead_field.ch_positions_m)
    types = list(lead_field.ch_types)
    return max(
        sensor_grid_interpolation(positions[a:b], types[a:b])[2]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )
