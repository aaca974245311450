"""Opaque keyset page tokens.

A token holds the sort key of the last row of a page and a fingerprint of the query
(filter, order, scope) it belongs to. The next page starts strictly after that key, so
rows inserted meanwhile never shift a page the way OFFSET does; a token reused with
another query, or mangled, is INVALID_ARGUMENT (INVALID_PAGE_TOKEN).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import invalid_field

MAX_TOKEN_LENGTH = 4096
T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list; next_page_token is empty on the last page."""

    items: list[T]
    next_page_token: str


def fingerprint(*parts: Any) -> str:
    """A short, stable digest of everything that defines a query's result order."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(query_fingerprint: str, last_key: Sequence[Any]) -> str:
    payload = json.dumps({"q": query_fingerprint, "k": list(last_key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(token: str, query_fingerprint: str, field: str = "page_token") -> list[Any] | None:
    """The last key of the previous page, or None for an empty token (the first page)."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("too long")
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, owner = payload["k"], payload["q"]
        if not isinstance(key, list):
            raise ValueError("no key")
    except (ValueError, KeyError, TypeError):
        raise invalid_field(field, "malformed page token", "INVALID_PAGE_TOKEN") from None
    if owner != query_fingerprint:
        raise invalid_field(
            field,
            "page token belongs to a different query (filter, order or scope)",
            "INVALID_PAGE_TOKEN",
        )
    return key


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise invalid_field(field, "must not be negative")
    if requested > maximum:
        raise invalid_field(field, f"must be at most {maximum}")
    return requested or default
