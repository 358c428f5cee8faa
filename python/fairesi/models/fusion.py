"""EEG + MEG early fusion by squeeze-and-excitation, and FAIR-ESI with it.

:class:`SqueezeExcitation` weighs feature channels by a learnt function of their means (the
fusion module of MMDF-ESI, :mod:`fairesi.models.mmdf_esi`). :class:`FairEsiFusion` puts the
same fusion inside FAIR-ESI, beyond both papers::

    x (B, C_eeg + C_meg, T), EEG first
      -> per modality m: Patching, refinement, N x PatchwiseRefinement   (B, C_m, Np, L)
                         LatentSum: TransposeConv(P^O*) + MLP(X_m) + X_m   (B, T, W)
      -> concatenate                                                      (B, T, 2W)
      -> SqueezeExcitation over the 2W features (squeeze: mean over time) (B, T, 2W)
      -> Linear 2W -> W, BiGRU, linear head                               (B, R, T)

Each modality keeps its own patch-wise blocks and Eq. 5 terms (its sensors, units and
noise differ), so the refinement, the key-patch attention and the conv blocks see one
modality's channels; the fused latent features then share one BiGRU decoder, as MMDF-ESI
shares its decoder. ``build_model("fair_esi", head, "eeg+meg", ...)`` builds it; it takes
every :class:`~fairesi.models.fair_esi.FairEsiConfig` field.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fairesi.models.base import SourceModel
from fairesi.models.fair_esi import (
    FairEsiConfig,
    LatentSum,
    Patching,
    patchwise_blocks,
    refinement_of,
)

__all__ = ["FairEsiFusion", "SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation over feature channels: (N, K, ...) -> (N, K, ...).

    ``w = sigmoid(W2 relu(W1 s))`` with ``s`` the mean of every channel over its trailing
    dimensions (pixels, or time samples) and K -> K / r -> K linear maps; the output is
    every channel times its weight, so the network learns how much each modality's
    features count.

    Parameters
    ----------
    n_channels : int
        K, the concatenated feature channels of all modalities.
    reduction : int
        r (MMDF-ESI: 2).
    """

    def __init__(self, n_channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, n_channels // reduction)
        self.squeeze_to_hidden = nn.Linear(n_channels, hidden)
        self.hidden_to_weights = nn.Linear(hidden, n_channels)

    def weights(self, features: Tensor) -> Tensor:
        """(N, K, ...) -> the excitation weights (N, K), in (0, 1)."""
        squeezed = features.flatten(2).mean(-1)  # (N, K)
        return torch.sigmoid(self.hidden_to_weights(torch.relu(self.squeeze_to_hidden(squeezed))))

    def forward(self, features: Tensor) -> Tensor:
        """(N, K, ...) -> (N, K, ...), every channel scaled by its weight."""
        weights = self.weights(features)
        return features * weights.reshape(list(weights.shape) + [1] * (features.dim() - 2))


class FusionBranch(nn.Module):
    """One modality inside :class:`FairEsiFusion`: its patch-wise blocks and Eq. 5 terms.

    (B, C_m, Np, L) refined patches, (B, C_m, T) input and (B, C_m, Np, L) input patches
    -> (B, T, W).
    """

    def __init__(self, config: FairEsiConfig, n_channels: int) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.key_from_input = config.key_energy == "input"
        self.blocks = patchwise_blocks(config, n_channels)
        latent = config.latent_width
        self.front = LatentSum(
            n_channels,
            config.patch_len,
            config.stride,
            config.recon_features,
            latent,
            latent if config.mlp_hidden is None else config.mlp_hidden,
        )

    def forward(self, refined: Tensor, x: Tensor, patches: Tensor) -> Tensor:
        """(B, C_m, Np, L) refined and (B, C_m, T) input, (B, C_m, Np, L) input patches
        -> (B, T, W)."""
        energy_of: Tensor | None = None
        if self.key_from_input:
            energy_of = patches
        for block in self.blocks:
            refined = block(refined, energy_of)  # P^O*: (B, C_m, Np, L)
        return self.front(refined, x)


class FairEsiFusion(SourceModel):
    """FAIR-ESI on EEG + MEG with squeeze-and-excitation early fusion (see module doc).

    Parameters
    ----------
    config : FairEsiConfig
        Sizes and switches; ``n_channels`` = C_eeg + C_meg.
    channel_groups : list of int
        Channels per modality, in input order (EEG, MEG).
    reduction : int
        Squeeze-and-excitation reduction ratio (MMDF-ESI's 2).
    """

    config_class = FairEsiConfig

    def __init__(self, config: FairEsiConfig, channel_groups: list[int], reduction: int = 2):
        super().__init__(config)
        if len(channel_groups) < 2 or sum(channel_groups) != config.n_channels:
            raise ValueError(
                f"FAIR-ESI fusion needs two or more modality blocks adding up to "
                f"n_channels {config.n_channels}, got {channel_groups}"
            )
        self.groups = [int(n) for n in channel_groups]
        self.patching = Patching(config.patch_len, config.stride)
        self.refine, self.refine_residual = refinement_of(config)
        self.branches = nn.ModuleList([FusionBranch(config, n) for n in channel_groups])
        latent = config.latent_width
        gru_hidden = latent if config.gru_hidden is None else config.gru_hidden
        self.fusion = SqueezeExcitation(len(channel_groups) * latent, reduction)
        self.merge = nn.Linear(len(channel_groups) * latent, latent)
        self.gru = nn.GRU(
            latent, gru_hidden, num_layers=config.gru_layers, batch_first=True, bidirectional=True
        )
        self.head = nn.Linear(2 * gru_hidden, config.n_regions)

    @classmethod
    def _from_config(cls, config: FairEsiConfig, lead_field: Any) -> FairEsiFusion:
        """The network for a fused lead field: one branch per modality block."""
        return cls(config, list(lead_field.channel_groups))

    @property
    def channel_groups(self) -> list[int]:
        """Channels per modality, in input order."""
        return [int(branch.n_channels) for branch in self.branches]

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_eeg + C_meg, T) sensor data, EEG first -> (B, R, T) source activity."""
        self.check_modalities(x, self.groups)
        self.check_input(x)
        patches = self.patching(x)  # (B, C, Np, L)
        latents = []
        start = 0
        for branch in self.branches:
            stop = start + branch.n_channels
            own = patches[:, start:stop]
            refined = self.refine(own)  # P^L of this modality's patches
            if self.refine_residual:
                refined = refined + own
            latents.append(branch(refined, x[:, start:stop], own))  # (B, T, W)
            start = stop
        fused = self.fusion(torch.cat(latents, dim=-1).transpose(1, 2)).transpose(1, 2)
        hidden, _ = self.gru(self.merge(fused))  # (B, T, 2H)
        return self.head(hidden).transpose(1, 2)  # (B, R, T)
