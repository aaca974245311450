"""Where artifact bytes live: the local filesystem or an S3-compatible object store.

A backend stores bytes under opaque keys and knows nothing of paths: the database row
of an object names the key its bytes are under (see `uploads.py`). Every upload writes
under a key of its own, "_objects/<project>/<xx>/<upload id>", so no two uploads ever
write the same bytes and every valid path is storable whatever its shape. Keys are
relative to the backend's root (a directory, or a bucket and prefix). Every method
blocks; the service runs them on threads of its own (`threads.py`; the minio SDK is
synchronous).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import datetime, timedelta
from typing import Protocol

from ..common.config import Config
from .blobs import KEY_ROOT, MissingBytes, Readable, Unfinished
from .filesystem import FilesystemBackend
from .s3 import S3Backend

__all__ = ["Backend", "MissingBytes", "Unfinished", "from_config", "new_key"]


class Backend(Protocol):
    # Whether clients can move bytes around the service through presigned URLs.
    supports_presign: bool

    def uri(self, key: str) -> str:
        """Where other tools find the bytes, e.g. "s3://bucket/prefix/<key>"."""
        ...

    def write_limit(self, size: int) -> int:
        """The most bytes `write` takes for an upload that announced size (0: unknown);
        on S3 less than the largest object, as the parts it holds in memory have a
        bound. Larger uploads go by direct transfer."""
        ...

    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        """Stores all of source under a key nothing else writes; size (0: unknown) is a
        hint. An error raised by source ends the write, which then stores nothing whole."""
        ...

    def put(self, key: str, content: bytes, content_type: str) -> None:
        """Stores content, whole in memory, under a key nothing else writes."""
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
        return S3Backend(config)
    return FilesystemBackend(config.artifact_dir)
