"""Checks every service applies to what it receives: projects, names, keys, sizes."""

from __future__ import annotations

import re
import uuid

from cairn import _names as names

from .errors import invalid_field

DEFAULT_PROJECT = "default"
_PROJECT = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
# Ids as the services write them: lower-case hexadecimal digits, alone (uuid.hex) or
# hyphenated (str(uuid)).
_HEX_UUID = re.compile(r"[0-9a-f]{32}")
_HYPHENATED_UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def project(value: str, field: str = "project") -> str:
    """The project a request names; empty means "default"."""
    if not value:
        return DEFAULT_PROJECT
    if not _PROJECT.fullmatch(value):
        raise invalid_field(
            field,
            "must be 1-63 lowercase letters, digits, '-' or '_', starting and ending "
            "with a letter or digit",
        )
    return value


def uuid_as_written(value: str, *, hyphenated: bool = False) -> uuid.UUID | None:
    """The id value spells if the services write ids so (uuid.hex, or str(uuid) when
    hyphenated), else None. uuid.UUID also reads braces, "urn:uuid:", capitals, other
    scripts' digits, underscores and a space or "+" before it: one id had many
    spellings, and a mistyped one named another."""
    pattern = _HYPHENATED_UUID if hyphenated else _HEX_UUID
    return uuid.UUID(value) if pattern.fullmatch(value) else None


def uuid_field(value: str, field: str, what: str) -> uuid.UUID:
    """An id a service answered as uuid.hex (what says which); INVALID_ARGUMENT naming
    field for any other text."""
    found = uuid_as_written(value)
    if found is None:
        raise invalid_field(field, f"must be {what}")
    return found


def name(value: str, field: str, max_length: int = 256) -> str:
    """A required single-line name without control characters or surrounding
    whitespace (cairn._names, which the client checks too)."""
    if problem := names.problem(value, max_length):
        raise invalid_field(field, problem)
    return value


def text(value: str, field: str, max_length: int) -> str:
    """Free text (may be empty or multi-line) up to a length, without NUL characters."""
    if len(value) > max_length:
        raise invalid_field(field, f"must be at most {max_length} characters, got {len(value)}")
    if "\x00" in value:
        raise invalid_field(field, "must not contain NUL characters")
    return value
