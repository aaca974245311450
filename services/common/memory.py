"""glibc malloc settings that keep a server's memory flat while it moves large files.

Artifact transfers allocate and free megabyte-sized buffers in several worker threads.
By default glibc gives each thread its own arena and raises its mmap threshold after
such frees, so freed buffers stay in arenas and the resident size climbs by tens of
MiB per transfer. Two arenas and a fixed 4 MiB mmap threshold hand large buffers (S3
parts, download chunks) back to the system at once, while 1 MiB upload chunks still
come from the heap cheaply. Elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_for_large_buffers() -> bool:
    """Applies the settings; True when glibc accepted them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, 2)) and bool(mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024))
