"""Keep freed memory in the process heap for reuse (glibc's ``mallopt``).

By default glibc serves every block above a dynamic threshold (at most 32 MiB) with its
own ``mmap`` and hands it back to the OS when it is freed, and trims the heap's top once
it holds more than twice that threshold. A training step on the CPU allocates and frees
the same large activations and gradients every step, so each step touches fresh pages
again: one page fault per 4 KiB, ~80,000 per step of FAIR-ESI 'wide' on MEG windows of
500 samples, about a quarter of its CPU time (bench/RESULTS.md § ops, "Freed memory kept
for reuse"). :func:`keep_freed_memory` raises the mmap threshold and turns trimming off,
so the heap keeps those blocks and the next step reuses them.

The setting is process-wide and stays until the process ends; the process's resident
memory then stays near its peak instead of shrinking between steps. The trainer applies
it on the CPU (``RunConfig.keep_heap``). Nothing in ``fairesi`` imports this module but
``fairesi.train``; it imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["keep_freed_memory", "mmapped_bytes"]

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

#: Blocks up to this size come from the heap once :func:`keep_freed_memory` ran.
DEFAULT_MMAP_THRESHOLD = 256 * 2**20

_applied: int | None = None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has ``mallopt`` and ``mallinfo2``), loaded
    once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "mallinfo2")):
        return None  # musl and other C libraries: left as they are
    libc.mallinfo2.restype = _Mallinfo2
    return libc


def keep_freed_memory(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap and never trim it.

    Parameters
    ----------
    mmap_threshold : int
        Bytes; blocks larger than this still get their own mapping, returned to the OS
        when freed. Between 1 MiB and 1 GiB.

    Returns
    -------
    applied : bool
        True if the C library took both settings (glibc on Linux); False elsewhere, where
        nothing changes. Calling it again with the same threshold does nothing more.
    """
    global _applied
    if not 2**20 <= mmap_threshold <= 2**30:
        raise ValueError(f"mmap_threshold must be between 1 MiB and 1 GiB, got {mmap_threshold}")
    if _applied == mmap_threshold:
        return True
    libc = _glibc()
    if libc is None:
        return False
    # The threshold first: trimming switched off while blocks above glibc's default
    # threshold (128 KiB once fixed) are still mapped one by one costs more, not less.
    if libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) != 1:
        return False
    if libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return False
    _applied = int(mmap_threshold)
    return True


def mmapped_bytes() -> int | None:
    """Bytes the C library holds in blocks mapped one by one (glibc's ``hblkhd``), or
    None where it is not glibc. A freshly allocated block above the mmap threshold adds
    its size here; one served from the heap does not."""
    libc = _glibc()
    if libc is None:
        return None
    return int(libc.mallinfo2().hblkhd)
