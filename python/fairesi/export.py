"""Export trained models for inference without Python (docs/embedding.md).

Two formats, both read by the C++ runner ``fairesi-infer`` (``cpp/runner``):

* **TorchScript** (``.pt``, the default): ``torch.jit.script`` of the model. A model
  scripted while the fused op library is loaded calls
  ``torch.ops.fairesi.spectral_temporal_refine`` by name, so whoever loads it must load
  ``libfairesi_ops.so`` first (the runner does so when the metadata says
  ``needs_ops_library``); with ``fused_op=False`` the scripted pure-PyTorch refinement is
  exported and no library is needed.
* **AOTInductor** (``.pt2``): ``torch.export`` + ``torch._inductor.aoti_compile_and_package``,
  compiled C++ for the export machine's CPU (or GPU), with a dynamic batch dimension. The
  refinement is always the pure-PyTorch one, compiled in, so no op library is needed. This
  is the path that outlives TorchScript, which torch 2.13 deprecates. Compiling unrolls the
  BiGRU over the T time steps, so it takes minutes for a full-size model.

Both carry :data:`METADATA_FILE`, a JSON object (see :func:`build_metadata`) with what
inference needs: channel names, types and order, sampling rate, samples per epoch, region
count, names and centroids, the input normalisation (``'deepsif'``:
:func:`fairesi.data.normalise_input`), the output layout (regions x times), the modality,
the fairesi and torch versions, and whether the op library is needed. In a TorchScript
archive it is an extra file; in an AOTInductor package it is an entry of the package
metadata (``aot_inductor.metadata``).

torch 2.13 warns that ``torch.jit`` is deprecated on every ``script``/``load``/``save``; this
module silences exactly those warnings (and one deprecation torch.export raises internally)
around its own calls and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import fairesi
from fairesi.data import normalise_blocks
from fairesi.io import atomic_path
from fairesi.ops import SpectralTemporalRefine
from fairesi.runner import runner_path

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "ExportedModel",
    "build_metadata",
    "export_checkpoint",
    "export_model",
    "load_exported",
    "read_metadata",
    "runner_path",
    "test_epoch",
    "with_refinement",
]

#: Name of the metadata file inside an exported model (the runner reads the same name).
METADATA_FILE = "fairesi_metadata.json"
#: Export formats and their file suffixes.
FORMATS = {"torchscript": ".pt", "aoti": ".pt2"}
#: Sampling rate of the simulated training data (Hz) when a checkpoint does not record one.
DEFAULT_SFREQ_HZ = 500.0

# Deprecation warnings torch 2.13 raises from our own export calls, about APIs the user does
# not call (torch.jit is what the design asks for; script_method and the treespec one come
# from modules torch.export / AOTInductor import). Each is silenced by exact message and
# category, only around our calls.
_TORCH_DEPRECATIONS = [
    (r"`torch\.jit\.(script|script_method|load|save)` is deprecated", DeprecationWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
]


@contextlib.contextmanager
def _torch_deprecations_silenced() -> Iterator[None]:
    """Silence the deprecation warnings of :data:`_TORCH_DEPRECATIONS`, and only those."""
    with warnings.catch_warnings():
        for message, category in _TORCH_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def build_metadata(
    head_model: Any,
    modality: str,
    n_times: int,
    *,
    sfreq: float = DEFAULT_SFREQ_HZ,
    model_name: str | None = None,
    model_hyper: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata stored with an exported model (without the format-specific fields).

    Parameters
    ----------
    head_model : fairesi.headmodel.HeadModel
        Head model the network was trained for (channels of ``modality``, regions).
    modality : str
        ``'eeg'``, ``'meg'`` or ``'eeg+meg'`` (one input, EEG channels first; each block
        normalised on its own: ``normalisation`` 'deepsif-per-modality' with
        ``channel_groups``).
    n_times : int
        Samples per input epoch T.
    sfreq : float
        Sampling rate of the input in Hz.
    model_name : str or None
        Registry name of the network (``'fair_esi'``, ...), for the record.
    model_hyper : dict or None
        The network's hyper-parameters, for the record (JSON-able).

    Returns
    -------
    dict
        JSON-able; :func:`export_model` adds ``format`` and ``needs_ops_library``.
    """
    lead_field = head_model.lead_field(modality)
    groups = [int(n) for n in lead_field.channel_groups]
    if int(n_times) < 1:
        raise ValueError(f"n_times must be >= 1, got {n_times}")
    if not float(sfreq) > 0:
        raise ValueError(f"sfreq must be > 0 Hz, got {sfreq}")
    return {
        "modality": modality,
        "ch_names": [str(n) for n in lead_field.ch_names],
        "ch_types": [str(t) for t in lead_field.ch_types],
        "sfreq": float(sfreq),
        "n_times": int(n_times),
        "n_regions": int(head_model.n_regions),
        "region_names": [str(n) for n in head_model.region_names],
        "region_centroids_mm": np.asarray(head_model.region_centroids_mm, dtype=float).tolist(),
        "head_model": str(head_model.name),
        "head_model_sha256": head_model.content_hash,
        # A fused model normalises each modality block on its own, as its data were.
        "normalisation": "deepsif" if len(groups) == 1 else "deepsif-per-modality",
        "channel_groups": groups,
        "input_layout": "channels x times",
        "output_layout": "regions x times",
        "model": model_name,
        "model_hyper": model_hyper or {},
        "fairesi_version": fairesi.__version__,
        "torch_version": torch.__version__,
    }


