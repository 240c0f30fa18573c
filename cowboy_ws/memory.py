"""Allocator settings for a server process (glibc only).

glibc hands freed heap back to the OS once the free top of the heap exceeds
128 KiB (``M_TRIM_THRESHOLD``) and serves every block of 128 KiB or more with
a fresh ``mmap`` (``M_MMAP_THRESHOLD``).  A WebSocket server allocates and frees
a payload per message, so with those defaults a large-message echo page-faults
several times per message (measured: bench/README.md).  :func:`tune_malloc`
raises both thresholds, as the environment
variables ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` would;
``COWBOY_WS_MALLOC=system`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

#: Keep up to this much free memory at the top of the heap instead of trimming it.
TRIM_THRESHOLD = 16 * 1024 * 1024
#: Serve blocks below this size from the heap (reused) rather than a fresh mmap.
MMAP_THRESHOLD = 4 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3

_done = False


def tune_malloc() -> bool:
    """Apply the thresholds once per process; True if they were applied."""
    global _done
    if _done or os.environ.get("COWBOY_WS_MALLOC", "") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    _done = True
    log.debug("glibc malloc thresholds: trim %d, mmap %d (%s)", TRIM_THRESHOLD, MMAP_THRESHOLD,
              "applied" if ok else "refused")
    return ok
