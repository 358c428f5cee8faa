"""The installed C++ runner ``fairesi-infer``: where it is, and the console script for it.

The package build installs the executable into ``fairesi/bin/`` (next to ``fairesi/lib/``,
where it finds the op library, and two levels below ``torch/lib``, where it finds libtorch).
Acquisition software calls that executable directly; the ``fairesi-infer`` console script
and ``fairesi infer`` hand their arguments to it unchanged. This module imports nothing
heavy, so the console script starts as fast as Python does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fairesi._build import TorchVersionError, check_torch

__all__ = ["cmake_prefix_path", "exec_runner", "main", "runner_path"]

_RUNNER_NAME = "fairesi-infer"


def runner_path() -> Path:
    """Path of the ``fairesi-infer`` executable installed with the package.

    Returns
    -------
    pathlib.Path
        ``fairesi/bin/fairesi-infer`` inside the package.

    Raises
    ------
    FileNotFoundError
        If the package was built without the runner (``FAIRESI_BUILD_RUNNER=OFF``).
    """
    path = Path(__file__).resolve().parent / "bin" / _RUNNER_NAME
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(
            f"{_RUNNER_NAME} is not installed at {path}; build fairesi with its C++ runner "
            "(pip install --no-build-isolation . with FAIRESI_BUILD_RUNNER=ON)"
        )
    return path


def cmake_prefix_path() -> Path:
    """The CMake prefix of the installed C++ SDK (``find_package(fairesi)``, docs/embedding.md).

    Returns
    -------
    pathlib.Path
        The package directory; it holds ``share/cmake/fairesi/fairesiConfig.cmake``, the
        headers in ``include/fairesi`` and ``lib/libfairesi_runner.a``.

    Raises
    ------
    FileNotFoundError
        If the package was built without the runner (``FAIRESI_BUILD_RUNNER=OFF``).
    """
    root = Path(__file__).resolve().parent
    if not (root / "share" / "cmake" / "fairesi" / "fairesiConfig.cmake").is_file():
        raise FileNotFoundError(
            f"the fairesi C++ SDK is not installed in {root}; build fairesi with its C++ "
            "runner (FAIRESI_BUILD_RUNNER=ON)"
        )
    return root


def exec_runner(args: list[str]) -> None:
    """Replace this process by ``fairesi-infer args...`` (never returns on success).

    Parameters
    ----------
    args : list of str
        Command-line arguments of the runner (see ``fairesi-infer --help``).
    """
    path = runner_path()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [str(path), *args])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fairesi-infer`` console script (and of ``fairesi infer``).

    Parameters
    ----------
    argv : list of str or None
        The runner's arguments; None means ``sys.argv[1:]``.

    Returns
    -------
    int
        2 if the runner is not installed or the installed torch is not the release it was
        built against (one line on stderr); otherwise this process is replaced by it.
    """
    try:
        # The runner links libtorch: another torch than the one it was built against would
        # fail to load with "undefined symbol"; say instead which torch to install.
        check_torch(Path(__file__).resolve().parent / "lib")
        exec_runner(sys.argv[1:] if argv is None else list(argv))
    except (FileNotFoundError, TorchVersionError) as err:
        print(f"fairesi-infer: error: {err}", file=sys.stderr)
        return 2
    return 1  # not reached: exec_runner replaces this process


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
