"""The auth service's input rules: user ids, key names, roles, expirations."""

from __future__ import annotations

import datetime

from cairn.auth.v1 import auth_pb2 as pb

from ..common import validation
from ..common.errors import invalid_field
from . import keys

MAX_USER_ID_LENGTH = 128
MAX_KEY_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 10_000


def user_id(value: str, field: str = "user_id") -> str:
    """A user id such as "alice" or "alice@example.com": printable, no spaces. Stricter
    than a name: no invisible character may tell two ids that look the same apart."""
    validation.name(value, field, MAX_USER_ID_LENGTH)
    if any(c.isspace() for c in value):
        raise invalid_field(field, "must not contain whitespace")
    if not value.isprintable():
        raise invalid_field(field, "must not contain invisible characters")
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
