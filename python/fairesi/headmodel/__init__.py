"""Head models: cortical regions, their geometry and adjacency, and region lead fields.

A :class:`HeadModel` carries everything later stages need about the head: for each of
``R`` cortical regions its name, centroid (mm), mean normal, area and source vertices,
the region adjacency graph (with hop distances and neighbour rings), and one
:class:`LeadField` per modality (``'eeg'``, ``'meg'``) mapping region activity to the
sensors. Region gain is the sum of the fixed-orientation (surface-normal) gains of the
region's source vertices, as in DeepSIF; EEG gains are average-referenced.

Three ways to get one:

:meth:`HeadModel.default`
    The embedded default, loaded from ``fairesi/resources/fsaverage5_994.npz`` (no
    download, well under a second): the fsaverage5 cortex (20,484 pial vertices) with
    DeepSIF's 994-region parcellation (the source space of DeepSIF and FAIR-ESI), EEG on
    the GSN-HydroCel-256 montage (256 channels, average reference) and MEG on the
    Neuromag-306 helmet (102 magnetometers + 204 planar gradiometers). It was built
    with ``fairesi headmodel build --out python/fairesi/resources/fsaverage5_994.npz``
    (:mod:`fairesi.headmodel.build` documents the forward model; the build parameters
    and library versions are in ``HeadModel.default().metadata``).
:meth:`HeadModel.from_forward`
    From a user's MNE :class:`mne.Forward` plus a parcellation (list of
    :class:`mne.Label`); ``fairesi headmodel from-forward`` does this from a forward
    file, with the labels of :mod:`~fairesi.headmodel.parcellation` (docs/own-montage.md).
:meth:`HeadModel.toy`
    A small synthetic model with analytic spherical lead fields, for tests and examples.

Coordinates: centroids are in mm in the source space's MRI (FreeSurfer surface RAS)
frame; sensor positions are in m in the MNE head frame. Gains are in V/(A m) (EEG),
T/(A m) (magnetometers) and T/(m A m) (gradiometers), per unit dipole moment at every
vertex of the region.

Modules, one job each
    :mod:`~fairesi.headmodel.model`
        The containers :class:`LeadField` and :class:`HeadModel` (validation, sizes,
        lead field access, hop distances, rings), :data:`MODALITIES`,
        :data:`UNREACHABLE_HOPS`.
    :mod:`~fairesi.headmodel.io`
        The ``.npz`` file format (save, load, the embedded default file and the format
        version).
    :mod:`~fairesi.headmodel.toy`
        The analytic toy model (sphere EEG and Sarvas MEG gains).
    :mod:`~fairesi.headmodel.from_mne`
        MNE glue: a head model from an :class:`mne.Forward`, :func:`region_geometry`.
    :mod:`~fairesi.headmodel.anatomy` and :mod:`~fairesi.headmodel.build`
        The default model's build: DeepSIF's anatomy (shipped in
        ``fairesi/resources/anatomy/``) as MNE objects, then the conductor, sensors,
        forward models and assembly (run by ``fairesi headmodel build``).
    :mod:`~fairesi.headmodel.parcellation`
        Labels for a user's forward solution: DeepSIF's 994 regions on fsaverage or
        morphed to another subject, or the subject's aparc / aparc.a2009s.

Layering
    This package is the bottom layer of fairesi. It may import numpy, scipy, nibabel,
    tqdm and MNE (MNE, nibabel and tqdm only inside the functions that need them, so
    importing it stays fast) and, of fairesi, only leaf utilities (:mod:`fairesi.io`,
    the version in :mod:`fairesi`). Every other part of fairesi may import it. Within
    the package, :mod:`~fairesi.headmodel.model` imports no sibling at import time (its
    ``save`` / ``load`` / ``default`` / ``toy`` / ``from_forward`` delegate to
    ``io``, ``toy`` and ``from_mne`` when called).
"""

from fairesi.headmodel.anatomy import find_anatomy_dir, read_deepsif_anatomy
from fairesi.headmodel.build import (
    BRAIN_SHELL_MARGIN_MM,
    DEFAULT_NAME,
    EEG_MONTAGE,
    MEG_SYSTEM,
    SPHERE_RELATIVE_RADII,
    SPHERE_SIGMAS,
    build_default_head_model,
)
from fairesi.headmodel.from_mne import region_geometry
from fairesi.headmodel.model import (
    FUSED_MODALITY,
    MODALITIES,
    UNREACHABLE_HOPS,
    HeadModel,
    LeadField,
)

__all__ = [
    "BRAIN_SHELL_MARGIN_MM",
    "DEFAULT_NAME",
    "EEG_MONTAGE",
    "MEG_SYSTEM",
    "FUSED_MODALITY",
    "MODALITIES",
    "SPHERE_RELATIVE_RADII",
    "SPHERE_SIGMAS",
    "UNREACHABLE_HOPS",
    "HeadModel",
    "LeadField",
    "build_default_head_model",
    "find_anatomy_dir",
    "read_deepsif_anatomy",
    "region_geometry",
]
