"""Giving memory back to the operating system after the server held much input and let it go.

Freed receive buffers (64 KiB each for 1 000 parked frames) go back to glibc's heap, not to
the system: whatever the heap allocated after them pins the pages, so the process stays that
big after the clients are gone. ``malloc_trim(0)`` returns every free page of the heap
(``madvise(MADV_DONTNEED)``), wherever it lies. It walks the heap, so it is called only from
the housekeeping tick, and only once the server's held input has fallen by
``trim_memory_after_bytes`` from the most it held since the last trim (docs/hotpath.md,
"Memory").
"""
from __future__ import annotations

import ctypes
import logging
import time

log = logging.getLogger(__name__)


def _load_malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS: nothing to call)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system; False where that cannot be done."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


class MemoryTrimmer:
    """Decides, at each housekeeping tick, whether the heap is worth trimming."""

    __slots__ = ("trim_after_bytes", "trims", "last_trim_seconds")

    def __init__(self, trim_after_bytes: int):
        self.trim_after_bytes = trim_after_bytes     # 0: never
        self.trims = 0
        self.last_trim_seconds = 0.0

    def tick(self, peak_bytes: int, held_bytes: int) -> bool:
        """``peak_bytes``: the most input held since the last trim; True if it trimmed now
        (the caller then counts its peak from ``held_bytes`` again)."""
        dropped = peak_bytes - held_bytes
        if not self.trim_after_bytes or dropped < self.trim_after_bytes:
            return False
        started = time.perf_counter()
        if not release_free_memory():
            return False
        self.last_trim_seconds = time.perf_counter() - started
        self.trims += 1
        log.debug("held input fell by %d bytes: gave free memory back in %.1f ms",
                  dropped, self.last_trim_seconds * 1000)
        return True
