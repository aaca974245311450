"""What a name or key may hold: the rule the services apply, which the client also
checks where it buffers (a point refused only when its batch is sent would fail the
batch, and every point in it, with it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ._argument_error import invalid_argument

MAX_KEY_LENGTH = 250  # of a metric, param or tag key
MAX_TAG_VALUE_LENGTH = 8000  # characters of a run's tag value
MAX_REGISTRY_NAME_LENGTH = 256  # of a registered model, version or artifact
# An experiment id as the tracking service reads one: digits, the first not 0. One past
# the largest id (19 digits) is well-formed and names no experiment (NOT_FOUND), as
# docs/tracking.md says; the cap only keeps a request from carrying a huge number.
EXPERIMENT_ID = re.compile(r"[1-9][0-9]{0,63}")
# A run id as the tracking service reads one, in either case (it answers lower case).
RUN_ID = re.compile(r"[0-9a-fA-F]{32}")
# Controls (C0, DEL, C1: U+0085 breaks lines too), the line and paragraph separators,
# and lone surrogates, which are no text. Any other character may be in a name: the
# spaces of other scripts, the joiners of emoji sequences and of Persian spelling, and
# characters newer than this Python's Unicode tables (`str.isprintable` refuses all of
# these).
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Characters that show as nothing, at an end a name cannot be told from the same name
# without them: a byte-order mark a file read left, a zero-width space pasted along.
# They are Unicode's default-ignorable code points (the Hangul fillers among them) and
# the blank Braille pattern, which fonts draw empty too. Within a name they join or
# shape what is around them (emoji, Persian), and stay.
_INVISIBLE = (
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\uffa0\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e001f\U000e0080-\U000e00ff\U000e01f0-\U000e0fff]"
)
# Selectors choose how the character before them is drawn (an emoji's colour form) and
# tag characters spell a flag after a black flag (U+1F3F4): ending "❤️" or a flag they
# are seen, at the start or after a letter of ASCII, which has no other form, they are
# not. (Tags are the default-ignorable points left out of _INVISIBLE.)
_SELECTOR = "[\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]"
_TAG = "[\U000e0020-\U000e007f]"
_INVISIBLE_END = re.compile(
    f"^(?:{_INVISIBLE}|{_SELECTOR}|{_TAG})|{_INVISIBLE}\\Z|[\x00-\x7f]{_SELECTOR}+\\Z"
    f"|(?:^|[^\U0001f3f4\U000e0020-\U000e007f]){_TAG}+\\Z"
)
_INVISIBLE_ANYWHERE = re.compile(f"{_INVISIBLE}|{_SELECTOR}|{_TAG}")


def problem(value: str, max_length: int) -> str | None:
    """What keeps value from being a name of at most max_length characters (None when
    nothing does), worded as the rest of "<field> ..."."""
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    if holds_controls(value):
        return "must be one line of text without control characters"
    if value != value.strip() or invisible_at_an_end(value):
        return "must not start or end with whitespace or an invisible character"
    return None


def holds_controls(value: str) -> bool:
    """Whether value holds a character no name may: a control (C0, DEL, C1), a line or
    paragraph separator, or a lone surrogate."""
    return _REFUSED.search(value) is not None


def invisible_at_an_end(value: str) -> bool:
    """Whether value starts or ends with a character that shows as nothing (also the
    rule of each segment of an artifact path an upload writes)."""
    return _INVISIBLE_END.search(value) is not None


def shows_nothing_somewhere(value: str) -> bool:
    """Whether value holds, anywhere, a character that shows as nothing (the rule of a
    user id, which no look-alike may share)."""
    return _INVISIBLE_ANYWHERE.search(value) is not None


def shown(value: str) -> str:
    """value with each character that shows as nothing escaped ("\\ufeff"), for a
    message that must let its reader see it."""
    return _INVISIBLE_ANYWHERE.sub(lambda found: f"\\u{ord(found[0]):04x}", value)


def key(value: Any, name: str) -> str:
    """value as a metric, param or tag key, else InvalidArgumentError naming name."""
    if not isinstance(value, str):
        raise invalid_argument(name, f"{value!r} is no string")
    if found := problem(value, MAX_KEY_LENGTH):
        raise invalid_argument(name, found)
    return value


def segments_problem(segments: Sequence[str]) -> str | None:
    """What is wrong with a path's "/"-separated segments (None when nothing is): an
    empty, "." or ".." segment, which URL tools and the artifact service drop or read
    as a move up. The one rule of artifact paths, of the names of registered models,
    and of both as Cairn's URIs hold them (cairn.models.parse_uri)."""
    if any(segment in ("", ".", "..") for segment in segments):
        return "must not contain empty, '.' or '..' segments"
    return None


def registered_model_name_problem(value: str) -> str | None:
    """What keeps value from being the name a registered model is created or renamed to
    (None when nothing does). Its segments follow the rule of a path, as models:/<name>/1
    must name it: "a//b", "x/.." or a first or last "/" made a model that a copy, or any
    models:/ URI at all ("/a"), could not reach."""
    if found := problem(value, MAX_REGISTRY_NAME_LENGTH):
        return found
    if segments_problem(value.split("/")):
        return "must not start or end with '/' nor contain empty, '.' or '..' segments"
    return None


def registered_model_name(value: str, name: str = "registered_model_name") -> str:
    """value as a registered model's new name, else InvalidArgumentError naming name:
    checked before files go up for a model, as a lookup by a name no model can have
    finds nothing rather than refusing it."""
    if found := registered_model_name_problem(value):
        raise invalid_argument(name, found)
    return value
