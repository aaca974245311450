"""The auth service's input rules: user ids, key names, roles, expirations."""

from __future__ import annotations

import datetime
import unicodedata

from cairn import _names as names
from cairn.auth.v1 import auth_pb2 as pb

from ..common import validation
from ..common.errors import InvalidArgument, invalid_field
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
    `isprintable` lets through (a Hangul filler, a blank Braille pattern), composed
    (NFC) of no variant of a plain character (NFKC: fullwidth, small or mathematical
    forms), beginning with no combining mark (Unicode category M), and letters of one
    script (`_mixed_scripts`), so that an id that looks like another is not a second
    user beside it."""
    validation.name(value, field, MAX_USER_ID_LENGTH)
    user_id(value, field)
    if names.shows_nothing_somewhere(value):
        raise invalid_field(field, "must not contain invisible characters")
    if unicodedata.category(value[0]).startswith("M"):
        # Drawn onto whatever comes before it in a listing (an accent on the end of the
        # id above, say), it makes the id look like another.
        mark = f"{value[0]!r} ({unicodedata.name(value[0], '?')})"
        raise invalid_field(field, f"must not begin with a combining mark: {mark}")
    if not unicodedata.is_normalized("NFC", value):
        raise invalid_field(field, "must be in composed form (Unicode NFC)")
    if not unicodedata.is_normalized("NFKC", value):
        # A fullwidth or small @, a one-dot leader for a dot, a mathematical 1: each
        # drawn as the plain character, which a user's id holds (PRECIS's identifiers,
        # RFC 8264, leave such characters out too).
        raise invalid_field(field, f"must not hold a variant of a plain character {_plain(value)}")
    if mixed := _mixed_scripts(value):
        shown = ", ".join(f"{char!r} ({unicodedata.name(char, '?')})" for char in mixed)
        raise invalid_field(
            field,
            f"must not mix the letters of different scripts, which look alike: {shown}",
        )
    return value


def _plain(value: str) -> str:
    """Says how value is written plainly (NFKC), when that form is an id itself."""
    variants = [char for char in value if unicodedata.normalize("NFKC", char) != char]
    shown = ", ".join(f"{char!r} ({unicodedata.name(char, '?')})" for char in variants[:5])
    plain = unicodedata.normalize("NFKC", value)
    try:
        new_user_id(plain)  # in NFKC form: it comes back here no more
    except InvalidArgument:  # "a ̈b", say: no id
        return f"(compatibility form, Unicode NFKC): {shown}"
    return f"(compatibility form, Unicode NFKC): {shown}; write {plain!r}"


# Scripts a language writes together, each also with Latin letters: Japanese kanji and
# kana, Chinese hanzi and bopomofo, Korean hanja and hangul (Unicode's "highly
# restrictive" profile, UTS #39).
_HAN = frozenset({"CJK", "IDEOGRAPHIC"})  # IDEOGRAPHIC ITERATION MARK: 佐々木
_WRITTEN_TOGETHER = (
    _HAN | {"HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"},
    _HAN | {"BOPOMOFO"},
    _HAN | {"HANGUL"},
)
_LETTERS = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl"})  # Unicode categories


def _mixed_scripts(value: str) -> list[str]:
    """The first letter of each script in value when its scripts mix (none when they do
    not): "editor" spelled with a Cyrillic ie for its e looks like "editor" but is
    another id.

    A letter's script is the first word of its Unicode name ("CYRILLIC SMALL LETTER
    IE"); letter numbers count as letters, and digits, punctuation and combining marks
    belong to every script. (Variants of plain letters, a fullwidth a or a small Roman
    numeral one, are refused before, by their NFKC form: `new_user_id`.)"""
    first_of: dict[str, str] = {}
    for char in value:
        if unicodedata.category(char) in _LETTERS:
            first_of.setdefault(unicodedata.name(char, "UNNAMED").split(" ", 1)[0], char)
    scripts = set(first_of)
    if len(scripts) < 2 or any(scripts - {"LATIN"} <= kin for kin in _WRITTEN_TOGETHER):
        return []
    return list(first_of.values())


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
