"""The torch the compiled parts were built against, and the check against the installed one.

The op library (``fairesi/lib/libfairesi_ops.so``) and the runner (``fairesi/bin/fairesi-infer``)
link against libtorch, whose C++ ABI changes between minor releases. The build records the
torch it compiled against in ``fairesi/lib/fairesi_build.json`` (CMakeLists.txt) and pins it in
the wheel's metadata (``torch==MAJOR.MINOR.*``, build_support/torch_pin.py). Should another
torch be installed all the same, :func:`check_torch` turns what would be an ``undefined
symbol`` error into one line that says what to install.

This module imports neither torch nor numpy (the console scripts use it before anything
heavy); the installed torch's version is read from its distribution metadata.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "BUILD_INFO_FILE",
    "TorchVersionError",
    "built_torch_version",
    "check_torch",
    "installed_torch_version",
    "torch_mismatch",
]

#: Written by the build next to the op library (``fairesi/lib/``).
BUILD_INFO_FILE = "fairesi_build.json"


class TorchVersionError(ImportError, ValueError):
    """The installed torch is not the release fairesi's compiled parts were built against.

    An ``ImportError`` (raised when ``fairesi.ops`` is imported) and a ``ValueError``, so that
    the ``fairesi`` command line reports it as one line with exit code 2, like every error
    the user can fix (fairesi/cli/__init__.py), instead of a traceback.
    """


def built_torch_version(lib_dir: str | Path) -> str | None:
    """The torch version recorded by the build in ``lib_dir``, or None if not recorded."""
    try:
        info = json.loads((Path(lib_dir) / BUILD_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = info.get("torch_version") if isinstance(info, dict) else None
    return value if isinstance(value, str) and value else None


def installed_torch_version() -> str | None:
    """Version of the installed torch distribution (e.g. '2.13.0+cpu'), or None."""
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def _minor(torch_version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", torch_version)
    return (int(match[1]), int(match[2])) if match else None


def torch_mismatch(built: str | None, installed: str | None) -> str | None:
    """One line saying what to install when ``installed`` is not ``built``'s minor release.

    None when they match, or when either version is unknown (nothing to compare).
    """
    if not built or not installed:
        return None
    want, have = _minor(built), _minor(installed)
    if want is None or have is None or want == have:
        return None
    series = f"{want[0]}.{want[1]}"
    return (
        f"fairesi was built against torch {series}.x but torch {installed} is installed; "
        f"pip install 'torch=={series}.*' or rebuild fairesi"
    )


def check_torch(lib_dir: str | Path, installed: str | None = None, hint: str = "") -> None:
    """Raise :class:`TorchVersionError` if the torch recorded in ``lib_dir`` is not installed.

    Parameters
    ----------
    lib_dir : path-like
        Directory holding :data:`BUILD_INFO_FILE` (``fairesi/lib``).
    installed : str or None
        The installed torch's version; None reads it from the distribution metadata.
    hint : str
        Appended to the message (after '; ').
    """
    if installed is None:
        installed = installed_torch_version()
    message = torch_mismatch(built_torch_version(lib_dir), installed)
    if message is not None:
        raise TorchVersionError(f"{message}; {hint}" if hint else message)
