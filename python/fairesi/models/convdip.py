"""ConvDip baseline (Hecker et al., Front. Neurosci. 2021, "ConvDip: a convolutional
neural network for better EEG source imaging").

ConvDip treats the sensor values of one time sample as an image: the sensors are projected
onto a plane, their values interpolated onto a regular grid, and a small CNN maps the image
to the source amplitudes. Applied to every time sample::

    x (B, C, T) -> (B*T, C)
      -> SensorGrid     (B*T, L, G, G)   fixed linear interpolation (one matmul)
      -> conv 3x3, ReLU (B*T, F, G, G)   ConvDip: 8 filters
      -> FC, ReLU       (B*T, D)         ConvDip: 512 units
      -> FC             (B*T, R)
    -> (B, R, T)

Choices the paper leaves to the montage:

* **Projection**: azimuthal equidistant around the top of a sphere fitted to the sensor
  positions (the usual topographic-map layout), grid spanning the projected sensors.
* **Interpolation**: piecewise linear on the Delaunay triangulation of the projected
  sensors, zero outside their convex hull, precomputed as a ``(L*G*G, C)`` matrix.
* **Layers** ``L``: sensors sharing a position (Neuromag's magnetometer and two planar
  gradiometers) cannot share one image, so each channel type and each repeat at a
  position gets its own image channel (EEG: 1, Neuromag: 3).
* **Grid size** ``G``: ConvDip used 7x11 pixels for 31 electrodes (about 2.5 pixels per
  sensor); ``grid_size = None`` keeps that density, ``ceil(sqrt(2.5 * n_positions))``.
* **Output**: linear, since our targets are signed (ConvDip predicted magnitudes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.spatial import Delaunay
from torch import Tensor, nn

from fairesi._validate import check_int, check_positive_int
from fairesi.models.base import SourceModel
from fairesi.models.config import PresetConfig

__all__ = ["ConvDip", "ConvDipConfig", "SensorGrid", "sensor_grid_interpolation"]

#: Pixels per sensor position in ConvDip's 31-electrode, 7x11-pixel layout.
_PIXELS_PER_SENSOR = 2.5


def _position_layers(positions: np.ndarray, ch_types: list[str]) -> list[np.ndarray]:
    """Split channels into groups with one type and distinct positions (image layers)."""
    keys: list[tuple[str, int]] = []
    seen: dict[tuple[str, tuple[float, ...]], int] = {}
    for pos, ch_type in zip(positions, ch_types, strict=True):
        # Positions equal to 0.1 mm are the same sensor location.
        spot = (ch_type, tuple(np.round(pos * 1e4).tolist()))
        repeat = seen.get(spot, 0)
        seen[spot] = repeat + 1
        keys.append((ch_type, repeat))
    order = sorted(set(keys), key=keys.index)
    return [np.array([i for i, k in enumerate(keys) if k == key]) for key in order]


def _azimuthal_equidistant(positions: np.ndarray) -> np.ndarray:
    """Project 3-D sensor positions (m) to 2-D (radians of arc) around a fitted sphere."""
    # Sphere fit |p - c|^2 = r^2 is linear in (c, r^2 - |c|^2).
    design = np.c_[2.0 * positions, np.ones(len(positions))]
    solution, *_ = np.linalg.lstsq(design, (positions**2).sum(axis=1), rcond=None)
    directions = positions - solution[:3]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    pole = directions.mean(axis=0)
    pole /= np.linalg.norm(pole)
    # Any orthonormal pair perpendicular to the pole orients the map.
    e1 = np.cross(pole, [1.0, 0.0, 0.0] if abs(pole[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(pole, e1)
    theta = np.arccos(np.clip(directions @ pole, -1.0, 1.0))
    phi = np.arctan2(directions @ e2, directions @ e1)
    return np.c_[theta * np.cos(phi), theta * np.sin(phi)]


def sensor_grid_interpolation(
    ch_positions_m: np.ndarray, ch_types: list[str], grid_size: int | None = None
) -> tuple[np.ndarray, int, int]:
    """Linear interpolation matrix from sensor values to topographic images.

    Parameters
    ----------
    ch_positions_m : np.ndarray, shape (C, 3)
        Sensor positions, m.
    ch_types : list of str
        MNE channel type of each sensor (``'eeg'``, ``'mag'``, ``'grad'``).
    grid_size : int | None
        Image side ``G`` in pixels; ``None`` chooses ConvDip's pixel density.

    Returns
    -------
    matrix : np.ndarray, shape (L * G * G, C), float32
        ``images = matrix @ values`` gives ``L`` images of ``G x G`` pixels, row-major;
        pixels outside a layer's sensor hull are 0.
    n_layers : int
        ``L``, image channels (one per channel type and repeat at a position).
    grid_size : int
        ``G`` actually used.
    """
    positions = np.asarray(ch_positions_m, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(ch_types) != len(positions):
        raise ValueError(
            f"ch_positions_m must have shape (n_channels, 3) matching {len(ch_types)} "
            f"channel types, got {positions.shape}"
        )
    if not np.isfinite(positions).all():
        raise ValueError("ch_positions_m contains NaN or Inf")
    layers = _position_layers(positions, list(ch_types))
    if grid_size is None:
        n_positions = max(len(layer) for layer in layers)
        grid_size = math.ceil(math.sqrt(_PIXELS_PER_SENSOR * n_positions))
    if grid_size < 3:
        raise ValueError(f"grid_size must be >= 3, got {grid_size}")
    flat = _azimuthal_equidistant(positions)
    axis_x = np.linspace(flat[:, 0].min(), flat[:, 0].max(), grid_size)
    axis_y = np.linspace(flat[:, 1].min(), flat[:, 1].max(), grid_size)
    pixels = np.stack(np.meshgrid(axis_x, axis_y, indexing="xy"), axis=-1).reshape(-1, 2)
    n_pixels = len(pixels)
    matrix = np.zeros((len(layers) * n_pixels, len(positions)), dtype=np.float64)
    for index, channels in enumerate(layers):
        if len(channels) < 3:
            raise ValueError(
                f"channel group {index} has {len(channels)} distinct sensor positions; "
                "at least 3 are needed to interpolate a sensor map"
            )
        triangulation = Delaunay(flat[channels])
        simplex = triangulation.find_simplex(pixels)
        inside = np.flatnonzero(simplex >= 0)
        transform = triangulation.transform[simplex[inside]]  # (P, 3, 2)
        bary = np.einsum("pij,pj->pi", transform[:, :2], pixels[inside] - transform[:, 2])
        weights = np.c_[bary, 1.0 - bary.sum(axis=1)]  # (P, 3)
        vertices = channels[triangulation.simplices[simplex[inside]]]  # (P, 3)
        rows = np.repeat(index * n_pixels + inside, 3)
        np.add.at(matrix, (rows, vertices.ravel()), weights.ravel())
    return matrix.astype(np.float32), len(layers), grid_size


@dataclass(frozen=True)
class ConvDipConfig(PresetConfig):
    """Hyper-parameters of :class:`ConvDip`.

    Attributes
    ----------
    n_channels, n_regions, n_times : int
        Sensors C, source regions R, samples per window T (ConvDip works per sample; T
        sizes nothing).
    grid_size : int | None
        Sensor-map side in pixels; ``None``: ConvDip's density (see module docstring).
    conv_filters : int
        3x3 filters of the convolutional layer (ConvDip: 8).
    kernel_size : int
        Odd convolution kernel side (ConvDip: 3).
    fc_hidden : int
        Units of the hidden fully connected layer (ConvDip: 512).
    """

    n_channels: int
    n_regions: int
    n_times: int
    grid_size: int | None = None
    conv_filters: int = 8
    kernel_size: int = 3
    fc_hidden: int = 512

    #: 'tiny' for tests and smoke runs; 'cpu' halves the hidden layer (it dominates the
    #: cost, being applied to every time sample); 'paper' is ConvDip's published size.
    MODEL_LABEL: ClassVar[str] = "ConvDip"
    PER_INSTANT: ClassVar[bool] = True
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(conv_filters=4, fc_hidden=32),
        "cpu": dict(conv_filters=8, fc_hidden=256),
        "paper": dict(conv_filters=8, fc_hidden=512),
    }

    def __post_init__(self) -> None:
        for name in ("n_channels", "n_regions", "n_times", "conv_filters", "fc_hidden"):
            check_positive_int(f"ConvDipConfig.{name}", getattr(self, name))
        check_positive_int("ConvDipConfig.kernel_size", self.kernel_size, odd=True)
        check_int("ConvDipConfig.grid_size", self.grid_size, minimum=3, allow_none=True)


class SensorGrid(nn.Module):
    """Fixed interpolation of sensor values to images: ``(N, C) -> (N, L, G, G)``.

    Parameters
    ----------
    matrix : Tensor, shape (L * G * G, C)
        From :func:`sensor_grid_interpolation`; stored as a buffer (saved, not trained).
    n_layers, grid_size : int
        ``L`` and ``G``.
    """

    def __init__(self, matrix: Tensor, n_layers: int, grid_size: int) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.n_layers = n_layers
        self.grid_size = grid_size

    def forward(self, values: Tensor) -> Tensor:
        """(N, C) sensor values -> (N, L, G, G) sensor maps."""
        images = values @ self.matrix.t()
        return images.reshape(values.shape[0], self.n_layers, self.grid_size, self.grid_size)


class ConvDip(SourceModel):
    """ConvDip: CNN on interpolated sensor maps, applied to every time sample.

    Parameters
    ----------
    config : ConvDipConfig
        Sizes.
    interpolation : np.ndarray, shape (L * G * G, C)
        Sensor-to-image matrix from :func:`sensor_grid_interpolation`.
    n_layers, grid_size : int
        ``L`` and ``G`` of that matrix.
    """

    config_class = ConvDipConfig

    def __init__(
        self, config: ConvDipConfig, interpolation: np.ndarray, n_layers: int, grid_size: int
    ) -> None:
        super().__init__(config)
        expected = (n_layers * grid_size * grid_size, config.n_channels)
        if interpolation.shape != expected:
            raise ValueError(f"interpolation must have shape {expected}, got {interpolation.shape}")
        self.n_regions = config.n_regions
        self.grid = SensorGrid(
            torch.as_tensor(interpolation, dtype=torch.float32), n_layers, grid_size
        )
        self.conv = nn.Conv2d(
            n_layers, config.conv_filters, config.kernel_size, padding=config.kernel_size // 2
        )
        self.hidden = nn.Linear(config.conv_filters * grid_size * grid_size, config.fc_hidden)
        self.output = nn.Linear(config.fc_hidden, config.n_regions)
        self.act = nn.ReLU()

    @classmethod
    def _from_config(cls, config: ConvDipConfig, lead_field: Any) -> ConvDip:
        """The network for ``config``, interpolating the lead field's sensors onto a grid."""
        matrix, n_layers, grid_size = sensor_grid_interpolation(
            lead_field.ch_positions_m, list(lead_field.ch_types), config.grid_size
        )
        return cls(config, matrix, n_layers, grid_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) sensor data -> (B, R, T) source activity."""
        self.check_input(x)
        n_batch, n_times = x.shape[0], x.shape[2]
        values = x.transpose(1, 2).reshape(n_batch * n_times, self.n_channels)  # (B*T, C)
        maps = self.grid(values)  # (B*T, L, G, G)
        features = self.act(self.conv(maps)).flatten(1)  # (B*T, F*G*G)
        sources = self.output(self.act(self.hidden(features)))  # (B*T, R)
        return sources.reshape(n_batch, n_times, self.n_regions).transpose(1, 2)
