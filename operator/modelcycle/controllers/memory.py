"""Giving memory back to the system once a burst of objects is gone.

CPython frees the objects of deleted runs and Jobs, but glibc keeps the freed heap for reuse (in one
arena per thread that allocated, and the reconcile and Event threads are many): without help the
operator's RSS stays at its burst peak. Once the watch-fed store has shrunk well below its
high-water mark and then held still for a few seconds (kopf's per-object workers let go of their
last event after 5 idle seconds), a garbage collection and glibc's `malloc_trim(0)` return the free
pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable

logger = logging.getLogger("modelcycle.operator")

MIN_DROP = 100
"""Objects the store must have lost since its high-water mark before memory is given back."""
SETTLE_SECONDS = 6.0
"""How long the store's size must hold still first (kopf's per-object workers idle out in 5 s)."""


M_ARENA_MAX = -8
"""mallopt's parameter number for the most malloc arenas (glibc's malloc.h)."""
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` glibc malloc arenas (default: 8 per core, each thread that allocates may
    get its own, and each keeps its freed memory): the reconcile and Event threads share a few.
    Called before the threads start; False where there is no glibc."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))
    except AttributeError:
        return False


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): free heap pages go back to the system. False where there is none."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:  # not glibc (musl, macOS): nothing to trim
        return False


class Trimmer:
    """Watches the store's size; gives memory back when it shrank and then held still."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        trim: Callable[[], object] = malloc_trim,
        min_drop: int = MIN_DROP,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.clock = clock
        self.trim = trim
        self.min_drop = min_drop
        self.settle_seconds = settle_seconds
        self.high = 0
        self._size = 0
        self._since = clock()

    def observe(self, size: int) -> bool:
        """The store holds `size` objects now; True when memory was given back."""
        now = self.clock()
        if size != self._size:
            self._size, self._since = size, now
        self.high = max(self.high, size)
        if self.high - size < self.min_drop or now - self._since < self.settle_seconds:
            return False
        before = rss_mb()
        gc.collect()
        self.trim()
        logger.info(
            "gave memory back: the store held %d objects at most and holds %d; RSS %.0f -> %.0f MB",
            self.high,
            size,
            before,
            rss_mb(),
        )
        self.high = size
        return True


def rss_mb() -> float:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
