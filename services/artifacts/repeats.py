"""Telling a repeat of an upload from another upload under its request id.

A request id that published an object answers its repeats with that object, on every
path (streamed, ticket, byte endpoint, presigned completion). Another upload sent under
the same id, with other bytes, would be answered OK while its bytes were never stored:
it is REQUEST_ID_REUSED instead. What an upload announces is compared first; an upload
that announces no sha256 is compared by its bytes, read to their end and stored nowhere.
"""

from __future__ import annotations

from typing import Protocol

from ..common.errors import InvalidArgument

# How much of a repeated upload's bytes are taken at once to be hashed.
_READ = 1024 * 1024


class Published(Protocol):
    """What a request id published (objects.StoredObject; the store checks repeats as it
    publishes, so this module names no type of its)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def content_type(self) -> str: ...


class Reader(Protocol):
    """A verifying reader of an upload's bytes (streams.VerifyingReader,
    http_requests.ChunkedReader): it hashes what it reads and counts its size."""

    size: int

    def read(self, n: int = -1) -> bytes: ...


def check(done: Published, sha256: str, size: int = 0, content_type: str | None = None) -> None:
    """Refuses an upload under the request id that published done unless it may be its
    repeat: the same bytes (their sha256 and size, where known) of the same type."""
    if (
        (sha256 and done.sha256 != sha256)
        or (size and done.size != size)
        or (content_type is not None and done.content_type != content_type)
    ):
        raise request_id_reused(done)


def read_to_end(reader: Reader, done: Published) -> None:
    """Reads an upload's bytes, storing none; more than done's are another upload's."""
    while reader.read(_READ):
        if reader.size > done.size:
            raise request_id_reused(done)


def request_id_reused(done: Published) -> InvalidArgument:
    return InvalidArgument(
        "REQUEST_ID_REUSED",
        f"this request id published other content at {done.path!r}; "
        "send a new id with every new upload",
        metadata={"path": done.path},
    )
