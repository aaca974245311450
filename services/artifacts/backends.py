"""Where artifact bytes live: the local filesystem or an S3-compatible object store.

A backend stores bytes under opaque keys and knows nothing of paths: the database row
of an object names the key its bytes are under (see `store.py`). Every upload writes
under a key of its own, "_objects/<project>/<xx>/<upload id>", so no two uploads ever
write the same bytes and every valid path is storable whatever its shape. Keys are
relative to the backend's root (a directory, or a bucket and prefix). Every method
blocks; the servicer runs them in worker threads (the minio SDK is synchronous).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ..common.config import Config

CHUNK = 4 * 1024 * 1024
# No project name starts with "_", so no key of an object stored before keys were
# opaque ("<project>/<path>") lies under this folder.
KEY_ROOT = "_objects"


class Readable(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class MissingBytes(Exception):
    """A key holds no bytes (any more): deleted or replaced since its row was read."""


@dataclass(frozen=True)
class Unfinished:
    key: str
    write_id: str
    started: datetime


class Backend(Protocol):
    # Whether clients can move bytes around the service through presigned URLs.
    supports_presign: bool

    def uri(self, key: str) -> str:
        """Where other tools find the bytes, e.g. "s3://bucket/prefix/<key>"."""
        ...

    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        """Stores all of source under a key nothing else writes; size (0: unknown) is a
        hint. An error raised by source ends the write, which then stores nothing whole."""
        ...

    def open(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]:
        """Chunks of length bytes from offset; raises MissingBytes when the key has none."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Removes the bytes of keys; keys without bytes are skipped."""
        ...

    def presign(self, key: str, method: str, expires: timedelta) -> str: ...

    def copy(self, source: str, target: str) -> str:
        """Copies bytes to a new key inside the store; returns the content type the copy
        was stored with. Raises MissingBytes when source has none."""
        ...

    def digest(self, key: str) -> tuple[str, int]:
        """The sha256 and size of a key's bytes, read through once."""
        ...

    def scan(self) -> Iterator[tuple[str, datetime]]:
        """Every key the backend holds bytes under, with its last modification."""
        ...

    def unfinished(self) -> list[Unfinished]:
        """Writes begun and never completed (S3's multipart uploads)."""
        ...

    def abort(self, write: Unfinished) -> None:
        """Ends an unfinished write; one that completed or ended meanwhile is skipped."""
        ...

    def prune(self, before: datetime) -> int:
        """Removes empty folders last changed before the time; returns how many."""
        ...


def new_key(project: str, upload_id: str) -> str:
    """The key an upload writes under; the id is a fresh uuid in hex."""
    return f"{KEY_ROOT}/{project}/{upload_id[:2]}/{upload_id}"


def from_config(config: Config) -> Backend:
    if config.artifact_backend == "s3":
        from .s3 import S3Backend

        return S3Backend(config)
    from .filesystem import FilesystemBackend

    return FilesystemBackend(config.artifact_dir)
