"""Size presets shared by the model configuration dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from fairesi._validate import check_keys, check_option


class PresetConfig:
    """Mixin for a frozen model-config dataclass with named size presets.

    A subclass defines ``PRESETS`` (preset name -> field values) and ``MODEL_LABEL`` (the
    model's name in error messages), and has the fields ``n_channels``, ``n_regions`` and
    ``n_times`` (the data sizes). ``PER_INSTANT`` is True for a network that maps every
    time sample on its own (output sample t depends on input sample t only), which may then
    be trained on a subset of each window's samples (``TrainConfig.train_instants``).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]]
    MODEL_LABEL: ClassVar[str]
    PER_INSTANT: ClassVar[bool] = False

    @classmethod
    def preset(cls, name: str, *, n_channels: int, n_regions: int, n_times: int, **overrides: Any):
        """Build a config from a named size preset plus field overrides.

        Parameters
        ----------
        name : str
            A key of ``PRESETS`` (e.g. ``'tiny'``, ``'cpu'``, ``'paper'``).
        n_channels, n_regions, n_times : int
            Data sizes: sensor channels C, source regions R, samples per window T.
        **overrides
            Any other field of the dataclass.

        Raises
        ------
        ValueError
            ``name`` is not a preset.
        TypeError
            An override is not a field.
        """
        check_option(f"{cls.MODEL_LABEL} preset", name, sorted(cls.PRESETS))
        fields = [f.name for f in dataclasses.fields(cls)]
        check_keys(f"{cls.MODEL_LABEL} hyper-parameters", overrides, fields)
        values = {**cls.PRESETS[name], **overrides}
        return cls(n_channels=n_channels, n_regions=n_regions, n_times=n_times, **values)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (``type(self)(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)
