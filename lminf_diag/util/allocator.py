"""Freed memory kept for reuse: long CPU runs stop paying the kernel for fresh pages.

A forward pass allocates and frees tens of megabytes per layer (activations, attention pieces,
logits). With glibc's default settings a freed block at the top of the heap is handed back to the
operating system once it passes the trim threshold, and the next allocation faults every one of
its pages in again, zero-filled by the kernel: on a 2-core machine a 128k-token capture spent
about a fifth of its time in those page faults. `keep_freed_memory` sets glibc's trim threshold
high (freed memory stays in the process and is reused) and its mmap threshold to the largest
allowed value (blocks below it come from the reusable heap). The peak resident memory is that of
the largest working set, as before; memory freed after the peak is not returned to the system
until the process ends. The `diag` command calls it at start; a notebook may call it once.

Nothing changes on other C libraries or systems (the function returns False), and no result
changes anywhere: only where memory comes from.

Example:
    >>> keep_freed_memory() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's largest mmap threshold (32 MiB)
TRIM = 2**31 - 1  # the largest int mallopt takes: the heap is not trimmed while the process runs

@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (once per process); True when it took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # musl's mallopt ignores both settings and returns 0
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))


__all__ = ["keep_freed_memory"]
