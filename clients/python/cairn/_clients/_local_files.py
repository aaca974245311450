"""The local side of a transfer: what an upload reads (a source) and the file a
download lands in."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from .. import _direct_io
from .._direct_io import DirectWriter
from ..exceptions import DataLossError

Source = str | os.PathLike[str] | bytes | BinaryIO
# Sources that can be read again from the start, and by position; a file object is
# read once, in order.
Resendable = (str, os.PathLike, bytes, bytearray, memoryview)


def file_for(path: Path, size: int) -> BinaryIO | DirectWriter:
    """A new file to download into: large ones are written around the page cache."""
    if size >= _direct_io.BUFFER:
        return DirectWriter.create(path, exclusive=False)
    return path.open("wb")


def check_length(path: Path, size: int) -> None:
    """Raises unless the file holds exactly the size received (a write that failed
    half-way must not leave a file the checksum was not computed over)."""
    length = path.stat().st_size
    if length != size:
        raise DataLossError(
            f"{path} holds {length} bytes, not the {size} received",
            reason="CHECKSUM_MISMATCH",
            metadata={"size": str(size), "stored_size": str(length)},
        )


def open_source(source: Source) -> tuple[BinaryIO, int | None, str, bool]:
    """A readable stream, its size when known, its sha256 when cheaply known, and
    whether this client opened it (and so closes it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), True
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.open("rb"), path.stat().st_size, "", True
    return source, None, "", False


def size_of(source: Source) -> int | None:
    """The size an upload will have, when known before reading it (not for a file object)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    return None
