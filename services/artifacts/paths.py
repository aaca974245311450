"""Artifact paths: relative, "/"-separated, checked before anything touches storage."""

from __future__ import annotations

from cairn import _object_paths as rules

from ..common.errors import invalid_field


def object_path(value: str, field: str = "path") -> str:
    """A path naming one object: no leading or trailing "/", no "." or ".." segments."""
    _check_text(value, field)
    if value.endswith("/"):
        raise invalid_field(field, "names an object, so it must not end with '/'", "INVALID_PATH")
    _check_segments(value.split("/"), field)
    return value


def new_object_path(value: str, field: str = "path") -> str:
    """A path an upload writes to (rules.new_object_problem, which the client checks a
    tree against before it sends one). Reads and deletes take any object path, so an
    object stored before the rule on invisible characters is still reached, and a path
    no upload can make finds nothing."""
    if problem := rules.new_object_problem(value):
        raise invalid_field(field, problem, "INVALID_PATH")
    return value


def prefix(value: str, field: str = "prefix") -> str:
    """A prefix to list under, as S3 takes one: empty, or a path that may end with "/".
    Its last part, unless it ends with "/", may be the start of a name: "." finds
    ".env", which a check of it as a whole segment refused."""
    if not value:
        return ""
    _check_text(value, field)
    _check_segments(value.split("/")[:-1], field)
    return value


def directory(value: str, field: str = "path") -> str:
    """A directory to delete under, as "<path>/": never a raw prefix, as deleting "run1"
    must not take "run10/"; never empty, as no call deletes a whole project."""
    _check_text(value, field)
    _check_segments(value.removesuffix("/").split("/"), field)
    return value.removesuffix("/") + "/"


def _check_text(value: str, field: str) -> None:
    if problem := rules.text_problem(value):
        raise invalid_field(field, problem, "INVALID_PATH")


def _check_segments(segments: list[str], field: str) -> None:
    if problem := rules.segments_problem(segments):
        raise invalid_field(field, problem, "INVALID_PATH")


def enclosing(path: str) -> list[str]:
    """path and each folder it lies in: "a/b/c" lies in "a" and "a/b"."""
    segments = path.split("/")
    return ["/".join(segments[:end]) for end in range(1, len(segments) + 1)]
