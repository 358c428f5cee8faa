"""Locate and load the op library ``libfairesi_ops.so`` (built from ``cpp/ops``).

The package's CMake installs the library into ``fairesi/lib/`` (``FAIRESI_INPLACE=ON``
builds put it into ``python/fairesi/lib/``). It is looked for in every directory the
``fairesi`` package is made of: where :func:`importlib.resources.files` of the package finds
``lib/``, then ``lib/`` of each entry of ``fairesi.__path__``. This covers editable installs
(scikit-build-core's redirect mode), where the Python files stay in ``python/fairesi/`` and
the built library lands in ``site-packages/fairesi/lib/``.

The library is loaded once, when this module is first imported, unless the environment
variable ``FAIRESI_NO_OPS=1`` is set; loading it also registers the op's fake kernels
(:mod:`fairesi.ops._fake`). Before loading, the torch the library was built against
(``lib/fairesi_build.json``, see :mod:`fairesi._build`) is compared with the imported one:
another minor release raises :class:`fairesi._build.TorchVersionError` (an ``ImportError``)
whose one-line message says which torch to install, instead of libtorch's ``undefined
symbol``. ``FAIRESI_NO_OPS=1`` skips the library, and so the check: the models then use the
pure-PyTorch reference.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from pathlib import Path

import torch

import fairesi
from fairesi._build import TorchVersionError, check_torch

__all__ = [
    "LIBRARY_FILE",
    "NO_OPS_ENV",
    "PATCH_LEN",
    "TorchVersionError",
    "available",
    "disabled",
    "library_path",
    "search_dirs",
    "unavailable_reason",
]

#: Patch length the fused op handles (FAIR-ESI's L).
PATCH_LEN = 16
#: File name of the op library.
LIBRARY_FILE = "libfairesi_ops.so"
#: Set to "1" to run without the op library (the models then use the PyTorch reference).
NO_OPS_ENV = "FAIRESI_NO_OPS"


def _resource_path() -> Path | None:
    """The library's path as importlib.resources sees the installed package, if on disk.

    For a package spread over several directories (an editable install) ``files()`` is a
    multiplexed path whose ``/`` picks the first directory holding the child.
    """
    try:
        resource = importlib.resources.files("fairesi") / "lib" / LIBRARY_FILE
    except (ModuleNotFoundError, TypeError, ValueError):  # pragma: no cover - defensive
        return None
    return resource if isinstance(resource, Path) else None


def search_dirs() -> list[Path]:
    """Directories searched for :data:`LIBRARY_FILE`, in order, without repeats.

    The ``lib/`` directory that :func:`importlib.resources.files` of the package gives,
    then ``lib/`` of every entry of ``fairesi.__path__``.
    """
    candidates = [Path(entry) / "lib" for entry in getattr(fairesi, "__path__", [])]
    resource = _resource_path()
    if resource is not None:
        candidates.insert(0, resource.parent)
    dirs: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if resolved not in dirs:
            dirs.append(resolved)
    return dirs


def library_path() -> Path | None:
    """Path of the op library, or None when it was not built (or not installed)."""
    for directory in search_dirs():
        path = directory / LIBRARY_FILE
        if path.is_file():
            return path
    return None


def disabled() -> bool:
    """Whether ``FAIRESI_NO_OPS=1`` turns the op library off."""
    return os.environ.get(NO_OPS_ENV) == "1"


def _load() -> bool:
    if disabled():
        return False
    path = library_path()
    if path is None:
        return False
    hint = f"or set {NO_OPS_ENV}=1 to use the pure-PyTorch reference without the op library"
    check_torch(path.parent, torch.__version__, hint=hint)
    try:
        torch.ops.load_library(str(path))
    except OSError as err:  # built against another torch, but no record of which
        if "undefined symbol" not in str(err):
            raise
        raise TorchVersionError(
            f"{path} does not fit the installed torch {torch.__version__} (undefined symbol); "
            f"reinstall or rebuild fairesi against it, {hint}"
        ) from None
    importlib.import_module("fairesi.ops._fake")  # torch.compile's fake kernels
    return True


_LOADED = _load()


def available() -> bool:
    """Whether ``torch.ops.fairesi.spectral_temporal_refine`` is loaded in this process."""
    return _LOADED


def unavailable_reason() -> str | None:
    """Why the op library is not loaded (one line), or None when it is."""
    if available():
        return None
    if disabled():
        return f"{NO_OPS_ENV}=1 is set"
    path = library_path()
    if path is not None:  # FAIRESI_NO_OPS=1 was set when this module was imported
        return f"{path} was not loaded"
    dirs = ", ".join(str(path) for path in search_dirs())
    return f"{LIBRARY_FILE} was not built (looked in {dirs})"
