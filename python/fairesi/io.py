"""File-writing helpers shared by every command that writes results.

Everything fairesi writes (HDF5 banks and datasets, checkpoints, exported models,
tables) goes through :func:`atomic_path`, so an interrupted command never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file lives in the same directory, so the final ``os.replace`` is an
    atomic rename. If the body raises (including ``KeyboardInterrupt``), the temporary
    file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent directory is created if needed.
    overwrite : bool
        If False and ``path`` exists, raise ``FileExistsError`` before doing any work.

    Yields
    ------
    tmp : pathlib.Path
        Where the caller must write the complete file.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
