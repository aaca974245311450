"""What every backend shares: the chunk size, where new keys live, the reading side of
an upload, and the errors and records a backend reports in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

CHUNK = 4 * 1024 * 1024
# The largest object: S3's limit, which the filesystem backend keeps too, so that an
# object moves between backends.
MAX_OBJECT_BYTES = 5 * 1024**4
# No project name starts with "_", so no key of an object stored before keys were
# opaque ("<project>/<path>") lies under this folder.
KEY_ROOT = "_objects"


class Readable(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class MissingBytes(Exception):
    """A key holds no bytes (any more): deleted or replaced since its row was read."""


class RefusedParts(Exception):
    """The object store refused to complete a multipart upload with the parts named."""


@dataclass(frozen=True)
class Unfinished:
    """A write a backend began and never completed (an S3 multipart upload)."""

    key: str
    write_id: str
    started: datetime
