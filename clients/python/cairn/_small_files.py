"""The files a setting names (root certificates, a profile file), read whole: at most
MAX_BYTES of them. A device named by mistake (/dev/zero) was read without end before
its content was looked at, a gigabyte in seconds. A pipe (`<(cat ca.pem)`, /dev/stdin)
is read as a file is, so a secret can come from one."""

from __future__ import annotations

import errno
import os
import stat

MAX_BYTES = 1024 * 1024  # far more than any bundle of certificates or file of profiles


def read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the file at path.

    Raises:
        OSError: path is a directory, holds more than MAX_BYTES, or cannot be read;
            `strerror` says which.
    """
    if stat.S_ISDIR(os.stat(path).st_mode):
        raise OSError(errno.EISDIR, "a directory", str(path))
    with open(path, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(errno.EFBIG, f"more than {MAX_BYTES} bytes", str(path))
    return data