def with_refinement(model: nn.Module, fused: bool) -> nn.Module:
    """Copy of ``model`` whose spectral-temporal refinement is fused or pure PyTorch.

    The refinement modules hold no weights (only ``tau`` and ``alpha``), so swapping them
    keeps the trained network unchanged.

    Parameters
    ----------
    model : nn.Module
        Any network containing :class:`~fairesi.ops.SpectralTemporalRefine`
        modules (or the fused subclass).
    fused : bool
        True: use ``fairesi.ops.FusedSpectralTemporalRefine`` (needs the op library);
        False: use the pure-PyTorch reference.

    Returns
    -------
    nn.Module
        A deep copy; ``model`` itself is not modified.
    """
    if fused:
        from fairesi.ops import FusedSpectralTemporalRefine as target
    else:
        target = SpectralTemporalRefine
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralTemporalRefine) and type(child) is not target:
                setattr(parent, name, target(child.tau, child.alpha))
    return model


def _calls_fairesi_ops(scripted: torch.jit.ScriptModule) -> bool:
    """Whether the scripted forward calls an op of the ``fairesi`` namespace."""
    return any(node.kind().startswith("fairesi::") for node in scripted.inlined_graph.nodes())


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, Any],
    *,
    format: str = "torchscript",
    fused_op: bool | None = None,
    device: str = "cpu",
    max_batch: int = 1024,
) -> Path:
    """Write ``model`` as a TorchScript archive or an AOTInductor package.

    Parameters
    ----------
    model : nn.Module
        Maps normalised sensor data (B, C, T) to sources (B, R, T); put in eval mode.
    path : path-like
        Output file, written atomically (conventionally ``.pt`` / ``.pt2``).
    metadata : dict
        From :func:`build_metadata`.
    format : {'torchscript', 'aoti'}
        Export format, see the module docstring.
    fused_op : bool or None
        TorchScript only: True exports calls to the fused op (the op library must be
        loaded; the op takes patches of 16 samples), False the pure-PyTorch refinement, None
        the refinement the model was built with (``make_refine`` picks the fused op when its
        library is loaded). AOTInductor always compiles the pure-PyTorch refinement in.
    device : str
        AOTInductor only: ``'cpu'`` or ``'cuda'``, the device the package is compiled for.
        TorchScript archives are device-independent (saved on the CPU).
    max_batch : int
        AOTInductor only: largest batch the package accepts.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    metadata = dict(metadata, format=format)
    if format == "torchscript":
        from fairesi import ops

        if fused_op and not ops.available():
            raise ValueError("fused_op=True, but the fairesi op library is not loaded")
        network = model if fused_op is None else with_refinement(model, bool(fused_op))
        network = copy.deepcopy(network).cpu().eval()
        with _torch_deprecations_silenced():
            scripted = torch.jit.script(network)
        metadata["needs_ops_library"] = _calls_fairesi_ops(scripted)
        with atomic_path(path) as tmp:
            scripted.save(str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
        return path

    if fused_op:
        raise ValueError("fused_op=True is for TorchScript; AOTInductor compiles the refinement in")
    network = with_refinement(model, False).to(device).eval()
    metadata["needs_ops_library"] = False
    example = torch.zeros(2, len(metadata["ch_names"]), metadata["n_times"], device=device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad(), _torch_deprecations_silenced():
        program = torch.export.export(network, (example,), dynamic_shapes={"x": {0: batch}})
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch._inductor.aoti_compile_and_package(
                program,
                package_path=file,
                inductor_configs={"aot_inductor.metadata": {METADATA_FILE: json.dumps(metadata)}},
            )
    return path


def export_checkpoint(
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    *,
    format: str = "torchscript",
    fused_op: bool | None = None,
    device: str = "cpu",
    head_model: Any = None,
) -> Path:
    """Export the model of a training checkpoint with its metadata.

    Parameters
    ----------
    checkpoint : path-like or str
        A ``.pt`` checkpoint written by ``fairesi train``, or ``'pretrained:NAME'`` for a
        model that ships with fairesi (:func:`fairesi.models.pretrained`).
    path : path-like
        Output file.
    format, fused_op, device
        See :func:`export_model`.
    head_model : HeadModel or None
        Head model of the checkpoint; None resolves the one it names (see
        :func:`fairesi.train.load_checkpoint`).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from fairesi.train import load_checkpoint

    if isinstance(checkpoint, str) and checkpoint.startswith("pretrained:"):
        from fairesi.models import pretrained

        ckpt = pretrained(checkpoint.partition(":")[2], head_model=head_model)
    else:
        ckpt = load_checkpoint(checkpoint, head_model=head_model)
    config = ckpt.config
    metadata = build_metadata(
        ckpt.head_model,
        config["head_model"]["modality"],
        int(config["data"]["n_times"]),
        sfreq=float(config["data"].get("sfreq", DEFAULT_SFREQ_HZ)),
        model_name=config["model"]["name"],
        model_hyper=config["model"]["hyper"],
    )
    return export_model(ckpt.model, path, metadata, format=format, fused_op=fused_op, device=device)


