"""Checks every service applies to what it receives: projects, names, keys, sizes."""

from __future__ import annotations

import re
import uuid

from cairn import _names as names

from .errors import invalid_field

DEFAULT_PROJECT = "default"
_PROJECT = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
# A uuid as the services answer one (32 hexadecimal digits) or in its hyphenated form.
_UUID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


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


def uuid_field(value: str, field: str, what: str) -> uuid.UUID:
    """An id a service answered (what says which), as uuid.UUID reads it only when
    spelt so: it also reads braces, "urn:uuid:", other scripts' digits, underscores and
    a space or "+" before it, so that an id mistyped named another, or one id many."""
    if not _UUID.fullmatch(value):
        raise invalid_field(field, f"must be {what}")
    return uuid.UUID(value)


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
