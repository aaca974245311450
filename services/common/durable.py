"""Making a change of a directory's entries durable, as a database would."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(folder: Path) -> None:
    """Makes the names folder holds durable (a file made or renamed into it), not only
    the files' content: until then a crash may leave the old entries."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
