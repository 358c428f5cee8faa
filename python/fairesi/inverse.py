"""Classical (non-learned) inverse methods on a region-level head model.

Two families, both returning region time courses ``(B, R, T)`` like the networks:

``ClassicalInverse``
    minimum norm (``'MNE'``), ``'dSPM'``, ``'sLORETA'`` and ``'eLORETA'`` through
    MNE-Python's inverse operators. The regions of a :class:`~fairesi.headmodel.HeadModel`
    become the "dipoles" of a fixed-orientation :class:`mne.Forward` (region gain as the
    gain matrix, region centroids as positions, region normals as orientations), so MNE
    does the whitening, depth weighting, regularisation and noise normalisation exactly as
    for a cortical source space. The linear inverse kernel ``K (R, C)`` is computed once
    by applying MNE's own :func:`mne.minimum_norm.apply_inverse` to an identity "evoked"
    (every method here is linear in the data, so column ``c`` of the result is the
    estimate for a unit signal on channel ``c``); a batch is then one matrix product.

``Champagne``
    sparse Bayesian learning (Wipf et al. 2010, NeuroImage 49:641; Cai et al. 2021,
    NeuroImage 225:117411), our own batched implementation with convex-bounding or EM
    updates of the source variances, a diagonal noise covariance of known shape across
    channels whose level is known or learned, and a stopping rule on the relative change
    of the cost.

Both take sensor data ``x (B, C, T)`` as a NumPy array or a torch tensor in the units of
the lead field's rows (or the normalised network input: the methods are equivariant to a
global scale of ``x``, see each class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mne
import numpy as np
import torch
from mne.io.constants import FIFF

if TYPE_CHECKING:
    from fairesi.headmodel import HeadModel

#: Methods of :class:`ClassicalInverse`, spelled as in :func:`mne.minimum_norm.apply_inverse`.
MNE_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")

#: Lower bound of a learned noise level, relative to the mean power of the whitened data.
_MIN_NOISE_VAR = 1e-6

#: Every classical method name accepted by :func:`build_inverse`.
INVERSE_METHODS = (*MNE_METHODS, "Champagne")


def _as_batch(x: np.ndarray | torch.Tensor, n_channels: int) -> np.ndarray:
    """Return ``x`` as a float64 array ``(B, C, T)``, checking its shape and values."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != n_channels:
        raise ValueError(
            f"sensor data must have shape (batch, {n_channels} channels, times), got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("sensor data contain NaN or Inf values")
    return x


def _noise_std_per_channel(noise_std: float | np.ndarray, n_channels: int) -> np.ndarray:
    """Broadcast a scalar or per-channel sensor noise standard deviation to ``(C,)``."""
    std = np.asarray(noise_std, dtype=np.float64)
    if std.shape not in ((), (n_channels,)):
        raise ValueError(
            f"noise_std must be a scalar or have shape ({n_channels},), got shape {std.shape}"
        )
    std = np.broadcast_to(std, (n_channels,)).copy()
    if not (np.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"noise_std must be finite and > 0 for every channel, got {noise_std!r}")
    return std


def make_info(head_model: HeadModel, modality: str, sfreq: float = 500.0) -> mne.Info:
    """Build the :class:`mne.Info` of one modality of a head model.

    Parameters
    ----------
    head_model : HeadModel
        Head model holding the lead field of ``modality``.
    modality : str
        ``'eeg'`` or ``'meg'`` (any key of ``head_model.lead_fields``).
    sfreq : float
        Sampling frequency written into the info, Hz. The inverse kernels do not depend
        on it.

    Returns
    -------
    info : mne.Info
        Channels named and typed as the lead field, positions (m) in ``loc[:3]``; for EEG
        an (inactive) average-reference projector, since the lead field is
        average-referenced and MNE requires the reference to be declared.
    """
    lead_field = head_model.lead_field(modality)
    info = mne.create_info(list(lead_field.ch_names), float(sfreq), list(lead_field.ch_types))
    for ch, pos in zip(info["chs"], np.asarray(lead_field.ch_positions_m), strict=True):
        ch["loc"][:3] = pos
    if "eeg" in lead_field.ch_types:
        # EvokedArray is the public way to attach an average-reference projector to an Info.
        evoked = mne.EvokedArray(np.zeros((lead_field.n_channels, 1)), info, verbose=False)
        evoked.set_eeg_reference("average", projection=True, verbose=False)
        info = evoked.info
    return info


def make_forward(head_model: HeadModel, modality: str, info: mne.Info | None = None) -> mne.Forward:
    """Express a head model's region lead field as a fixed-orientation :class:`mne.Forward`.

    Each region is one dipole of a discrete source space, at its centroid and oriented
    along its mean normal, whose gain column is the region gain (sum of its vertices'
    fixed-orientation gains). Head and MRI coordinates coincide.

    Parameters
    ----------
    head_model : HeadModel
        The head model.
    modality : str
        ``'eeg'`` or ``'meg'``.
    info : mne.Info | None
        Measurement info of the channels; ``None`` builds it with :func:`make_info`.

    Returns
    -------
    forward : mne.Forward
        ``nsource = R`` fixed-orientation dipoles; ``forward['sol']['data']`` has shape
        ``(C, R)``, float64.
    """
    lead_field = head_model.lead_field(modality)
    if info is None:
        info = make_info(head_model, modality)
    gain = np.asarray(lead_field.gain, dtype=np.float64)
    positions_m = np.asarray(head_model.region_centroids_mm, dtype=np.float64) / 1000.0
    normals = np.asarray(head_model.region_normals, dtype=np.float64)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    src = mne.setup_volume_source_space(pos=dict(rr=positions_m, nn=normals), verbose=False)
    sol = dict(
        data=gain,
        nrow=gain.shape[0],
        ncol=gain.shape[1],
        row_names=list(lead_field.ch_names),
        col_names=[],
    )
    # The same keys that mne.make_forward_solution + convert_forward_solution(force_fixed)
    # produce; mne offers no public constructor for a Forward from a gain matrix.
    return mne.Forward(
        sol=sol,
        sol_grad=None,
        source_ori=FIFF.FIFFV_MNE_FIXED_ORI,
        _orig_source_ori=FIFF.FIFFV_MNE_FIXED_ORI,
        _orig_sol=gain.copy(),
        _orig_sol_grad=None,
        nsource=gain.shape[1],
        nchan=gain.shape[0],
        coord_frame=FIFF.FIFFV_COORD_HEAD,
        info=info,
        src=src,
        source_rr=positions_m,
        source_nn=normals,
        surf_ori=True,
        mri_head_t=mne.transforms.Transform("mri", "head"),
    )


def make_noise_covariance(info: mne.Info, noise_std: float | np.ndarray) -> mne.Covariance:
    """Diagonal noise covariance of white sensor noise with a known level.

    Parameters
    ----------
    info : mne.Info
        Channels of the data.
    noise_std : float | np.ndarray, shape (C,)
        Noise standard deviation of every channel (or one for all), in data units.

    Returns
    -------
    noise_cov : mne.Covariance
        Diagonal covariance ``diag(noise_std**2)`` with the info's projectors.
    """
    std = _noise_std_per_channel(noise_std, len(info["ch_names"]))
    return mne.Covariance(
        std**2, list(info["ch_names"]), bads=[], projs=list(info["projs"]), nfree=1
    )


def noise_std_from_gain(head_model: HeadModel, modality: str) -> np.ndarray:
    """Relative sensor noise levels matching :mod:`fairesi.data`'s sensor noise.

    The simulated noise of channel ``c`` has a fixed fraction of that channel's signal
    power; with all regions equally active in expectation, that power is proportional to
    ``sum_r G[c, r]**2``. So the noise standard deviation is proportional to each row's
    gain norm, which also sets the relative weight of magnetometers and gradiometers.

    Parameters
    ----------
    head_model : HeadModel
        The head model.
    modality : str
        ``'eeg'``, ``'meg'`` or ``'eeg+meg'``.

    Returns
    -------
    noise_std : np.ndarray, shape (C,), float64
        Root mean square gain of every channel (data units per source unit), a noise level
        up to one global factor, which the MNE methods and Champagne's learned noise do
        not need. For 'eeg+meg' each modality block is scaled to mean 1 (its data are
        normalised on their own), so the joint inverse is whitened per channel type.
    """
    lead_field = head_model.lead_field(modality)
    gain = np.asarray(lead_field.gain, dtype=np.float64)
    rms = np.sqrt((gain**2).mean(axis=1))
    if not (rms > 0).all():
        raise ValueError(
            f"channels {np.flatnonzero(rms <= 0).tolist()} of the {modality} lead field have "
            "zero gain; their noise level cannot be derived from it"
        )
    if len(lead_field.channel_groups) > 1:
        # Fused data are normalised per modality block (each to max |x| = 1), which puts
        # both blocks' noise on a comparable level: each block's levels have mean 1.
        blocks = np.split(rms, np.cumsum(lead_field.channel_groups)[:-1])
        rms = np.concatenate([block / block.mean() for block in blocks])
    return rms


class RegionEstimator:
    """Base of the classical methods: ``apply`` on arrays, ``__call__`` on tensors."""

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Region time courses ``(B, R, T)`` float32 from sensor data ``(B, C, T)``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` as a tensor-to-tensor estimator, ``(B, C, T) -> (B, R, T)`` float32
        on ``x``'s device (the interface of :func:`fairesi.evaluate.evaluate_estimator`)."""
        return torch.from_numpy(self.apply(x)).to(x.device)


class ClassicalInverse(RegionEstimator):
    """Minimum norm, dSPM, sLORETA or eLORETA as one precomputed linear kernel.

    Parameters
    ----------
    head_model : HeadModel
        The head model (its regions are the sources).
    modality : str
        ``'eeg'`` or ``'meg'``.
    method : str
        One of ``'MNE'``, ``'dSPM'``, ``'sLORETA'``, ``'eLORETA'``.
    snr : float
        Assumed amplitude SNR; the regularisation is ``lambda2 = 1 / snr**2`` (MNE's
        convention, 3.0 for evoked data).
    noise_std : float | np.ndarray, shape (C,)
        Sensor noise standard deviation, in data units. With the same value on every
        channel, MNE and eLORETA do not depend on it at all (MNE scales the source
        covariance to the whitened data) and dSPM/sLORETA only scale as ``1 / noise_std``;
        a per-channel array sets the relative weighting of channels (e.g. mag vs grad).
    depth : float | None
        Depth-weighting exponent of MNE's source covariance (``None``: no depth
        weighting). MNE's default is 0.8.

    Attributes
    ----------
    kernel : np.ndarray, shape (R, C), float64
        ``estimate = kernel @ x`` for every time sample, including whitening and (EEG)
        the average-reference projection.
    inverse_operator : mne.minimum_norm.InverseOperator
        The operator the kernel comes from.
    info : mne.Info
        Channel info used for MNE calls (e.g. to build an :class:`mne.EvokedArray`).
    """

    def __init__(
        self,
        head_model: HeadModel,
        modality: str,
        method: str = "sLORETA",
        *,
        snr: float = 3.0,
        noise_std: float | np.ndarray = 1.0,
        depth: float | None = 0.8,
    ) -> None:
        if method not in MNE_METHODS:
            raise ValueError(f"method must be one of {MNE_METHODS}, got {method!r}")
        if not snr > 0:
            raise ValueError(f"snr must be > 0, got {snr}")
        self.method = method
        self.modality = modality
        self.lambda2 = 1.0 / float(snr) ** 2
        self.info = make_info(head_model, modality)
        forward = make_forward(head_model, modality, self.info)
        noise_cov = make_noise_covariance(self.info, noise_std)
        # allow_fixed_depth: our forward is fixed-orientation from the start, so MNE's
        # usual route (free-orientation forward, depth prior, then fix) is not available.
        depth_option = dict(exp=depth, allow_fixed_depth=True)
        self.inverse_operator = mne.minimum_norm.make_inverse_operator(
            self.info, forward, noise_cov, loose=0.0, depth=depth_option, fixed=True, verbose=False
        )
        self.kernel = self._kernel_from_mne()

    def _kernel_from_mne(self) -> np.ndarray:
        """Apply MNE's inverse to an identity evoked: column c is the response to channel c."""
        n_channels = len(self.info["ch_names"])
        probe = mne.EvokedArray(np.eye(n_channels), self.info, nave=1, verbose=False)
        stc = self.apply_mne(probe)
        return np.asarray(stc.data, dtype=np.float64)

    def apply_mne(self, evoked: mne.Evoked) -> mne.SourceEstimate:
        """Run :func:`mne.minimum_norm.apply_inverse` with this operator's settings.

        Parameters
        ----------
        evoked : mne.Evoked
            Data on this head model's channels (``nave`` is honoured by MNE).

        Returns
        -------
        stc : mne.VolSourceEstimate
            ``stc.data`` has shape ``(R, T)``, signed (fixed orientation).
        """
        return mne.minimum_norm.apply_inverse(
            evoked,
            self.inverse_operator,
            self.lambda2,
            method=self.method,
            pick_ori=None,
            verbose=False,
        )

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Estimate region time courses for a batch.

        Parameters
        ----------
        x : np.ndarray | torch.Tensor, shape (B, C, T)
            Sensor data.

        Returns
        -------
        estimate : np.ndarray, shape (B, R, T), float32
            Signed region amplitudes (MNE: source units of the gain; dSPM/sLORETA: noise-
            normalised, dimensionless).
        """
        data = _as_batch(x, self.kernel.shape[1])
        return np.einsum("rc,bct->brt", self.kernel, data, optimize=True).astype(np.float32)


@dataclass
class ChampagneResult:
    """Output of :meth:`Champagne.fit`.

    Attributes
    ----------
    means : np.ndarray, shape (B, R, T), float32
        Posterior mean source time courses, in units of ``x`` / gain.
    gamma : np.ndarray, shape (B, R), float64
        Learned source variances, in (units of ``x`` / gain) squared.
    noise_var : np.ndarray, shape (B, C), float64
        Noise variance per channel (the known one, or the learned homoscedastic one), in
        units of ``x`` squared.
    cost : np.ndarray, shape (n_iter + 1, B), float64
        Cost ``log|Sigma_y| + tr(C_y Sigma_y^-1)`` of the scale-normalised data before the
        first and after every iteration (non-increasing for both update rules).
    n_iter : int
        Iterations run.
    converged : bool
        Whether every sample met the tolerance before ``max_iter``.
    sample_converged : np.ndarray, shape (B,), bool
        Whether each sample's last relative cost change was below the tolerance (when
        ``max_iter`` stopped the batch, some samples may still have converged).
    """

    means: np.ndarray
    gamma: np.ndarray
    noise_var: np.ndarray
    cost: np.ndarray
    n_iter: int
    converged: bool
    sample_converged: np.ndarray


class Champagne(RegionEstimator):
    """Champagne sparse Bayesian learning, batched over samples.

    Model per sample: ``y(t) = L s(t) + e(t)``, ``s(t) ~ N(0, diag(gamma))``,
    ``e(t) ~ N(0, Sigma_e)``, so ``Sigma_y = Sigma_e + L diag(gamma) L^T``. The type-II
    maximum-likelihood cost ``log|Sigma_y| + tr(C_y Sigma_y^-1)`` (``C_y = Y Y^T / T``) is
    minimised over ``gamma``, and over the noise level ``lam`` when it is learned. The noise
    is ``Sigma_e = lam diag(noise_std**2)``: the data and the gain are whitened by
    ``noise_std`` first, so that the noise is ``lam I``; ``lam = 1`` when the noise is
    known, else it is learned (bounded below at -60 dB of the whitened data power). With
    ``a_i = ||L_i^T Sigma_y^-1 Y||^2 / T`` and ``z_i = L_i^T Sigma_y^-1 L_i``:

    - ``'convex'`` (convex bounding, Wipf et al. 2010): ``gamma_i <- gamma_i sqrt(a_i / z_i)``;
      learned noise ``lam <- lam sqrt(||Sigma_y^-1 Y||^2 / T / tr(Sigma_y^-1))``.
    - ``'em'``: ``gamma_i <- gamma_i + gamma_i^2 (a_i - z_i)``; learned noise ``lam <- lam +
      lam^2 (||Sigma_y^-1 Y||^2 / T - tr(Sigma_y^-1)) / C``.

    Both decrease the cost monotonically. Each sample is first scaled to unit mean channel
    power (the estimate is scaled back), so the cost and tolerance do not depend on units.
    Iteration stops when every sample's ``|cost_k - cost_{k-1}| / max(|cost_{k-1}|, 1)``
    is below ``tol``, or after ``max_iter``.

    Parameters
    ----------
    head_model : HeadModel
        The head model (its regions are the sources).
    modality : str
        ``'eeg'`` or ``'meg'``.
    noise_std : float | np.ndarray, shape (C,)
        Sensor noise standard deviation (data units). With ``learn_noise`` only its shape
        across channels matters (e.g. :func:`noise_std_from_gain`); the level is learned.
    learn_noise : bool
        Learn the noise level of every sample (default) or take ``noise_std`` as known.
    update : str
        ``'convex'`` (default, faster) or ``'em'``.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Tolerance on the relative change of the cost.
    device : str | torch.device
        Device of the batched linear algebra (float64).
    """

    def __init__(
        self,
        head_model: HeadModel,
        modality: str,
        *,
        noise_std: float | np.ndarray = 1.0,
        learn_noise: bool = True,
        update: str = "convex",
        max_iter: int = 300,
        tol: float = 1e-5,
        device: str | torch.device = "cpu",
    ) -> None:
        if update not in ("convex", "em"):
            raise ValueError(f"update must be 'convex' or 'em', got {update!r}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.modality = modality
        self.update = update
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.device = torch.device(device)
        gain = torch.as_tensor(
            np.asarray(head_model.lead_field(modality).gain), dtype=torch.float64
        ).to(self.device)
        self.noise_std = torch.as_tensor(
            _noise_std_per_channel(noise_std, gain.shape[0]), device=self.device
        )
        self.learn_noise = bool(learn_noise)
        self.whitened_gain = gain / self.noise_std[:, None]

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Posterior mean region time courses, ``(B, R, T)`` float32 (see :meth:`fit`)."""
        return self.fit(x).means

    def fit(self, x: np.ndarray | torch.Tensor) -> ChampagneResult:
        """Learn the source (and optionally noise) variances of every sample and estimate.

        Parameters
        ----------
        x : np.ndarray | torch.Tensor, shape (B, C, T)
            Sensor data.

        Returns
        -------
        result : ChampagneResult
        """
        gain = self.whitened_gain
        n_channels, n_regions = gain.shape
        y = torch.as_tensor(_as_batch(x, n_channels), device=self.device)
        y = y / self.noise_std[:, None]  # whitened: the noise is lam * I
        n_batch = y.shape[0]
        scale = y.square().mean(dim=(1, 2)).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
        y = y / scale[:, None, None]
        # Only C_y = Y Y^T / T enters the variance updates; a square root of it with at most
        # C columns replaces the T columns of Y.
        y_eff = _covariance_root(y)

        eye = torch.eye(n_channels, dtype=torch.float64, device=self.device)
        lam = 0.1 * torch.ones_like(scale) if self.learn_noise else scale.square().reciprocal()
        # Start with the source power explaining the whole data power on average.
        gamma = torch.full(
            (n_batch, n_regions),
            n_channels / gain.square().sum().item(),
            dtype=torch.float64,
            device=self.device,
        )

        costs: list[torch.Tensor] = []
        change = torch.full_like(scale, torch.inf)
        while True:
            sigma = (gain * gamma[:, None, :]) @ gain.T + lam[:, None, None] * eye
            chol = torch.linalg.cholesky(sigma)
            # With Sigma = K K^T: log|Sigma| = 2 sum log diag K, tr(C_y Sigma^-1) = |K^-1 Y|^2,
            # and L_i^T Sigma^-1 Y = (K^-1 L_i)^T (K^-1 Y).
            half_data = torch.linalg.solve_triangular(chol, y_eff, upper=False)  # (B, C, k)
            log_det = 2.0 * chol.diagonal(dim1=1, dim2=2).log().sum(dim=1)
            costs.append(log_det + half_data.square().sum(dim=(1, 2)))
            if len(costs) > 1:
                change = (costs[-2] - costs[-1]).abs() / costs[-2].abs().clamp_min(1.0)
                if bool((change < self.tol).all()):
                    break
            if len(costs) > self.max_iter:
                break
            half_gain = torch.linalg.solve_triangular(
                chol, gain.expand(n_batch, -1, -1), upper=False
            )
            a = (half_gain.transpose(1, 2) @ half_data).square().sum(dim=2)  # (B, R)
            z = half_gain.square().sum(dim=1)  # (B, R)
            if self.update == "convex":
                gamma = gamma * torch.sqrt(a / z)
            else:
                gamma = gamma + gamma.square() * (a - z)
            if self.learn_noise:
                chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)
                data_term = (chol_inv.transpose(1, 2) @ half_data).square().sum(dim=(1, 2))
                trace = chol_inv.square().sum(dim=(1, 2))  # tr(Sigma^-1)
                if self.update == "convex":
                    lam = lam * torch.sqrt(data_term / trace)
                else:
                    lam = lam + lam.square() * (data_term - trace) / n_channels
                # The floor keeps Sigma_y invertible on noise-free data (whose ML noise
                # variance is 0); clamping a 1-D surrogate minimiser keeps the cost monotone.
                lam = lam.clamp_min(_MIN_NOISE_VAR)

        sample_converged = change < self.tol
        means = gamma[:, :, None] * (gain.T @ torch.cholesky_solve(y, chol))
        noise_var = (lam * scale.square())[:, None] * self.noise_std.square()
        return ChampagneResult(
            means=(means * scale[:, None, None]).float().cpu().numpy(),
            gamma=(gamma * scale[:, None].square()).cpu().numpy(),
            noise_var=noise_var.cpu().numpy(),
            cost=torch.stack(costs).cpu().numpy(),
            n_iter=len(costs) - 1,
            converged=bool(sample_converged.all()),
            sample_converged=sample_converged.cpu().numpy(),
        )


def _covariance_root(y: torch.Tensor) -> torch.Tensor:
    """Return ``R (B, C, k)``, ``k = min(C, T)``, with ``R R^T = Y Y^T / T``."""
    n_times = y.shape[2]
    if n_times <= y.shape[1]:
        return y / n_times**0.5
    eigval, eigvec = torch.linalg.eigh(y @ y.transpose(1, 2) / n_times)
    return eigvec * eigval.clamp_min(0.0).sqrt()[:, None, :]


def build_inverse(
    method: str, head_model: HeadModel, modality: str, **options: object
) -> ClassicalInverse | Champagne:
    """Build a classical inverse method by name.

    Parameters
    ----------
    method : str
        One of :data:`INVERSE_METHODS`: ``'MNE'``, ``'dSPM'``, ``'sLORETA'``,
        ``'eLORETA'`` or ``'Champagne'``.
    head_model : HeadModel
        The head model.
    modality : str
        ``'eeg'`` or ``'meg'``.
    **options
        Keyword arguments of :class:`ClassicalInverse` or :class:`Champagne`.

    Returns
    -------
    inverse : ClassicalInverse | Champagne
        An object whose ``apply(x (B, C, T)) -> (B, R, T)`` estimates region time courses.
    """
    if method == "Champagne":
        return Champagne(head_model, modality, **options)
    if method in MNE_METHODS:
        return ClassicalInverse(head_model, modality, method, **options)
    raise ValueError(f"unknown inverse method {method!r}; expected one of {INVERSE_METHODS}")
