"""The filesystem backend: each key is a file under a root directory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import io
import os
import stat
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from cairn._direct_io import DirectWriter

from ..common import logs
from ..common.durable import sync_directory
from ..common.errors import DataLoss, ResourceExhausted, Unavailable
from .blobs import CHUNK, KEY_ROOT, MAX_OBJECT_BYTES, MissingBytes, Readable, Unfinished

SYNC_EVERY = 32 * 1024 * 1024
READ_WINDOW = 32 * 1024 * 1024
# Space an upload's preallocation leaves free on the file system (PostgreSQL may share
# it): the larger of 1 GiB and 5% of it.
FREE_MARGIN_BYTES = 1024**3
FREE_MARGIN_SHARE = 0.05
FALLOC_FL_KEEP_SIZE = 1
_log = logs.get("cairn.artifacts.filesystem")


class FilesystemBackend:
    """A key is a file; an upload creates its file exclusively and syncs it to disk
    before the row that publishes it is written."""

    supports_presign = False

    def write_limit(self, size: int) -> int:
        return MAX_OBJECT_BYTES

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def uri(self, key: str) -> str:
        return self._file(key).as_uri()

    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        target = self._file(key)
        with _store_failures():
            with _created(target) as out, _Syncer(out.fileno()) as syncer:
                _preallocate(out.fileno(), size)
                written = 0
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    syncer.wrote(len(chunk))
                out.flush()
                _check_length(out.fileno(), written)
                syncer.finish()
            sync_directory(target.parent)  # gone with its folder: the janitor's doing

    def put(self, key: str, content: bytes, content_type: str) -> None:
        self.write(key, io.BytesIO(content), content_type, len(content))

    def open(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]:
        try:
            source = self._file(key).open("rb")
        except OSError as error:
            if isinstance(error, FileNotFoundError) or holds_no_file(error):
                raise MissingBytes(key) from None
            raise  # there, but not to be read (EACCES): INTERNAL
        return _chunks(source, offset, length)

    def local_file(self, key: str) -> Path:
        """The file of a key, for the byte endpoint's sendfile."""
        return self._file(key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            # A key through a file holds no bytes either: it stopped the removal of
            # every key after it (an UploadFiles that failed on such a folder, say).
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._file(key).unlink()

    # Presigned URLs need an object store; the servicer refuses them before these run.
    def presign(self, key: str, method: str, expires: timedelta) -> str:
        raise NotImplementedError

    def copy(self, source: str, target: str) -> str:
        raise NotImplementedError

    def digest(self, key: str) -> tuple[str, int]:
        raise NotImplementedError

    def scan(self) -> Iterator[tuple[str, datetime]]:
        """The keys under the root, with their times; an entry whose time cannot be read
        (a link to itself, a folder that cannot be searched) is passed over: it stopped
        the whole scan, and the janitor's removal of every orphan after it, at each pass."""
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = Path(folder, name)
                try:
                    modified = _modified(path)
                except FileNotFoundError:  # removed while walking
                    continue
                except OSError as error:
                    _log.warning("artifact file passed over", path=str(path), error=str(error))
                    continue
                yield path.relative_to(self.root).as_posix(), modified

    def unfinished(self) -> list[Unfinished]:
        return []  # a write goes straight to its key's file, which scan finds

    def abort(self, write: Unfinished) -> None:
        raise NotImplementedError

    def prune(self, before: datetime) -> int:
        """Removes empty folders, deepest first, last changed before the time; a folder's
        time is read before any is removed, as removing one changes its parent's."""
        folders = []
        for folder, _, _ in os.walk(self.root):
            with contextlib.suppress(FileNotFoundError):
                folders.append((Path(folder), _modified(Path(folder))))
        removed = 0
        for path, modified in sorted(folders, key=lambda f: len(f[0].parts), reverse=True):
            # rmdir refuses a folder that is not empty (or no longer there): skipped.
            with contextlib.suppress(OSError):
                if path != self.root and modified < before:
                    path.rmdir()
                    removed += 1
        return removed

    def check_writable(self) -> None:
        """Makes the root and the folder of new keys, then creates, syncs and removes a
        file there as an upload would; raises the OSError of a root that cannot be used
        (a path under /proc, a read-only file system, a file where a folder should be).
        A file left by a crash in between is unreferenced: the janitor removes it."""
        probe = self._file(f"{KEY_ROOT}/.write-check-{uuid.uuid4().hex}")
        with _created(probe) as out:
            out.write(b"cairn")
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()

    def _file(self, key: str) -> Path:
        # As written, not resolved: a folder under the root may be a link (a project's
        # moved to another disk), whose keys resolved elsewhere were refused, INTERNAL.
        target = Path(os.path.normpath(self.root / key))
        # Keys are made by the service; this guards the invariant anyway.
        if not target.is_relative_to(self.root):
            raise ValueError(f"key {key!r} escapes the artifact root")
        return target


@contextlib.contextmanager
def _created(target: Path) -> Iterator[DirectWriter]:
    """A new file, never an existing one; removed again if writing it fails. Its folder
    is made again if the janitor removed it, empty, between mkdir and open. Written
    around the page cache (docs/artifacts.md, "Performance")."""
    for attempt in range(3):
        _make_folders(target.parent)
        try:
            out = DirectWriter.create(target)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        with out:
            yield out
    except BaseException:
        target.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _store_failures() -> Iterator[None]:
    """The file system's failures as answers: full (or over its quota), which an upload
    of anything meets until space is freed; or failing, as a store that may answer
    again."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(
                "STORAGE_FULL",
                "the artifact store's file system is full: nothing was stored; free space "
                "or delete objects, then upload again",
            ) from error
        raise Unavailable(
            "OBJECT_STORE_UNAVAILABLE",
            f"the artifact store's file system failed ({os.strerror(error.errno or 0)}); "
            "call again",
            metadata={"error": errno.errorcode.get(error.errno or 0, "unknown")},
        ) from error


def _load_fallocate() -> object | None:
    """The fallocate(2) of the C library: unlike posix_fallocate, glibc never emulates it
    by writing every block where the file system cannot allocate (it fails instead)."""
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
        return function
    return None


_fallocate = _load_fallocate()


def _preallocate(descriptor: int, size: int) -> None:
    """Allocates an upload's announced size at once, not extent by extent as it grows;
    only a hint (writing decides), so skipped where the file system cannot, and when the
    size would not leave FREE_MARGIN free. The file's length stays what is written."""
    if not size or _fallocate is None:
        return
    disk = os.fstatvfs(descriptor)
    margin = max(FREE_MARGIN_BYTES, FREE_MARGIN_SHARE * disk.f_blocks * disk.f_frsize)
    if size <= disk.f_bavail * disk.f_frsize - margin:
        _fallocate(descriptor, FALLOC_FL_KEEP_SIZE, 0, size)  # type: ignore[operator]


def _check_length(descriptor: int, written: int) -> None:
    """Raises unless the file holds exactly the bytes written: what is published is
    what was hashed, never a file a failed write left longer or shorter."""
    length = os.fstat(descriptor).st_size
    if length != written:
        raise DataLoss(
            "CHECKSUM_MISMATCH",
            f"the stored file has {length} bytes, not the {written} received",
            metadata={"size": str(written), "stored_size": str(length)},
        )


class _Syncer:
    """Syncs a file being written every SYNC_EVERY bytes, in a thread of its own while
    writing goes on, so that the last fsync has only the tail left to write to disk."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cairn-fsync")
        self._pending: Future[None] | None = None
        self._unsynced = 0

    def __enter__(self) -> _Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True)  # before the file is closed

    def wrote(self, count: int) -> None:
        self._unsynced += count
        if self._unsynced >= SYNC_EVERY and (self._pending is None or self._pending.done()):
            self._unsynced = 0
            self._pending = self._thread.submit(os.fdatasync, self._descriptor)

    def finish(self) -> None:
        if self._pending is not None:
            self._pending.result()
        os.fsync(self._descriptor)


def _make_folders(folder: Path) -> None:
    """mkdir -p, syncing the parent of each folder it makes, so that the path to a file
    published after a sync survives a crash of the machine, not only its content."""
    missing = []
    while not _is_folder(folder):
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        sync_directory(made.parent)


def _is_folder(path: Path) -> bool:
    """Whether path is a folder (False: nothing is there), from one look: an upload
    making it between two looks (is_dir, then exists) had it taken for a file, and the
    first uploads to a new project at once failed UNAVAILABLE."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # or a file above it: found next
        return False
    if not stat.S_ISDIR(mode):  # a file where a folder should be: say so, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    return True


def _chunks(source: BinaryIO, offset: int, length: int) -> Generator[bytes, None, None]:
    # An open file keeps its bytes readable even if the key is deleted meanwhile.
    with source:
        source.seek(offset)
        remaining, asked = length, offset
        while remaining > 0:
            # Files written around the page cache are read from disk: ask for the next
            # window ahead of the reads, so the disk works while chunks are sent.
            if asked < offset + length and asked - source.tell() < READ_WINDOW:
                window = min(READ_WINDOW, offset + length - asked)
                os.posix_fadvise(source.fileno(), asked, window, os.POSIX_FADV_WILLNEED)
                asked += window
            chunk = source.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def holds_no_file(error: OSError) -> bool:
    """Whether opening a key's file failed for want of a file there: a folder, a path
    through a file, a link to itself (as a restore by hand may leave), all INTERNAL
    before, where the bytes are as missing as a file deleted."""
    return isinstance(error, (IsADirectoryError, NotADirectoryError)) or error.errno == errno.ELOOP


def _modified(path: Path) -> datetime:
    """The entry's last change; one past what a datetime holds (year 9999, which tmpfs
    and btrfs can keep) is the latest or earliest there is. Its ValueError stopped
    the janitor's scan and prune at the same entry on every pass."""
    seconds = path.stat().st_mtime
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError):
        return (datetime.max if seconds > 0 else datetime.min).replace(tzinfo=UTC)
