"""FAIR-ESI: Feature Adaptive Importance Refinement for source imaging (paper section II.C).

The network reads like the paper's Fig. 2, one module per box, in this order::

    x (B, C, T)
      -> Patching                      (B, C, Np, L)   overlapping patches, L=16, stride 8
      -> spectral-temporal refinement  (B, C, Np, L)   make_refine(tau, alpha), Fig. 2(b)
      -> N x PatchwiseRefinement       (B, C, Np, L)   key patch + attention + conv blocks, 2(c)
      -> SourceReconstruction          (B, R, T)       transpose conv + MLP(X) + X -> BiGRU, 2(d)

Interpretations of what the paper leaves open (docs/design.md has the rest):

* **Patching** pads the end of every channel with zeros so that the last patch reaches the
  last sample: ``Np = ceil(max(T - L, 0) / S) + 1`` (62 patches for T = 500), so every
  sample is seen by at least one patch.
* **alpha = 0.5** by default. The paper does not report its value; 0.5 weighs the spectral
  view (which the paper says over-smooths) and the temporal view (which keeps the detail)
  equally, so neither view's failure mode dominates, and the ablation endpoints (alpha = 1:
  spectral only, alpha = 0: temporal only, paper Table IV) stay one switch away. With both
  views switched off the refinement is the identity (the raw patches go on).
* **Patch-wise refinement**: the patch features ``P^F`` are a linear embedding (L -> d) of
  the block's input patches; ``Q, K, V`` are linear maps (L -> d) of each channel's key patch
  (the patch with the largest energy, sum of squares, of the unrefined input patches P;
  the paper's Eq. 2 takes the energy of the block's input P^L, ``key_energy='refined'``,
  but the refinement's softmaxes reorder the energies); attention runs across channels, its
  (B, C, d) result is broadcast over the Np patches and concatenated with ``P^F`` (Eq. 4).
  The conv blocks run on the (channel, patch) grid with the features as conv channels;
  LayerNorm normalises the features of every grid position, so no size is hard-coded. With
  the patch-wise view switched off, the attention branch is dropped and the conv blocks
  run on ``P^F`` alone. Every block maps (B, C, Np, L) to (B, C, Np, L), so N blocks stack.
* **Reconstruction** (Eq. 5, ``BiGRU(TransposeConv(P^O*) + MLP(X) + X)``): the three terms
  are summed in a space of ``latent`` features per time sample. ``latent = n_regions``
  (the ``'paper'`` preset) is the paper's region space; a smaller ``latent`` (the ``'cpu'``
  preset) keeps the BiGRU affordable on a CPU. The transpose conv is separable: a
  ConvTranspose1d with kernel L and stride S along the patch axis (the transposed layout of
  the patching, so it restores the T samples by overlap-add), then a linear map of the channels
  to the latent space. "+ X" needs X in that space, so it is a bias-free linear map of the
  channels (the "linear residual of X"). A linear head maps the BiGRU's two directions to
  the regions. The output layout is **(B, n_regions, T)**, like ``mne.SourceEstimate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairesi._validate import check_option, check_positive, check_positive_int, check_range
from fairesi.models.base import SourceModel
from fairesi.models.config import PresetConfig
from fairesi.ops import (
    REFINE_AXES,
    REFINE_FORMS,
    bigru,
    fused_gru_applies,
    make_refine,
    use_fused_gru,
)

__all__ = [
    "FairEsi",
    "FairEsiConfig",
    "KeyPatchAttention",
    "LatentSum",
    "Patching",
    "PatchwiseRefinement",
    "SourceReconstruction",
    "n_patches",
    "patchwise_blocks",
    "key_patch_index",
    "refinement_of",
    "select_key_patches",
]


def n_patches(n_times: int, patch_len: int, stride: int) -> int:
    """Number of patches per channel when the end is padded to cover every sample.

    Parameters
    ----------
    n_times : int
        Samples per channel, >= 1.
    patch_len, stride : int
        Patch length and hop in samples (FAIR-ESI: 16 and 8).

    Returns
    -------
    int
        ``ceil(max(n_times - patch_len, 0) / stride) + 1``.
    """
    return (max(n_times - patch_len, 0) + stride - 1) // stride + 1


@dataclass(frozen=True)
class FairEsiConfig(PresetConfig):
    """Sizes and switches of a :class:`FairEsi` network.

    Parameters
    ----------
    n_channels, n_regions, n_times : int
        Sensor channels C, source regions R and samples T of the data the network is built
        for (T is recorded for export; the network itself accepts any T).
    patch_len, stride : int
        Patch length L and hop S in samples (paper: 16 and 8).
    tau : float
        Softmax temperature of the refinement (paper: 0.1).
    alpha : float
        Weight of the spectral view when both views are on (default 0.5, see module doc).
    spectral, temporal, patchwise : bool
        Ablation switches of paper Table IV.
    fused_refine : bool | None
        Passed to :func:`fairesi.ops.make_refine` (None: fused op if loaded).
    fused_gru : bool | None
        Run the BiGRU on the CPU with the fused op :func:`fairesi.ops.bigru` (same
        parameters and function as ``nn.GRU``; a training step of the layer ~1.4x faster
        than ``nn.GRU``'s in float32, ~2x under bfloat16 autocast, ``bench/step_cost.py``;
        ``docs/design.md`` § fused BiGRU). None (default): when its
        library is loaded; True: require it; False: always ``nn.GRU``. TorchScript,
        tracing, ``torch.compile`` and CUDA inputs always run ``nn.GRU``.
    refine_residual : bool
        Add the input patches to the refined ones, ``P^L + P``, so that the refinement
        reweights rather than replaces the patches (their softmaxes discard the amplitude).
        Not in the paper's text; **on by default** since the refinement study
        (docs/design.md § refinement readings, bench/RESULTS.md § refinement readings).
        False gives the paper read literally. Checkpoints record it, so older ones (written
        when the default was False) rebuild as they were trained.
    refine_form : str
        ``'softmax'`` (the softmax replaces the features; literal) or ``'weights'`` (the
        softmax, times its length, weights them), see :mod:`fairesi.ops.refine`.
    refine_axis : str
        What the refinement softmax runs over: ``'samples'`` (within a patch; literal),
        ``'patches'`` (across a channel's patches) or ``'channels'`` (across channels).
    key_energy : str
        Whose energy picks each channel's key patch: ``'input'`` (the input patches ``P``
        before the spectral-temporal refinement, the same index for every block; the
        attention still reads the refined key patch; **the default** since the refinement
        study) or ``'refined'`` (the block's input ``P^L``, the paper's ``E = P^L ⊙ P^L``
        read literally). The refinement's softmaxes reorder patch energies: with the
        literal reading the refined key patch is the raw one for ~6% of a SimMEG sample's
        strongest channels (chance: 1 / Np), with the residual ~79%; choosing on ``P``
        gained precision +2.3 ± 0.4 points and LE -0.49 ± 0.10 mm (strict protocol) over
        choosing on ``P^L + P`` (docs/design.md § refinement readings). Checkpoints
        record it; those written before it existed rebuild with ``'refined'``.
    norm : str
        LayerNorm of the conv blocks: ``'position'`` (the features of every grid position)
        or ``'all'`` (a sample's features and grid together).
    conv_layout : str
        ``'grid'`` (features as conv channels, the kernel slides over sensors x patches) or
        ``'sensors'`` (sensors as conv channels, the kernel slides over patches x features).
    embed_dim : int
        d, the width of patch features and of the attention.
    conv_channels : int
        Feature channels between Conv2D and TransposeConv2D in a block.
    conv_kernel : int
        Odd kernel size of both 2-D convolutions over the (channel, patch) grid.
    n_blocks : int
        N, the number of patch-wise refinement blocks (paper: 1).
    recon_features : int
        Features per channel after the transpose conv that restores the T samples.
    latent : int | None
        Width of the space where Eq. 5 sums its three terms; None means ``n_regions``.
    mlp_hidden : int | None
        Hidden width of MLP(X); None means ``latent``.
    gru_hidden : int | None
        Hidden width of each BiGRU direction; None means ``latent``.
    gru_layers : int
        Stacked BiGRU layers.
    """

    n_channels: int
    n_regions: int
    n_times: int
    patch_len: int = 16
    stride: int = 8
    tau: float = 0.1
    alpha: float = 0.5
    spectral: bool = True
    temporal: bool = True
    patchwise: bool = True
    refine_residual: bool = True
    refine_form: str = "softmax"
    refine_axis: str = "samples"
    key_energy: str = "input"
    norm: str = "position"
    conv_layout: str = "grid"
    fused_refine: bool | None = None
    fused_gru: bool | None = None
    embed_dim: int = 8
    conv_channels: int = 8
    conv_kernel: int = 3
    n_blocks: int = 1
    recon_features: int = 2
    latent: int | None = 128
    mlp_hidden: int | None = 128
    gru_hidden: int | None = 128
    gru_layers: int = 1

    #: Size presets (the field defaults are the 'cpu' preset). 'tiny' trains in about a
    #: minute on 2 CPU cores (tests, demo). 'cpu' fits a ~60-minute 2-core training of
    #: SimMEG (306 ch, 994 regions, 500 samples): about 14 samples per CPU-second on one
    #: core for a training step. Its output is of rank <= 2 * gru_hidden = 256 over the
    #: regions (a linear head of the BiGRU's features), and that caps its maps: the true
    #: sources of SimMEG 5/1/2 projected onto the best 256-dimensional subspace score about
    #: 80% precision and 1.8 mm LE under the paper protocol, 384 dimensions 89% and 0.9 mm,
    #: 512 dimensions 95% (``bench/rank_probe.py``, bench/RESULTS.md § accuracy), so
    #: ``gru_hidden >= 192`` is needed for the paper's Table II row. 'wide' is 'cpu' with
    #: ``gru_hidden=256`` (rank 512, 1.28 M parameters on SimMEG, ~1.7x the 'cpu' step
    #: time on one thread, ``bench/step_cost.py``): a CPU size whose cap (95%) clears the
    #: paper's row. 'paper' sums Eq. 5 in region space with a region-wide BiGRU (full
    #: rank); the paper gives no widths, these follow DeepSIF's sizes.
    MODEL_LABEL: ClassVar[str] = "FAIR-ESI"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(
            embed_dim=8,
            conv_channels=8,
            recon_features=2,
            latent=32,
            mlp_hidden=32,
            gru_hidden=16,
        ),
        "cpu": dict(
            embed_dim=8,
            conv_channels=8,
            recon_features=2,
            latent=128,
            mlp_hidden=128,
            gru_hidden=128,
        ),
        "paper": dict(
            embed_dim=64,
            conv_channels=64,
            recon_features=4,
            latent=None,
            mlp_hidden=None,
            gru_hidden=None,
        ),
    }
    PRESETS["wide"] = {**PRESETS["cpu"], "gru_hidden": 256}

    def __post_init__(self) -> None:
        for name in (
            "n_channels",
            "n_regions",
            "n_times",
            "patch_len",
            "stride",
            "embed_dim",
            "conv_channels",
            "n_blocks",
            "recon_features",
            "gru_layers",
        ):
            check_positive_int(f"FairEsiConfig.{name}", getattr(self, name))
        check_positive_int("FairEsiConfig.conv_kernel", self.conv_kernel, odd=True)
        for name in ("latent", "mlp_hidden", "gru_hidden"):
            check_positive_int(f"FairEsiConfig.{name}", getattr(self, name), allow_none=True)
        if self.stride > self.patch_len:
            raise ValueError(
                f"FairEsiConfig.stride ({self.stride}) must be <= patch_len ({self.patch_len}) "
                "so that patches cover every sample"
            )
        check_positive("FairEsiConfig.tau", self.tau)
        check_range("FairEsiConfig.alpha", self.alpha, 0.0, 1.0)
        check_option("FairEsiConfig.refine_form", self.refine_form, REFINE_FORMS)
        check_option("FairEsiConfig.refine_axis", self.refine_axis, REFINE_AXES)
        check_option("FairEsiConfig.key_energy", self.key_energy, ("refined", "input"))
        check_option("FairEsiConfig.norm", self.norm, ("position", "all"))
        check_option("FairEsiConfig.conv_layout", self.conv_layout, ("grid", "sensors"))

    @property
    def latent_width(self) -> int:
        """Resolved ``latent`` (``n_regions`` when None)."""
        return self.n_regions if self.latent is None else self.latent


class Patching(nn.Module):
    """Cut every channel into overlapping patches, zero-padding the end (paper section II.B).

    (B, C, T) -> (B, C, Np, L) with ``Np = n_patches(T, L, S)``; patch ``j`` holds samples
    ``j*S .. j*S + L - 1``; samples past ``T - 1`` are zeros.
    """

    def __init__(self, patch_len: int, stride: int) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, Np, L)."""
        n_times = x.shape[-1]
        n = (max(n_times - self.patch_len, 0) + self.stride - 1) // self.stride + 1
        padded = F.pad(x, [0, (n - 1) * self.stride + self.patch_len - n_times])
        return padded.unfold(-1, self.patch_len, self.stride)


def key_patch_index(patches: Tensor) -> Tensor:
    """Index of each channel's largest-energy patch (sum of squares; Eq. 2's ``p``).

    Parameters
    ----------
    patches : Tensor, shape (B, C, Np, L)

    Returns
    -------
    index : Tensor, shape (B, C), int64
        ``argmax_j sum_l patches[b, c, j, l]**2`` (first one on ties).
    """
    return (patches * patches).sum(-1).argmax(-1)


def select_key_patches(patches: Tensor, energy_of: Tensor | None = None) -> Tensor:
    """Each channel's key patch: the one with the largest energy (sum of squares).

    Parameters
    ----------
    patches : Tensor, shape (B, C, Np, L)
    energy_of : Tensor, shape (B, C, Np, L), optional
        Patches whose energies pick the index (default: ``patches``).

    Returns
    -------
    key_patches : Tensor, shape (B, C, L)
        ``patches[b, c, argmax_j sum_l energy_of[b, c, j, l]**2]`` (first one on ties).
    """
    key_index = key_patch_index(patches if energy_of is None else energy_of)  # p: (B, C)
    gather_index = key_index[:, :, None, None].expand(-1, -1, 1, patches.shape[-1])
    return patches.gather(2, gather_index).squeeze(2)  # (B, C, L)


class SampleLayerNorm(nn.Module):
    """LayerNorm over every feature channel and grid position of one sample.

    (B, F, H, W) -> (B, F, H, W): normalised over (F, H, W) together, then a learnt scale
    and shift per feature channel, so no grid size is built in (``norm='all'``).
    """

    def __init__(self, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, y: Tensor) -> Tensor:
        """(B, F, H, W) -> (B, F, H, W)."""
        y = F.layer_norm(y, y.shape[1:], eps=self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class ConvBlock(nn.Module):
    """Conv2D (or TransposeConv2D) - ELU - LayerNorm on a (B, F, H, W) conv layout.

    The kernel slides over the (H, W) grid with 'same' padding, stride 1, so the grid
    keeps its size. ``norm='position'`` normalises the F_out conv channels at every grid
    position; ``norm='all'`` normalises a sample's conv channels and grid together.
    """

    def __init__(
        self, in_features: int, out_features: int, kernel: int, transpose: bool, norm: str
    ) -> None:
        super().__init__()
        pad = kernel // 2
        conv: nn.Module
        if transpose:
            conv = nn.ConvTranspose2d(in_features, out_features, kernel, padding=pad)
        else:
            conv = nn.Conv2d(in_features, out_features, kernel, padding=pad)
        self.conv = conv
        self.per_position = norm == "position"
        self.norm = (
            nn.LayerNorm(out_features) if self.per_position else SampleLayerNorm(out_features)
        )

    def forward(self, y: Tensor) -> Tensor:
        """(B, F_in, H, W) -> (B, F_out, H, W)."""
        y = F.elu(self.conv(y))
        if self.per_position:
            return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm(y)


class KeyPatchAttention(nn.Module):
    """Self-attention across channels on their key patches (Eqs. 2-3).

    ``Q, K, V = W_Q, W_K, W_V`` applied to each channel's key patch (L -> d);
    ``softmax(Q K^T / sqrt(d)) V`` mixes the C channels.
    """

    def __init__(self, patch_len: int, embed_dim: int) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(embed_dim)
        self.query = nn.Linear(patch_len, embed_dim)
        self.key = nn.Linear(patch_len, embed_dim)
        self.value = nn.Linear(patch_len, embed_dim)

    def forward(self, p: Tensor, energy_of: Tensor | None = None) -> Tensor:
        """(B, C, Np, L) -> (B, C, d); ``energy_of`` as in :func:`select_key_patches`."""
        key_patch = select_key_patches(p, energy_of)  # P^L_{i,p}: (B, C, L)
        q = self.query(key_patch)  # (B, C, d)
        k = self.key(key_patch)
        v = self.value(key_patch)
        weights = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, C, C)
        return weights @ v  # (B, C, d)


class PatchwiseRefinement(nn.Module):
    """One FAIR block: key-patch attention, concatenation, two conv blocks (Fig. 2c).

    Parameters
    ----------
    patch_len : int
        L, the feature width of the block's input and output patches.
    embed_dim : int
        d, width of the patch features and of Q, K, V.
    conv_channels, conv_kernel : int
        Width and kernel of the Conv2D / TransposeConv2D pair.
    attention : bool
        False drops the attention branch (patch-wise ablation; it then has no parameters,
        so none goes unused); the conv blocks run on the patch features ``P^F`` alone.
    norm : str
        ``'position'`` or ``'all'``, see :class:`ConvBlock`.
    conv_layout : str
        ``'grid'``: the features are the conv channels and the kernel slides over the
        (sensor, patch) grid. ``'sensors'``: the sensors are the conv channels (Conv2D
        C -> conv_channels, TransposeConv2D back to C) and the kernel slides over the
        (patch, feature) grid; a linear map then takes the features to L.
    n_channels : int
        C, needed by ``conv_layout='sensors'``.
    """

    def __init__(
        self,
        patch_len: int,
        embed_dim: int,
        conv_channels: int,
        conv_kernel: int,
        attention: bool,
        norm: str = "position",
        conv_layout: str = "grid",
        n_channels: int = 0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(patch_len, embed_dim)
        self.attention = KeyPatchAttention(patch_len, embed_dim) if attention else None
        features = 2 * embed_dim if attention else embed_dim
        self.sensors_as_channels = conv_layout == "sensors"
        if self.sensors_as_channels:
            self.conv = ConvBlock(n_channels, conv_channels, conv_kernel, False, norm)
            self.deconv = ConvBlock(conv_channels, n_channels, conv_kernel, True, norm)
            self.to_patch: nn.Module = (
                nn.Identity() if features == patch_len else nn.Linear(features, patch_len)
            )
        else:
            self.conv = ConvBlock(features, conv_channels, conv_kernel, False, norm)
            self.deconv = ConvBlock(conv_channels, patch_len, conv_kernel, True, norm)
            self.to_patch = nn.Identity()

    def forward(self, p: Tensor, energy_of: Tensor | None = None) -> Tensor:
        """(B, C, Np, L) -> (B, C, Np, L); ``energy_of`` (B, C, Np, L) or None picks the
        key patches (:func:`select_key_patches`)."""
        features = self.embed(p)  # P^F: (B, C, Np, d)
        if self.attention is not None:
            attended = self.attention(p, energy_of)  # (B, C, d)
            broadcast = attended[:, :, None, :].expand(features.shape)  # (B, C, Np, d)
            features = torch.cat([features, broadcast], dim=-1)  # P^A: (B, C, Np, 2d)
        if self.sensors_as_channels:
            return self.to_patch(self.deconv(self.conv(features)))  # P^O*: (B, C, Np, L)
        grid = features.permute(0, 3, 1, 2)  # (B, 2d, C, Np)
        return self.deconv(self.conv(grid)).permute(0, 2, 3, 1)  # P^O*: (B, C, Np, L)


def patchwise_blocks(config: FairEsiConfig, n_channels: int) -> nn.ModuleList:
    """The N patch-wise refinement blocks of a configuration, for ``n_channels`` sensors."""
    return nn.ModuleList(
        [
            PatchwiseRefinement(
                config.patch_len,
                config.embed_dim,
                config.conv_channels,
                config.conv_kernel,
                attention=config.patchwise,
                norm=config.norm,
                conv_layout=config.conv_layout,
                n_channels=n_channels,
            )
            for _ in range(config.n_blocks)
        ]
    )


def refinement_of(config: FairEsiConfig) -> tuple[nn.Module, bool]:
    """The spectral-temporal refinement of a configuration and whether to add its input.

    Returns
    -------
    refine : nn.Module
        (..., Np, L) -> (..., Np, L): :func:`fairesi.ops.make_refine` of the reading, or the
        identity when both views are off.
    residual : bool
        ``refine_residual`` when a view is on (``P^L + P``).
    """
    if not (config.spectral or config.temporal):
        return nn.Identity(), False
    # alpha = 1 keeps only the spectral view, alpha = 0 only the temporal view.
    alpha = config.alpha if config.spectral and config.temporal else float(config.spectral)
    refine = make_refine(
        tau=config.tau,
        alpha=alpha,
        fused=config.fused_refine,
        patch_len=config.patch_len,
        form=config.refine_form,
        axis=config.refine_axis,
    )
    return refine, bool(config.refine_residual)


class LatentSum(nn.Module):
    """The sum inside Eq. 5: ``TransposeConv(P^O*) + MLP(X) + X`` in a latent space.

    Parameters
    ----------
    n_channels : int
        C.
    patch_len, stride : int
        L and S of the patching that the transpose conv undoes.
    recon_features : int
        Features per channel after the temporal transpose conv.
    latent, mlp_hidden : int
        Resolved widths (see :class:`FairEsiConfig`).
    """

    def __init__(
        self,
        n_channels: int,
        patch_len: int,
        stride: int,
        recon_features: int,
        latent: int,
        mlp_hidden: int,
    ) -> None:
        super().__init__()
        self.unpatch = nn.ConvTranspose1d(patch_len, recon_features, patch_len, stride=stride)
        self.patch_to_latent = nn.Linear(n_channels * recon_features, latent)
        self.mlp = nn.Sequential(
            nn.Linear(n_channels, mlp_hidden), nn.ELU(), nn.Linear(mlp_hidden, latent)
        )
        self.residual = nn.Linear(n_channels, latent, bias=False)

    def latent(self, refined: Tensor, x: Tensor) -> Tensor:
        """``refined`` (B, C, Np, L) and ``x`` (B, C, T) -> the summed terms (B, T, W)."""
        batch, n_channels, n_patch, patch_len = refined.shape
        n_times = x.shape[-1]
        per_channel = refined.reshape(batch * n_channels, n_patch, patch_len).transpose(1, 2)
        restored = self.unpatch(per_channel)[:, :, :n_times]  # (B*C, F, T)
        restored = restored.reshape(batch, -1, n_times).transpose(1, 2)  # (B, T, C*F)
        x_t = x.transpose(1, 2)  # (B, T, C)
        return self.patch_to_latent(restored) + self.mlp(x_t) + self.residual(x_t)  # (B, T, W)

    def forward(self, refined: Tensor, x: Tensor) -> Tensor:
        """See :meth:`latent`."""
        return self.latent(refined, x)


class SourceReconstruction(LatentSum):
    """Eq. 5: ``BiGRU(TransposeConv(P^O*) + MLP(X) + X)`` and a linear head (Fig. 2d).

    Parameters
    ----------
    n_channels, n_regions : int
        C and R.
    patch_len, stride, recon_features, latent, mlp_hidden
        See :class:`LatentSum`.
    gru_hidden, gru_layers : int
        Resolved widths (see :class:`FairEsiConfig`).
    fused_gru : bool
        Run the BiGRU with :func:`fairesi.ops.bigru` where it applies (see
        :attr:`FairEsiConfig.fused_gru`).
    """

    def __init__(
        self,
        n_channels: int,
        n_regions: int,
        patch_len: int,
        stride: int,
        recon_features: int,
        latent: int,
        mlp_hidden: int,
        gru_hidden: int,
        gru_layers: int,
        fused_gru: bool = False,
    ) -> None:
        super().__init__(n_channels, patch_len, stride, recon_features, latent, mlp_hidden)
        self.gru = nn.GRU(
            latent, gru_hidden, num_layers=gru_layers, batch_first=True, bidirectional=True
        )
        self.head = nn.Linear(2 * gru_hidden, n_regions)
        self.fused_gru = fused_gru

    @torch.jit.unused
    def _fused(self, latent: Tensor) -> Tensor | None:
        """The BiGRU by the fused op, or None where it does not apply (never scripted)."""
        if not (self.fused_gru and fused_gru_applies(self.gru, latent)):
            return None
        return bigru(self.gru, latent)

    def forward(self, refined: Tensor, x: Tensor) -> Tensor:
        """``refined`` (B, C, Np, L) and ``x`` (B, C, T) -> (B, R, T)."""
        latent = self.latent(refined, x)  # (B, T, W)
        hidden: Tensor | None = None
        if not torch.jit.is_scripting():
            hidden = self._fused(latent)
        if hidden is None:
            hidden, _ = self.gru(latent)  # (B, T, 2H)
        return self.head(hidden).transpose(1, 2)  # (B, R, T)


class FairEsi(SourceModel):
    """The FAIR-ESI network: sensor data (B, C, T) -> source activity (B, R, T).

    Parameters
    ----------
    config : FairEsiConfig
        Sizes and ablation switches; kept as ``self.config`` (not part of TorchScript).

    Notes
    -----
    The input is expected normalised as in DeepSIF (time and channel means removed,
    divided by max |x|); the output is in the units of the training target. Any T works;
    C must equal ``config.n_channels``.
    """

    config_class = FairEsiConfig

    def __init__(self, config: FairEsiConfig) -> None:
        super().__init__(config)
        self.patching = Patching(config.patch_len, config.stride)
        self.refine, self.refine_residual = refinement_of(config)
        self.key_from_input = config.key_energy == "input"
        self.blocks = patchwise_blocks(config, config.n_channels)
        latent = config.latent_width
        self.reconstruction = SourceReconstruction(
            config.n_channels,
            config.n_regions,
            config.patch_len,
            config.stride,
            config.recon_features,
            latent,
            latent if config.mlp_hidden is None else config.mlp_hidden,
            latent if config.gru_hidden is None else config.gru_hidden,
            config.gru_layers,
            fused_gru=use_fused_gru(config.fused_gru),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) sensor data -> (B, R, T) source activity."""
        self.check_input(x)
        patches = self.patching(x)  # (B, C, Np, L)
        refined = self.refine(patches)  # P^L: (B, C, Np, L)
        if self.refine_residual:
            refined = refined + patches
        energy_of: Tensor | None = None
        if self.key_from_input:
            energy_of = patches
        for block in self.blocks:
            refined = block(refined, energy_of)  # P^O*: (B, C, Np, L)
        return self.reconstruction(refined, x)  # (B, R, T)
