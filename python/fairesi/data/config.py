"""What a simulated dataset is: :class:`SimConfig`, the splits and the paper's presets.

Pure configuration (no torch): the fields, their validation, the JSON round trip and the
number of samples of each split.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PAPER_PROTOCOL_DEFAULTS",
    "PATCH_GROWTHS",
    "PRESETS",
    "PROTOCOLS",
    "SPLITS",
    "SimConfig",
    "check_split",
    "parse_mixture",
]

SPLITS = ("train", "val", "test")

PRESETS: dict[str, dict[str, Any]] = {
    "SimMEG": {"modality": "meg", "n_times": 500},
    "SimEEG": {"modality": "eeg", "n_times": 260},
    # EEG and MEG of the same sources (MMDF-ESI): Neuromag systems record both at one
    # sampling rate, so the MEG window length.
    "SimEEGMEG": {"modality": "eeg+meg", "n_times": 500},
}

#: Sensor modalities of a configuration: one lead field, or both stacked (EEG first).
SIM_MODALITIES = ("meg", "eeg", "eeg+meg")

#: Evaluation protocols: 'strict' (ours, the default) and 'paper' (the FAIR-ESI paper's,
#: which follows DeepSIF's code; see :class:`SimConfig` and docs/protocols.md).
PROTOCOLS = ("strict", "paper")

#: Field defaults that ``protocol='paper'`` changes in :meth:`SimConfig.preset`: centres
#: shared by all splits (the paper's random 10:1:1 split of 48 samples per region) and the
#: spike peak anywhere in the window (DeepSIF ``forward/process_raw_nmm.m`` lines 80-81
#: cut fixed 500-sample blocks of the simulation, wherever the peak falls).
PAPER_PROTOCOL_DEFAULTS: dict[str, Any] = {
    "disjoint_centres": False,
    "peak_position": (0.0, 1.0),
    "patch_growth": "candidates",
}

#: How a source patch is grown from its centre (``SimConfig.patch_growth``).
PATCH_GROWTHS = ("rings", "random", "candidates")


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of :data:`SPLITS`.

    Parameters
    ----------
    split : str
        'train', 'val' or 'test'.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def parse_mixture(value: Any) -> tuple[tuple[float, int, int], ...]:
    """``SimConfig.mixture`` from rows or text.

    Parameters
    ----------
    value : str or sequence of 3-sequences
        ``"r/N_s/N_n,r/N_s/N_n,..."`` (e.g. ``"-5/1/2,5/1/2,15/1/2"``; '' for none), or
        rows ``(snr_db, n_sources, n_rings)``.

    Returns
    -------
    tuple of (float, int, int)
        Distinct rows, in the given order.
    """
    if isinstance(value, str):
        text = value.strip()
        value = [row.split("/") for row in text.split(",")] if text else []
    rows = []
    for row in value:
        try:
            snr_db, n_sources, n_rings = row
            parsed = (float(snr_db), int(n_sources), int(n_rings))
            if parsed[1] != float(n_sources) or parsed[2] != float(n_rings):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                f"mixture rows must be 'snr_db/n_sources/n_rings' (e.g. '5/1/2'), got {row!r}"
            ) from None
        rows.append(parsed)
    if len(set(rows)) != len(rows):
        raise ValueError(f"mixture has a repeated row: {rows!r}")
    return tuple(rows)


@dataclass(frozen=True)
class SimConfig:
    """What one simulated dataset configuration looks like (the strict protocol, docs/protocols.md).

    Parameters
    ----------
    modality : {'meg', 'eeg', 'eeg+meg'}
        Which lead field of the head model projects the sources; 'eeg+meg' (SimEEGMEG)
        projects the same sources through both (EEG channels first), each modality with
        its own sensor noise at ``snr_db`` and its own input normalisation.
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
        True (the strict protocol, docs/protocols.md): each split draws its source centres from its own pool of regions,
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
    protocol : {'strict', 'paper'}
        How the data are made where the paper's pipeline (DeepSIF's code) and ours differ.
        'strict' (default): sensor noise of power ``P_c * 10 ** (-snr_db / 10)``, patches
        of full neighbour rings. 'paper': DeepSIF's noise definition, half that power
        (``utils.py``, ``add_white_noise``, line 73: its nominal 5 dB is 8 dB by ours),
        and DeepSIF's patch growth (``patch_growth='candidates'``). The paper's shared
        centres and free peak position are the ``disjoint_centres`` and
        ``peak_position`` defaults that :meth:`preset` gives this protocol.
    patch_growth : {'rings', 'random', 'candidates'} or None
        Which regions around a centre a patch holds. 'rings': every region within
        ``n_rings`` hops (the strict protocol). 'candidates': one of a fixed set of
        patches per centre, grown once as DeepSIF grows them (:mod:`fairesi.data.growth`;
        the first ring whole, the outer rings direction-biased random parts) and shared
        by every split and seed, as the paper's splits share DeepSIF's. 'random': a fresh
        random growth for every sample (the centre and first ring whole, every further
        region next to a kept one kept with probability 1/2; the paper protocol before
        'candidates'; a network that does not tell these growths apart from the
        sensors is capped near 67% paper-protocol precision, ``bench/extent_oracle.py``).
        None (default): 'candidates' under the paper protocol, 'rings' otherwise; a recorded
        paper-protocol configuration without this field (older runs) reads as 'random'.
    view : {'eeg', 'meg'} or None
        Of a fused ('eeg+meg') configuration: give the network only this modality's
        channels of the same samples (the single-modality rows of the fusion benchmark:
        identical sources, noise and normalisation, one modality's block). None: all.
    mixture : tuple of (float, int, int)
        Rows ``(snr_db, n_sources, n_rings)`` of a training mixture: sample ``i`` of every
        split is sample ``i`` of the configuration whose ``snr_db``, ``n_sources`` and
        ``n_rings`` are row ``i % len(mixture)`` (all other fields shared), so one model
        trains over several of the paper's Table I configurations at once, as DeepSIF
        trains over a range of SNRs. Empty (default): the scalar fields. With a mixture
        the scalar fields are ignored; :meth:`rows` gives one configuration per row (to
        evaluate each). Parsed from text as ``"-5/1/2,5/2/2"``.
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
    protocol: str = "strict"
    patch_growth: str | None = None
    view: str | None = None
    mixture: tuple[tuple[float, int, int], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists (from JSON/HDF5 attributes) but store hashable tuples.
        for name in ("split_ratio", "source_snr_db", "half_amplitude_rings", "peak_position"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "mixture", parse_mixture(self.mixture))
        if self.patch_growth is None:
            growth = "candidates" if self.protocol == "paper" else "rings"
            object.__setattr__(self, "patch_growth", growth)
        if self.patch_growth not in PATCH_GROWTHS:
            raise ValueError(
                f"patch_growth must be one of {list(PATCH_GROWTHS)}, got {self.patch_growth!r}"
            )
        self.rows()  # validates every row
        if self.modality not in SIM_MODALITIES:
            raise ValueError(
                f"modality must be one of {list(SIM_MODALITIES)}, got {self.modality!r}"
            )
        if self.view is not None and (
            "+" not in self.modality or self.view not in self.modality.split("+")
        ):
            raise ValueError(
                f"view must be None or one modality of a fused configuration, got "
                f"view={self.view!r} for modality {self.modality!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if int(self.n_times) != self.n_times or self.n_times < 2:
            raise ValueError(f"n_times must be an integer >= 2, got {self.n_times!r}")
        if not math.isfinite(self.snr_db):
            raise ValueError(f"snr_db must be a finite number of dB, got {self.snr_db!r}")
        if int(self.n_sources) != self.n_sources or self.n_sources < 1:
            raise ValueError(f"n_sources must be an integer >= 1, got {self.n_sources!r}")
        if int(self.n_rings) != self.n_rings or self.n_rings < 0:
            raise ValueError(f"n_rings must be an integer >= 0, got {self.n_rings!r}")
        if self.patch_growth == "candidates" and self.n_rings > 3:
            raise ValueError(
                f"patch_growth='candidates' grows DeepSIF's patches of at most 3 rings, got "
                f"n_rings={self.n_rings}; use patch_growth='rings' or 'random'"
            )
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
            Any :class:`SimConfig` field, e.g. ``snr_db=15, n_sources=2``. With
            ``protocol='paper'`` the fields of :data:`PAPER_PROTOCOL_DEFAULTS` default to
            the paper's values.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown configuration {name!r}; expected one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SimConfig field(s) {sorted(unknown)} for preset {name!r}")
        protocol = PAPER_PROTOCOL_DEFAULTS if overrides.get("protocol") == "paper" else {}
        return cls(**{**PRESETS[name], **protocol, **overrides})

    @property
    def input_modality(self) -> str:
        """The modality of the network input: ``view`` when set, else ``modality``."""
        return self.view or self.modality

    def with_protocol(self, protocol: str) -> SimConfig:
        """This configuration under another protocol, with that protocol's defaults of
        ``disjoint_centres``, ``peak_position`` and ``patch_growth``
        (:data:`PAPER_PROTOCOL_DEFAULTS`, or the field defaults for 'strict'). Under its
        own protocol a configuration is returned as it is (a recorded paper-protocol run
        keeps the growth it was trained on)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        if protocol == self.protocol:
            return self
        fields = {f.name: f.default for f in dataclasses.fields(self)}
        defaults = (
            PAPER_PROTOCOL_DEFAULTS
            if protocol == "paper"
            else {k: fields[k] for k in PAPER_PROTOCOL_DEFAULTS}
        )
        return dataclasses.replace(self, protocol=protocol, **defaults)

    def rows(self) -> list[SimConfig]:
        """The configurations of the mixture's rows (see ``mixture``), or ``[self]``."""
        return [self.with_row(row) for row in self.mixture] if self.mixture else [self]

    def with_row(self, row: tuple[float, int, int]) -> SimConfig:
        """This configuration with ``(snr_db, n_sources, n_rings) = row`` and no mixture."""
        snr_db, n_sources, n_rings = row
        return dataclasses.replace(
            self, mixture=(), snr_db=snr_db, n_sources=n_sources, n_rings=n_rings
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (tuples become lists)."""
        return {
            k: list(map(list, v)) if k == "mixture" else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> SimConfig:
        """Inverse of :meth:`to_dict`. A paper-protocol record without ``patch_growth``
        (written before the field existed) reads as ``'random'``, the growth it had."""
        if fields.get("protocol") == "paper" and "patch_growth" not in fields:
            fields = {**fields, "patch_growth": "random"}
        return cls(**fields)

    def split_sizes(self) -> dict[str, int]:
        """Number of samples in each split: val and test round down, train takes the rest."""
        total = sum(self.split_ratio)
        sizes = [self.n_samples * r // total for r in self.split_ratio]
        sizes[0] += self.n_samples - sum(sizes)
        return dict(zip(SPLITS, sizes, strict=True))
