"""Artifact paths: relative, "/"-separated, checked before anything touches storage."""

from __future__ import annotations

from cairn import _names as names

from ..common.errors import invalid_field

# In UTF-8 bytes, as S3 caps its keys: a path is part of a btree key, which PostgreSQL
# caps in bytes, so a cap in characters let 1,000 CJK characters reach INTERNAL.
MAX_PATH_BYTES = 1024


def object_path(value: str, field: str = "path") -> str:
    """A path naming one object: no leading or trailing "/", no "." or ".." segments."""
    _check_text(value, field)
    if value.endswith("/"):
        raise invalid_field(field, "names an object, so it must not end with '/'", "INVALID_PATH")
    _check_segments(value.split("/"), field)
    return value


def new_object_path(value: str, field: str = "path") -> str:
    """A path an upload writes to: an object path no segment of which starts or ends
    with an invisible character, as names and keys may not: "data.csv" after a
    byte-order mark (U+FEFF) a file read left cannot be told from "data.csv". Spaces
    there stay: file systems hold them. Reads and deletes take any object path, so an
    object stored before this rule is still reached, and a path no upload can make
    finds nothing."""
    object_path(value, field)
    if any(names.invisible_at_an_end(segment) for segment in value.split("/")):
        raise invalid_field(
            field,
            "must not have a segment that starts or ends with an invisible character",
            "INVALID_PATH",
        )
    return value


def prefix(value: str, field: str = "prefix") -> str:
    """A prefix to list under, as S3 takes one: empty, or a path that may end with "/".
    Its last part, unless it ends with "/", may be the start of a name: "." finds
    ".env", which a check of it as a whole segment refused."""
    if not value:
        return ""
    _check_text(value, field)
    _check_segments(value.split("/")[:-1], field)
    return value


def directory(value: str, field: str = "path") -> str:
    """A directory to delete under, as "<path>/": never a raw prefix, as deleting "run1"
    must not take "run10/"; never empty, as no call deletes a whole project."""
    _check_text(value, field)
    _check_segments(value.removesuffix("/").split("/"), field)
    return value.removesuffix("/") + "/"


def _check_text(value: str, field: str) -> None:
    if not value:
        raise invalid_field(field, "must not be empty", "INVALID_PATH")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise invalid_field(
            field, f"must be at most {MAX_PATH_BYTES} bytes in UTF-8", "INVALID_PATH"
        )
    if value.startswith("/"):
        raise invalid_field(field, "must be relative (no leading '/')", "INVALID_PATH")
    if "\\" in value:
        raise invalid_field(field, "must use '/' as separator, not '\\'", "INVALID_PATH")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid_field(field, "must not contain NUL or control characters", "INVALID_PATH")


def _check_segments(segments: list[str], field: str) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise invalid_field(
                field, "must not contain empty, '.' or '..' segments", "INVALID_PATH"
            )
