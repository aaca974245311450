"""How an API key looks, and the forms that name one: the rule the auth service reads
keys and prefixes by, which the client follows too, so that both take the same forms."""

from __future__ import annotations

import re

# `cairn_<prefix>_<secret>`: 12 hex characters of prefix, then 43 URL-safe characters.
KEY = re.compile(r"cairn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# A prefix alone, as key listings show it, or as a key begins (docs/cli.md's form).
PREFIX = re.compile(r"(?:cairn_)?([0-9a-f]{12})")


def prefix_of(key: str) -> str | None:
    """The prefix of a well-formed key, None for anything else."""
    match = KEY.fullmatch(key)
    return match.group(1) if match else None


def as_prefix(key_or_prefix: str) -> str | None:
    """A whole key or just its prefix (bare or after `cairn_`), as the prefix; None when
    it is neither."""
    if match := PREFIX.fullmatch(key_or_prefix):
        return match.group(1)
    return prefix_of(key_or_prefix)
