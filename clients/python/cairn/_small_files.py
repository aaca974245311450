"""The files a setting names (root certificates, a profile file), read whole: a regular
file of at most MAX_BYTES. Anything else named by mistake was read without end before
its content was looked at (/dev/zero: a gigabyte in seconds), or blocked the read for
ever (a FIFO no one writes to)."""

from __future__ import annotations

import errno
import os
import stat

MAX_BYTES = 1024 * 1024  # far more than any bundle of certificates or file of profiles


def read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the file at path.

    Raises:
        OSError: path is no regular file, holds more than MAX_BYTES, or cannot be read;
            `strerror` says which.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):  # stat, not open: opening a FIFO blocks
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(errno.EFBIG, f"more than {MAX_BYTES} bytes", str(path))
    return data
