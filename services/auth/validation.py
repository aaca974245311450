"""The auth service's input rules: user ids, key names, roles, expirations."""

from __future__ import annotations

import datetime
import unicodedata

from cairn import _names as names
from cairn.auth.v1 import auth_pb2 as pb

from ..common import validation
from ..common.errors import invalid_field
from . import keys

MAX_USER_ID_LENGTH = 128
MAX_KEY_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 10_000


def user_id(value: str, field: str = "user_id") -> str:
    """A user id such as "alice" or "alice@example.com", as it names one who may hold
    roles or keys: printable, no spaces. (Not the rule of names, whose ends it has
    tightened since: an id given before must still be found and removed.)"""
    if not value:
        raise invalid_field(field, "must not be empty")
    if len(value) > MAX_USER_ID_LENGTH:
        raise invalid_field(
            field, f"must be at most {MAX_USER_ID_LENGTH} characters, got {len(value)}"
        )
    if any(c.isspace() for c in value):
        raise invalid_field(field, "must not contain whitespace")
    if not value.isprintable():
        raise invalid_field(field, "must not contain invisible characters")
    return value


def new_user_id(value: str, field: str = "user_id") -> str:
    """A user id given a role or a key, stricter than one looked up or removed (which
    may have been given before this rule): no character that shows as nothing, which
    `isprintable` lets through (a Hangul filler, a blank Braille pattern), and composed
    (NFC), so that no two ids that look the same are two users."""
    validation.name(value, field, MAX_USER_ID_LENGTH)
    user_id(value, field)
    if names.shows_nothing_somewhere(value):
        raise invalid_field(field, "must not contain invisible characters")
    if not unicodedata.is_normalized("NFC", value):
        raise invalid_field(field, "must be in composed form (Unicode NFC)")
    return value


def new_project_name(value: str) -> str:
    if not value:
        raise invalid_field("name", "must not be empty")
    return validation.project(value, "name")


def description(value: str) -> str:
    return validation.text(value, "description", MAX_DESCRIPTION_LENGTH)


def key_name(value: str) -> str:
    return validation.name(value, "name", MAX_KEY_NAME_LENGTH)


_EXPIRATIONS: dict[int, str] = {
    pb.API_KEY_EXPIRATION_30_DAYS: "30d",
    pb.API_KEY_EXPIRATION_90_DAYS: "90d",
    pb.API_KEY_EXPIRATION_1_YEAR: "1y",
    pb.API_KEY_EXPIRATION_NEVER: "never",
}


def lifetime(expiration: int) -> datetime.timedelta | None:
    if expiration not in _EXPIRATIONS:
        raise invalid_field("expiration", "choose 30 days, 90 days, 1 year or never")
    return keys.LIFETIMES[_EXPIRATIONS[expiration]]


def role(value: int) -> int:
    if value not in (pb.PROJECT_ROLE_VIEWER, pb.PROJECT_ROLE_EDITOR, pb.PROJECT_ROLE_ADMIN):
        raise invalid_field("role", "must be viewer, editor or admin")
    return value


def key_prefix(value: str) -> str:
    prefix = keys.as_prefix(value)
    if prefix is None:
        raise invalid_field("api_key", "must be an API key or its 12-character prefix")
    return prefix
