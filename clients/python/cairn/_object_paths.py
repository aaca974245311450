"""The rules of an artifact path, held once for both sides: the server refuses a path
that breaks them (cairn_server.artifacts.paths), and the client checks a tree's paths
against them before it sends a byte, so that a tree is stored whole or not at all."""

from __future__ import annotations

import re

from . import _names as names

# In UTF-8 bytes, as S3 caps its keys: a path is part of a btree key, which PostgreSQL
# caps in bytes, so a cap in characters let 1,000 CJK characters reach INTERNAL.
MAX_PATH_BYTES = 1024


# What Python makes of a file name's bytes that are not UTF-8: lone surrogates
# ("\udcff"), which no request can carry.
_NOT_TEXT = re.compile("[\ud800-\udfff]")
NOT_TEXT = "must be UTF-8 text, not bytes of a name read as lone surrogates ('\\udcff')"


def is_text(value: str) -> bool:
    """Whether value can be sent as a path at all (it holds no lone surrogate)."""
    return _NOT_TEXT.search(value) is None


def text_problem(value: str) -> str | None:
    """What is wrong with value as the text of a path, or None."""
    if not value:
        return "must not be empty"
    if not is_text(value):
        return NOT_TEXT
    if len(value.encode()) > MAX_PATH_BYTES:
        return f"must be at most {MAX_PATH_BYTES} bytes in UTF-8"
    if value.startswith("/"):
        return "must be relative (no leading '/')"
    if "\\" in value:
        return "must use '/' as separator, not '\\'"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain NUL or control characters"
    return None


# What is wrong with a path's "/"-separated segments, or None: a rule the names of
# registered models follow too (cairn._names).
segments_problem = names.segments_problem


def new_object_problem(value: str) -> str | None:
    """What is wrong with value as the path of an object an upload writes, or None:
    an object's path, no segment of which starts or ends with an invisible character
    ("data.csv" after a byte-order mark cannot be told from "data.csv")."""
    if problem := text_problem(value):
        return problem
    if names.holds_controls(value):  # C1 too: U+0085 breaks a line, U+009B starts ESC [
        return "must not contain control characters or line separators"
    if value.endswith("/"):
        return "names an object, so it must not end with '/'"
    segments = value.split("/")
    if problem := segments_problem(segments):
        return problem
    if any(names.invisible_at_an_end(segment) for segment in segments):
        return "must not have a segment that starts or ends with an invisible character"
    return None
