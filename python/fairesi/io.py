"""File helpers shared by every command that writes results or reads user files.

Everything fairesi writes (HDF5 banks and datasets, checkpoints, exported models,
tables) goes through :func:`atomic_path`, so an interrupted command never leaves a
half-written file under the final name. Every HDF5 file fairesi reads has its metadata
read once in a child process first (:func:`check_hdf5_metadata`), because a damaged file
can make libhdf5 loop forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file lives in the same directory, so the final ``os.replace`` is an
    atomic rename; the file and then the directory are fsynced, so the result survives a
    power cut once this returns. If the body raises (including ``KeyboardInterrupt``), the
    temporary file is removed and ``path`` is left as it was. Temporary files of the same
    output left by a writer that was killed (``.NAME.PID.*.part`` of a process that no
    longer runs) are removed first.

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
    _remove_stale_parts(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_parts(path: Path) -> None:
    """Remove ``.NAME.PID.*.part`` files next to ``path`` whose writer process is gone."""
    for part in path.parent.glob(f".{path.name}.*.part"):
        pid_text = part.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:  # the writer is gone: its part is litter
            part.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def check_not_an_input(
    output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]
) -> None:
    """Refuse, before any work, an output path that names one of the command's inputs.

    Two paths name the same file when they resolve to the same path or, both existing,
    to the same inode (``os.path.samefile``: symlinks, hard links, other spellings).

    Parameters
    ----------
    output : path-like
        The file a command is about to write.
    inputs : dict
        What each input is (e.g. ``'--bank'``) -> its path (None is skipped).

    Raises
    ------
    ValueError
        One line naming the output and the input it would replace.
    """
    out = Path(output)
    for what, path in inputs.items():
        if path is None:
            continue
        source = Path(path)
        same = out.resolve() == source.resolve()
        if not same and out.exists() and source.exists():
            same = os.path.samefile(out, source)
        if same:
            raise ValueError(
                f"the output {out} is the input {what} ({source}); writing it would replace "
                "that input: choose another output path"
            )


def check_output_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output that could not be written.

    The folder that will receive ``path`` (``path`` itself when it is an existing folder,
    else the nearest existing folder above it, where missing folders would be created)
    must be a folder this process may create files in. Nothing is created.

    Parameters
    ----------
    path : path-like
        An output file or folder.

    Raises
    ------
    ValueError
        One line naming the folder and why (read-only, permission denied, not a folder).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(
            f"cannot write {path}: {folder} is a file, not a folder; choose another output"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_mount(folder) else "permission denied"
        raise ValueError(
            f"cannot write {path}: the folder {folder} is not writable ({why}); choose "
            "another output or make the folder writable"
        )


def _read_only_mount(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, *, directory: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on an output (a file or a run directory) while it is written.

    A second writer of the same output, in this or another process, gets a ``ValueError``
    at once that names the process holding it. The lock is ``.NAME.lock`` next to the
    output (``fcntl.flock``, released by the system if the writer dies) and is removed
    when the writer is done.

    Parameters
    ----------
    path : path-like
        The output file or directory.
    directory : bool
        Whether the output is a directory (a training run); an output file that names an
        existing directory is refused at once, before any work.
    """
    import fcntl

    path = Path(path)
    if not directory and path.is_dir():
        raise ValueError(
            f"the output {path} is an existing folder; give the path of a file (inside it or "
            "elsewhere)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    handle = open(lock, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(
                f"{path} is being written by {holder}; wait for it or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        handle.close()


def load_weights_only(
    path: str | os.PathLike, what: str, *, map_location: Any = "cpu", hint: str = ""
) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Parameters
    ----------
    path : path-like
        A file written by ``torch.save`` of plain containers and tensors.
    what : str
        What the file is, for the messages (e.g. ``'checkpoint'``).
    map_location
        Where tensors are placed.
    hint : str
        Appended to the message of a corrupt file (what to do about it).

    Raises
    ------
    ValueError
        The file holds Python objects a weights-only load refuses, or it is corrupt or
        truncated.
    """
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # A garbage file whose first byte happens to be pickle's PROTO opcode makes
            # torch warn about the "protocol" before failing: the error below says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # torch refused objects, not a broken file
            raise ValueError(
                f"{path} holds Python objects beyond plain tensors and containers, which a "
                f"safe (weights-only) load refuses: it is not a fairesi {what}"
            ) from None
        detail = "UnpicklingError"
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes torch.load raise
        # RuntimeError, EOFError, BadZipFile, OSError, and from the weights-only unpickler
        # on damaged bytes also IndexError, KeyError, UnicodeDecodeError, ...
        first = str(err).splitlines()[0] if str(err) else ""
        detail = f"{type(err).__name__}: {first}"
    raise ValueError(f"{what} {path} is corrupt or truncated and cannot be read ({detail}){hint}")


#: Seconds the child of :func:`check_hdf5_metadata` may take (a healthy file: milliseconds).
HDF5_METADATA_TIMEOUT_S = 60.0
#: Files whose metadata was read in full: (device, inode, size, mtime) of each.
_HDF5_CHECKED: set[tuple[int, int, int, int]] = set()


def check_hdf5_metadata(path: str | os.PathLike, timeout: float | None = None) -> None:
    """Refuse an HDF5 file on which libhdf5 hangs, before this process reads it.

    Some damaged files (e.g. a corrupted global heap behind a variable-length string
    attribute) make libhdf5 loop forever inside one call, which ignores signals, so the
    command reading them could never finish. This reads every attribute of the file and of
    its datasets, and every variable-length (string) dataset, in a forked child process; if
    the child has not finished within ``timeout`` seconds it is killed and the file is
    refused. Any other failure of the child is left to the caller's own reading, which
    reports it. A file that passed (same inode, size and modification time) is not read
    again in this process.

    Parameters
    ----------
    path : path-like
        An existing HDF5 file.
    timeout : float or None
        Seconds (default :data:`HDF5_METADATA_TIMEOUT_S`).

    Raises
    ------
    ValueError
        One line naming the file, if reading its metadata did not finish in time.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return  # the caller reports a missing or unreadable file
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _HDF5_CHECKED or not hasattr(os, "fork"):
        return
    timeout = HDF5_METADATA_TIMEOUT_S if timeout is None else float(timeout)
    with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: read, then leave without running any Python clean-up
        code = 1
        try:
            _read_hdf5_metadata(path)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ValueError(
                f"{path} is damaged: libhdf5 did not finish reading its metadata within "
                f"{timeout:g} s (a corrupted file can make it loop forever); write the file "
                "again"
            )
        time.sleep(delay)
        delay = min(2 * delay, 0.05)
    if os.waitstatus_to_exitcode(status) == 0:
        _HDF5_CHECKED.add(key)


def _read_hdf5_metadata(path: Path) -> None:
    """Read every attribute of ``path``'s groups and datasets and every variable-length
    dataset (the parts of an HDF5 file that live in its heaps)."""
    import h5py

    def read(name: str, obj: Any) -> None:
        for key in obj.attrs:
            obj.attrs[key]
        if isinstance(obj, h5py.Dataset) and h5py.check_vlen_dtype(obj.dtype) is not None:
            obj[()]

    with h5py.File(path, "r") as f:
        read("/", f)
        f.visititems(read)
