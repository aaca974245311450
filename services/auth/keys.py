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
import secrets

# The forms a key or prefix is read in are the client's (delete_user_api_key reads them
# too), so that both take the same ones.
from cairn._api_keys import as_prefix, prefix_of

__all__ = ["as_prefix", "digest", "generate", "matches", "prefix_of"]

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


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def matches(key: str, stored: bytes | None) -> bool:
    """Whether key hashes to stored, in time independent of where they differ."""
    return hmac.compare_digest(digest(key), _DECOY_HASH if stored is None else stored)
