"""What every source-imaging network shares: construction from a head model, the input check.

A network subclasses :class:`SourceModel`, names its configuration dataclass (a
:class:`~fairesi.models.config.PresetConfig`) in ``config_class`` and calls
:meth:`SourceModel.check_input` first thing in ``forward``. The base adds no parameters or
buffers, so the subclasses' ``state_dict`` keys are those of their own layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from torch import Tensor, nn

from fairesi.models.config import PresetConfig

if TYPE_CHECKING:  # typing only: the networks never need a head model at run time
    from fairesi.headmodel import HeadModel

__all__ = ["SourceModel"]


class SourceModel(nn.Module):
    """Base of the networks mapping sensor data (B, C, T) to source activity (B, R, T).

    Parameters
    ----------
    config : PresetConfig
        The network's sizes; kept as ``self.config`` (Python-side metadata, invisible to
        TorchScript). ``config.n_channels`` is the channel count C the input must have.

    Attributes
    ----------
    config_class : type
        Class attribute of a subclass: its configuration dataclass.
    n_channels : int
        C, checked by :meth:`check_input`.
    model_name : str
        The subclass's name, for the input check's message.
    """

    # ``config_class`` is set by every subclass and deliberately not annotated here: for a
    # module class without annotations of its own TorchScript uses those of the nearest
    # base that has some, which must stay nn.Module's.

    # The dataclass is Python-side metadata, invisible to TorchScript.
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: PresetConfig) -> None:
        super().__init__()
        self.config = config
        self.n_channels: int = config.n_channels
        self.model_name: str = type(self).__name__

    @classmethod
    def from_head_model(
        cls,
        head_model: HeadModel,
        modality: str,
        n_times: int,
        preset: str = "cpu",
        **overrides: Any,
    ) -> Self:
        """Build a network sized for a head model's lead field of one modality.

        Parameters
        ----------
        head_model : fairesi.headmodel.HeadModel
            Supplies ``n_regions`` and ``lead_field(modality)`` (its ``n_channels``, and
            for ConvDip the channel positions and types).
        modality : str
            ``'eeg'`` or ``'meg'``.
        n_times : int
            Samples per input window.
        preset : str
            Size preset, a key of ``config_class.PRESETS`` (``'tiny'``, ``'cpu'``,
            ``'paper'``).
        **overrides
            Fields of ``config_class`` to change.
        """
        lead_field = head_model.lead_field(modality)
        config = cls.config_class.preset(
            preset,
            n_channels=lead_field.n_channels,
            n_regions=head_model.n_regions,
            n_times=n_times,
            **overrides,
        )
        return cls._from_config(config, lead_field)

    @classmethod
    def _from_config(cls, config: Any, lead_field: Any) -> Self:
        """The network for ``config``; a subclass that needs the lead field overrides this."""
        return cls(config)

    def check_modalities(self, x: Tensor, groups: list[int]) -> None:
        """For a fused EEG+MEG network (``groups`` = [C_eeg, C_meg]): raise ``ValueError``
        naming the missing modality when ``x`` holds only one modality's channels."""
        if x.dim() == 3 and x.shape[1] != self.n_channels and len(groups) == 2:
            if x.shape[1] == groups[0] or x.shape[1] == groups[1]:
                missing = "MEG" if x.shape[1] == groups[0] else "EEG"
                raise ValueError(
                    self.model_name
                    + " fuses EEG and MEG: it needs "
                    + str(self.n_channels)
                    + " channels ("
                    + str(groups[0])
                    + " EEG, then "
                    + str(groups[1])
                    + " MEG), got "
                    + str(x.shape[1])
                    + ": the "
                    + missing
                    + " channels are missing"
                )

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (batch, n_channels, times)."""
        if x.dim() != 3 or x.shape[1] != self.n_channels:
            raise ValueError(
                self.model_name
                + " expects input of shape (batch, "
                + str(self.n_channels)
                + " channels, times), got "
                + str(list(x.shape))
            )