def test_epoch(checkpoint: str | os.PathLike, index: int = 0) -> np.ndarray:
    """One raw sensor epoch of a checkpoint's simulated test split, to try an export on.

    Parameters
    ----------
    checkpoint : path-like
        A checkpoint written by ``fairesi train``; its data configuration, seed, head model
        and waveform bank decide the epoch.
    index : int
        Sample index within the test split.

    Returns
    -------
    np.ndarray, shape (n_channels, n_times), float32
        Sensor data before normalisation (lead-field units x mV), as acquisition software
        would pass it to ``fairesi-infer``.
    """
    from fairesi.experiment import synthesizer_for_checkpoint
    from fairesi.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    synth = synthesizer_for_checkpoint(ckpt.config, head_model=ckpt.head_model)
    raw = synth.raw("test", torch.tensor([index]))
    return (raw.sensor_clean + raw.noise)[0].numpy()


def _format_of(path: Path) -> tuple[str, str | None]:
    """``(format, TorchScript metadata text or None)`` of an exported file, from its zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(name.endswith("/archive_format") for name in names):
                return "aoti", None
            if any(name.endswith("/data.pkl") for name in names):
                extra = [n for n in names if n.endswith(f"/extra/{METADATA_FILE}")]
                return "torchscript", archive.read(extra[0]).decode() if extra else None
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a TorchScript or AOTInductor archive") from None
    raise ValueError(f"{path} is neither a TorchScript archive nor an AOTInductor package")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The :data:`METADATA_FILE` of an exported model, without loading the network.

    Parameters
    ----------
    path : path-like
        A ``.pt`` or ``.pt2`` file written by :func:`export_model`.

    Returns
    -------
    dict
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist")
    fmt, text = _format_of(path)
    if fmt == "aoti":
        from torch._C._aoti import AOTIModelPackageLoader

        entries = AOTIModelPackageLoader.load_metadata_from_package(str(path), "model")
        text = entries.get(METADATA_FILE)
    if text is None:
        raise ValueError(f"{path} has no {METADATA_FILE}; export it with `fairesi export`")
    return json.loads(text)


@dataclass
class ExportedModel:
    """An exported model loaded in Python, applied like the C++ runner applies it.

    Attributes
    ----------
    module : callable
        The TorchScript module or AOTInductor package: normalised (B, C, T) -> (B, R, T).
    metadata : dict
        Its :data:`METADATA_FILE`.
    format : str
        ``'torchscript'``, ``'aoti'``, or ``'pytorch'`` (a network of this process, e.g. a
        pretrained one).
    """

    module: Any
    metadata: dict[str, Any]
    format: str

    def __call__(self, epochs: Tensor) -> Tensor:
        """Sources of raw sensor data: (C, T) -> (R, T) or (B, C, T) -> (B, R, T), float32."""
        single = epochs.dim() == 2
        x = epochs.float().unsqueeze(0) if single else epochs.float()
        expected = (len(self.metadata["ch_names"]), self.metadata["n_times"])
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"input of shape {tuple(epochs.shape)} does not fit the model; expected "
                f"(channels, times) or (batch, channels, times) with {expected}"
            )
        groups = self.metadata.get("channel_groups", [x.shape[1]])
        with torch.inference_mode():
            out = self.module(normalise_blocks(x, groups))
        return out[0] if single else out


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Load a ``.pt``/``.pt2`` written by :func:`export_model` (CPU).

    A TorchScript model that calls the fused op needs ``fairesi.ops`` to have loaded the op
    library (``ValueError`` otherwise).
    """
    path = Path(path)
    metadata = read_metadata(path)
    fmt, _ = _format_of(path)
    if fmt == "aoti":
        module = torch._inductor.aoti_load_package(str(path))
    else:
        if metadata.get("needs_ops_library"):
            from fairesi import ops

            if not ops.available():
                raise ValueError(f"{path} calls the fused op, but the fairesi op library is absent")
        with _torch_deprecations_silenced():
            module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
    return ExportedModel(module=module, metadata=metadata, format=fmt)
