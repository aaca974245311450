"""A published object as the store records it, and the errors that name one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..common.errors import AlreadyExists, DataLoss

OBJECT_COLUMNS = "project, path, size, sha256, content_type, storage_key, create_time, update_time"


@dataclass(frozen=True)
class StoredObject:
    project: str
    path: str
    size: int
    sha256: str
    content_type: str
    storage_key: str
    create_time: datetime
    update_time: datetime


def already_exists(path: str) -> AlreadyExists:
    return AlreadyExists(
        "OBJECT_ALREADY_EXISTS",
        f"an object exists at {path!r}; upload with overwrite to replace it",
        metadata={"path": path},
    )


def bytes_missing(path: str) -> DataLoss:
    """A recorded object's bytes the store holds none or fewer of: removed or cut short
    behind the service's back. Whichever path reads them says so alike."""
    return DataLoss(
        "OBJECT_BYTES_MISSING",
        f"the bytes of {path!r} are missing from the artifact store",
        metadata={"path": path},
    )
