"""fairesi._heap: freed memory kept in the heap (glibc), checked in a fresh process each
time, since the setting is process-wide and stays."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fairesi._heap import _glibc, keep_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc")

#: While a new 16 MiB tensor is alive: how much more the C library holds in blocks mapped
#: one by one, before and after keep_freed_memory(32 MiB); and for a 40 MiB tensor after.
PROBE = """
import resource, sys, torch
from fairesi._heap import keep_freed_memory, mmapped_bytes
def mapped_while_alive(mib):
    base = mmapped_bytes()
    t = torch.ones(mib * 2**18)
    held = mmapped_bytes() - base
    del t
    return held
before = mapped_while_alive(16)
assert keep_freed_memory(32 * 2**20) and keep_freed_memory(32 * 2**20)
after = mapped_while_alive(16)
big = mapped_while_alive(40)  # above the threshold: still mapped by itself
print(before, after, big)
"""


def test_keep_freed_memory_serves_large_blocks_from_the_heap():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, after, big = map(int, out.stdout.split())
    assert before >= 16 * 2**20  # glibc's default: its own mapping, unmapped when freed
    assert after < 2**20  # from the heap, kept there when freed
    assert big >= 40 * 2**20


def test_threshold_is_checked():
    for bad in (4096, 2**31):
        with pytest.raises(ValueError, match="between 1 MiB and 1 GiB"):
            keep_freed_memory(bad)
