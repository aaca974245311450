"""Text of the filter language (docs/filters.md) that the client writes itself."""

from __future__ import annotations


def quoted(text: str) -> str:
    """A string literal of the filter language: a quote inside is doubled."""
    return "'" + text.replace("'", "''") + "'"
