"""Paired (sensor, source) samples for training and evaluating ESI networks.

What lives here, one job per module (each imports only those above it)::

    config    SimConfig, SPLITS, PRESETS: what a simulated dataset is (no torch)
    growth    DeepSIF's candidate source patches: a fixed set of grown patches per centre
              (numpy only)
    rng       the counter-based random numbers: hash, uniforms, per-sample and per-draw
              keys, standard normals (torch on any device, fused numba on CPU)
    batch     Batch, RawBatch, normalise_input (DeepSIF normalisation) and
              scatter_regions, the one scatter of sparse patch-region values into the
              dense (B, R, T) target, shared by the synthesizer and the HDF5 reader
    synth     Synthesizer: samples as pure functions of (seed, split, index, draw); the
              simulation recipe (background, patches, spikes, source SNR, noise) is
              documented there
    sampling  epoch_order and iter_batches (epochs for the training loop: exact resume,
              redraws, per-rank slices), SynthDataset + collate_batch for DataLoader
    h5        write_dataset / merge_datasets / DatasetFile: HDF5 files of samples
    parallel  write_dataset_dask: one file written by the workers of a Dask cluster
              (parts merged by merge_datasets)
    files     DatasetSplits: the files of one dataset (one per split) as a batch source
              for iter_batches (``fairesi train --data``)

Layering: this package may import :mod:`fairesi.headmodel` and :mod:`fairesi.simulate`
(for type hints only), :mod:`fairesi.io` and ``fairesi.__version__`` (when writing
files), and :mod:`fairesi.cluster` (Dask tasks, in ``parallel``); :mod:`fairesi.models`,
:mod:`fairesi.train`, :mod:`fairesi.evaluate` and the
other consumers import it, never the reverse.

Every public name is re-exported here, so ``from fairesi.data import SimConfig,
Synthesizer, iter_batches, write_dataset, DatasetFile, ...`` is the usual import.
"""

from fairesi.data.batch import (
    Batch,
    RawBatch,
    normalise_blocks,
    normalise_input,
    stack_modalities,
)
from fairesi.data.config import PRESETS, SPLITS, SimConfig, parse_mixture
from fairesi.data.files import DatasetSplits
from fairesi.data.h5 import DatasetFile, merge_datasets, write_dataset
from fairesi.data.parallel import write_dataset_dask
from fairesi.data.sampling import SynthDataset, collate_batch, epoch_order, iter_batches
from fairesi.data.synth import Synthesizer

__all__ = [
    "PRESETS",
    "SPLITS",
    "Batch",
    "DatasetFile",
    "DatasetSplits",
    "RawBatch",
    "SimConfig",
    "parse_mixture",
    "SynthDataset",
    "Synthesizer",
    "collate_batch",
    "epoch_order",
    "iter_batches",
    "merge_datasets",
    "normalise_blocks",
    "normalise_input",
    "stack_modalities",
    "write_dataset",
    "write_dataset_dask",
]
