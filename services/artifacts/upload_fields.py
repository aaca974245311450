"""The fields of an upload checked alike however it travels: its sha256, its size and
its content type. Apart from the servicer and from any one way of uploading, since the
streamed upload (`upload_messages.py`), upload tickets and presigned URLs
(`presigned_urls.py`) all hold their requests to them.
"""

from __future__ import annotations

from ..common import validation as common
from ..common.errors import invalid_field
from . import blobs

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 255
_SHA256_HEX = frozenset("0123456789abcdef")


def sha256_field(value: str, field: str) -> str:
    """A sha256 as compared and recorded: lowercase hex ("" when none was sent)."""
    value = value.lower()
    if value and (len(value) != 64 or not set(value) <= _SHA256_HEX):
        raise invalid_field(field, "must be 64 hexadecimal characters")
    return value


def check_size(expected_size: int) -> None:
    """Refuses a declared size no object may have."""
    if not 0 <= expected_size <= blobs.MAX_OBJECT_BYTES:
        raise invalid_field(
            "expected_size", f"must be 0 (unknown) to {blobs.MAX_OBJECT_BYTES} bytes"
        )


def content_type_field(value: str, field: str = "content_type") -> str:
    """A media type as HTTP carries it: printable ASCII."""
    if not value:
        return ""
    if not (value.isascii() and value.isprintable()):
        raise invalid_field(field, "must be printable ASCII, e.g. 'text/csv'")
    return common.name(value, field, MAX_CONTENT_TYPE_LENGTH)
