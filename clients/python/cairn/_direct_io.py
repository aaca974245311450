"""Writing large files around the page cache (O_DIRECT).

Writing a new file through the page cache costs the kernel a fresh page for every 4 KiB
and a copy into it; on virtual machines whose memory is backed lazily that runs at a
few hundred MiB/s, well below the disk. O_DIRECT hands aligned blocks to the disk
instead. Bytes are gathered in an aligned buffer (one copy), written a buffer at a
time; the tail that is not a whole block is written through the page cache. Where
O_DIRECT is refused (tmpfs, some network file systems), files are written as usual.

Shared by the client (downloads) and the artifact service's filesystem backend.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from typing import Protocol

BLOCK = 4096
BUFFER = 4 * 1024 * 1024  # a multiple of BLOCK


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class DirectWriter:
    """A write-only file object for one new file: `write` and `close` (or `with`);
    `fileno` for fsync after `flush`."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._direct = _enable_direct(descriptor)
        self._buffer = mmap.mmap(-1, BUFFER) if self._direct else None
        self._filled = 0
        self.closed = False

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, exclusive: bool = True) -> DirectWriter:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        return cls(os.open(path, flags, 0o644))

    def fileno(self) -> int:
        return self._descriptor

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._buffer is None:
            return _write_all(self._descriptor, data)
        view, written = memoryview(data), 0
        while written < len(view):
            room = BUFFER - self._filled
            piece = view[written : written + room]
            self._buffer[self._filled : self._filled + len(piece)] = piece
            self._filled += len(piece)
            written += len(piece)
            if self._filled == BUFFER:
                self._write_blocks(BUFFER)
                self._filled = 0
        return written

    def _write_blocks(self, count: int) -> None:
        assert self._buffer is not None
        view, done = memoryview(self._buffer)[:count], 0
        try:
            while done < count:
                done += os.write(self._descriptor, view[done:])
        except OSError as error:
            # A file system that accepts the flag but not the writes: the rest through
            # the cache, from where the file's offset stands (after what was written).
            if error.errno != errno.EINVAL or not self._direct:
                raise
            self._through_cache()
            _write_all(self._descriptor, view[done:])

    def _through_cache(self) -> None:
        flags = fcntl.fcntl(self._descriptor, fcntl.F_GETFL)
        fcntl.fcntl(self._descriptor, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        self._direct = False

    def flush(self) -> None:
        """Writes what is buffered: whole blocks directly, the tail through the cache
        (after which the file is written through the cache: flush once, at the end)."""
        if self._buffer is None or not self._filled:
            return
        whole = self._filled - self._filled % BLOCK if self._direct else 0
        if whole:
            self._write_blocks(whole)
        if whole < self._filled:
            if self._direct:
                self._through_cache()
            _write_all(self._descriptor, memoryview(self._buffer)[whole : self._filled])
        self._filled = 0

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            # Closed once the descriptor is, not before the last flush: a writer told
            # closed must not write (the number may be another file's by then).
            self.closed = True
            # The descriptor first, whatever happens to the buffer: a file removed after
            # a failed write keeps its blocks for as long as it stays open.
            os.close(self._descriptor)
            if self._buffer is not None:
                # A failed write's traceback may still hold a view of the buffer, which
                # then goes with the last of them.
                with contextlib.suppress(BufferError):
                    self._buffer.close()

    def __enter__(self) -> DirectWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _enable_direct(descriptor: int) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
    with contextlib.suppress(OSError):
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags | os.O_DIRECT)
        return True
    return False


def _write_all(descriptor: int, data: bytes | bytearray | memoryview | mmap.mmap) -> int:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.write(descriptor, view[done:])
    return done
