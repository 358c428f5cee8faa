"""The FAIR-ESI paper's published figures (Table II), printed beside ours in reports.

Units are the table's: precision and recall in %, LE and SD in mm, nMSE in units of 1e-4;
each cell is (mean, std). A configuration is keyed by ``(dataset, r in dB, N_s, N_n)``.
Pure data and lookups (no torch); :mod:`fairesi.evaluate` and :mod:`fairesi.benchmark`
import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PAPER_FAIR_ESI", "PAPER_TABLE2", "paper_reference"]

#: FAIR-ESI column of the paper's Table II, in the table's units: (dataset, r in dB, N_s, N_n)
#: -> metric -> (mean, std). Precision/recall %, LE/SD mm, nMSE ×1e-4.
PAPER_FAIR_ESI: dict[tuple[str, float, int, int], dict[str, tuple[float, float]]] = {
    ("SimMEG", -5.0, 1, 2): {
        "precision": (83.99, 13.18),
        "recall": (90.09, 12.93),
        "le_mm": (1.96, 6.04),
        "sd_mm": (2.55, 6.45),
        "nmse": (1.94, 1.79),
    },
    ("SimMEG", 5.0, 1, 2): {
        "precision": (87.18, 13.74),
        "recall": (92.57, 10.88),
        "le_mm": (1.27, 2.65),
        "sd_mm": (1.88, 2.95),
        "nmse": (1.47, 1.54),
    },
    ("SimMEG", 15.0, 1, 2): {
        "precision": (87.62, 13.36),
        "recall": (93.60, 9.97),
        "le_mm": (1.14, 1.50),
        "sd_mm": (1.75, 1.82),
        "nmse": (1.38, 1.47),
    },
    ("SimMEG", 5.0, 2, 2): {
        "precision": (88.30, 12.15),
        "recall": (67.94, 23.37),
        "le_mm": (1.23, 2.31),
        "sd_mm": (1.99, 2.20),
        "nmse": (2.60, 2.65),
    },
    ("SimMEG", 5.0, 3, 2): {
        "precision": (88.09, 12.01),
        "recall": (64.82, 22.98),
        "le_mm": (1.15, 1.70),
        "sd_mm": (1.75, 1.91),
        "nmse": (3.08, 3.37),
    },
    ("SimMEG", 5.0, 2, 3): {
        "precision": (85.20, 12.01),
        "recall": (60.26, 23.03),
        "le_mm": (1.39, 1.46),
        "sd_mm": (2.19, 1.72),
        "nmse": (4.32, 4.16),
    },
    ("SimEEG", 5.0, 1, 2): {
        "precision": (81.94, 18.57),
        "recall": (89.80, 15.40),
        "le_mm": (2.03, 4.24),
        "sd_mm": (2.83, 5.74),
        "nmse": (1.36, 1.66),
    },
}

# Table II's datasets by (modality, samples per trial).
_DATASETS = {("meg", 500): "SimMEG", ("eeg", 260): "SimEEG"}


def paper_reference(sim_config: Any) -> dict[str, tuple[float, float]] | None:
    """The paper's FAIR-ESI row for a data configuration, or None if Table II has none.

    Parameters
    ----------
    sim_config : fairesi.data.SimConfig or mapping
        Its ``modality`` and ``n_times`` (SimMEG: MEG, 500; SimEEG: EEG, 260), ``snr_db``,
        ``n_sources`` and ``n_rings`` are matched; a training ``mixture`` has no row.

    Returns
    -------
    row : dict or None
        Metric key -> (mean, std) in the table's units.
    """

    def field(name: str) -> Any:
        if isinstance(sim_config, Mapping):
            return sim_config.get(name)
        return getattr(sim_config, name, None)

    if field("mixture"):  # several configurations at once: no one row of the table
        return None
    key = (
        _DATASETS.get((field("modality"), int(field("n_times"))), ""),
        float(field("snr_db")),
        int(field("n_sources")),
        int(field("n_rings")),
    )
    return PAPER_FAIR_ESI.get(key)


_M = ("precision", "recall", "le_mm", "sd_mm", "nmse")


def _paper(*cells: tuple[float, float]) -> dict[str, tuple[float, float]]:
    return dict(zip(_M, cells, strict=True))


#: The paper's Table II for the methods fairesi implements, in the table's units
#: (precision/recall %, LE/SD mm, nMSE x 1e-4): row key -> method -> metric -> (mean, std).
#: FAIR-ESI's column is :data:`PAPER_FAIR_ESI`.
PAPER_TABLE2: dict[tuple[str, float, int, int], dict[str, dict[str, tuple[float, float]]]] = {
    ("SimMEG", -5.0, 1, 2): {
        "sLORETA": _paper(
            (8.15, 9.39), (18.79, 18.45), (80.09, 39.21), (84.31, 38.12), (13.32, 4.59)
        ),
        "Champagne": _paper(
            (9.54, 11.1), (19.66, 24.92), (66.18, 36.98), (76.12, 41.83), (17.54, 8.19)
        ),
        "convdip": _paper((31.09, 40.61), (20.56, 30.39), (2.37, 4.22), (3.42, 4.54), (6.3, 4.2)),
        "deepsif": _paper((79.25, 19.19), (83.85, 20.97), (2.88, 7.2), (4.18, 7.7), (2.49, 2.2)),
    },
    ("SimMEG", 5.0, 1, 2): {
        "sLORETA": _paper(
            (13.19, 16.02), (20.54, 21.64), (57.76, 25.21), (60.01, 26.43), (15.14, 5.69)
        ),
        "Champagne": _paper(
            (15.63, 18.93), (24.82, 26.31), (41.94, 19.69), (48.95, 22.78), (13.18, 7.75)
        ),
        "convdip": _paper((50.11, 33.25), (53.33, 36.7), (3.88, 4.09), (5.15, 4.22), (5.21, 3.51)),
        "deepsif": _paper((82.2, 16.4), (89.48, 14.37), (1.97, 3.11), (3.08, 3.83), (1.94, 1.87)),
    },
    ("SimMEG", 15.0, 1, 2): {
        "sLORETA": _paper(
            (17.77, 22.52), (21.09, 25.38), (37.45, 25.27), (38.63, 26.5), (10.79, 6.89)
        ),
        "Champagne": _paper(
            (20.81, 25.53), (28.1, 29.16), (26.43, 19.74), (31.4, 21.26), (11.52, 6.71)
        ),
        "convdip": _paper((50.49, 31.46), (56.64, 36.18), (4.54, 6.14), (5.78, 6.16), (5.59, 5.81)),
        "deepsif": _paper((82.44, 16.59), (89.65, 14.31), (1.96, 3.28), (3.04, 3.89), (1.94, 1.87)),
    },
    ("SimMEG", 5.0, 2, 2): {
        "sLORETA": _paper(
            (11.08, 12.61), (15.66, 16.57), (81.73, 47.13), (83.8, 45.57), (17.11, 7.04)
        ),
        "Champagne": _paper(
            (13.21, 15.74), (23.04, 25.38), (69.92, 44.97), (78.72, 45.84), (15.22, 7.87)
        ),
        "convdip": _paper(
            (51.43, 36.03), (27.12, 23.14), (3.51, 4.47), (4.86, 4.59), (12.59, 75.18)
        ),
        "deepsif": _paper((81.77, 15.32), (63.64, 22.2), (2.16, 3.71), (3.49, 4.15), (3.89, 3.64)),
    },
    ("SimMEG", 5.0, 3, 2): {
        "sLORETA": _paper(
            (8.52, 9.61), (13.48, 15.56), (85.81, 48.83), (88.37, 47.38), (18.38, 7.57)
        ),
        "Champagne": _paper(
            (10.75, 12.64), (20.14, 24.08), (78.75, 47.71), (89.01, 47.69), (17.93, 7.92)
        ),
        "convdip": _paper((49.88, 35.02), (22.14, 23.19), (4.44, 5.9), (5.92, 6.28), (11.85, 23.2)),
        "deepsif": _paper((83.54, 15.95), (60.82, 22.18), (2.27, 4.48), (3.33, 4.54), (4.36, 4.2)),
    },
    ("SimMEG", 5.0, 2, 3): {
        "sLORETA": _paper(
            (4.99, 5.14), (10.17, 15.49), (87.72, 49.98), (90.2, 48.21), (19.81, 8.73)
        ),
        "Champagne": _paper(
            (8.25, 9.43), (18.17, 22.43), (75.19, 46.91), (81.78, 47.17), (17.37, 8.03)
        ),
        "convdip": _paper(
            (49.0, 33.36), (26.55, 21.94), (4.71, 5.84), (6.28, 6.12), (11.42, 24.17)
        ),
        "deepsif": _paper((81.51, 14.54), (56.73, 21.54), (2.2, 3.53), (3.59, 3.91), (5.72, 5.36)),
    },
    ("SimEEG", 5.0, 1, 2): {
        "sLORETA": _paper(
            (12.39, 16.05), (12.55, 16.12), (50.82, 28.7), (49.65, 36.75), (10.53, 3.95)
        ),
        "Champagne": _paper(
            (12.2, 14.23), (21.45, 24.63), (43.96, 20.12), (50.93, 23.59), (15.17, 7.81)
        ),
        "convdip": _paper((43.37, 38.3), (36.89, 35.82), (3.44, 4.05), (4.74, 4.2), (10.36, 41.67)),
        "deepsif": _paper((78.27, 21.08), (81.24, 23.28), (2.92, 7.38), (4.2, 7.7), (2.68, 2.17)),
    },
}
