"""A glibc malloc setting that keeps a server's memory flat while it moves large files.

Artifact transfers allocate and free megabyte-sized buffers in several worker threads,
and by default glibc gives each thread an arena of its own that keeps what was freed in
it: the resident size climbed by ~80 MiB during a 1 GiB S3 upload. Two arenas bound
that (~40-57 MiB). A fixed mmap threshold as well cut memory a little more but cost a
third of the throughput, so it is not set. Elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
    return bool(mallopt(_M_ARENA_MAX, 2))
