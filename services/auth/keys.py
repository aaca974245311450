"""API keys: how they look, how they are made, and what is stored of them.

A key reads `cairn_<prefix>_<secret>`: 12 hex characters of prefix, public, which name
the key in listings and logs, then 43 URL-safe characters (256 random bits) of secret.
Only the SHA-256 of the whole key is stored. A slow password hash (bcrypt, argon2)
protects guessable secrets; a key has 256 random bits, so one SHA-256 is as safe to
store and costs a microsecond on every call instead of tens of milliseconds.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets

_KEY = re.compile(r"cairn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# A prefix alone, as key listings show it, or as a key begins (docs/cli.md's form).
_PREFIX = re.compile(r"(?:cairn_)?([0-9a-f]{12})")
# Compared against when no key has the prefix: the comparison runs either way.
_DECOY_HASH = hashlib.sha256(b"no key has this hash").digest()

# ML cube's fixed choices, by the names the command line takes.
LIFETIMES: dict[str, datetime.timedelta | None] = {
    "30d": datetime.timedelta(days=30),
    "90d": datetime.timedelta(days=90),
    "1y": datetime.timedelta(days=365),
    "never": None,
}


def generate() -> tuple[str, str]:
    """A new key and its prefix."""
    prefix = secrets.token_hex(6)
    return f"cairn_{prefix}_{secrets.token_urlsafe(32)}", prefix


def prefix_of(key: str) -> str | None:
    """The prefix of a well-formed key, None for anything else."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def as_prefix(key_or_prefix: str) -> str | None:
    """A whole key or just its prefix, as the prefix; None when it is neither."""
    if match := _PREFIX.fullmatch(key_or_prefix):
        return match.group(1)
    return prefix_of(key_or_prefix)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def matches(key: str, stored: bytes | None) -> bool:
    """Whether key hashes to stored, in time independent of where they differ."""
    return hmac.compare_digest(digest(key), _DECOY_HASH if stored is None else stored)
