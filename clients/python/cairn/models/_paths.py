"""The paths a manifest names, checked before any is joined to a local directory.

A manifest comes from the artifact service, where anyone with write access to the run
can change it: its file keys and a flavor's `options["path"]` decide where the client
writes and what it reads. Each must be a plain relative path that stays inside the
model's directory, and never the manifest itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..exceptions import DataLossError

MANIFEST = "cairn-model.json"


def invalid_manifest(where: str, why: str) -> DataLossError:
    """The error of a manifest that cannot be trusted to describe the model."""
    return DataLossError(
        f"the model manifest at {where} {why}; log the model again",
        reason="INVALID_MODEL_MANIFEST",
    )


def relative_path(value: Any, where: str, what: str = "a file") -> str:
    """value when it is a "/"-separated relative path with no empty, "." or ".." part,
    no backslash (a separator on Windows) and not the manifest's own name."""
    if not isinstance(value, str) or not value:
        raise invalid_manifest(where, f"names {what} by {value!r}, which is no path")
    if "\x00" in value:  # no file system takes it: a bare ValueError from the first use
        raise invalid_manifest(where, f"names {what} by {value!r}, which holds a NUL")
    if value.startswith("/") or "\\" in value:
        raise invalid_manifest(where, f"names {what} by {value!r}, which is not relative")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise invalid_manifest(where, f"names {what} by {value!r}: empty, '.' or '..' parts")
    if value == MANIFEST:
        raise invalid_manifest(where, f"names {MANIFEST} among the model's files")
    return value


def inside(directory: Path, relative: Any, where: str, what: str = "a file") -> Path:
    """directory / relative, checked to stay inside directory once resolved (symlinks
    included)."""
    path = directory / relative_path(relative, where, what)
    if not path.resolve().is_relative_to(directory.resolve()):
        raise invalid_manifest(where, f"names {what} {relative!r} outside the model's directory")
    return path


def is_kind(path: Path, kind: Callable[[int], bool]) -> bool:
    """Whether path is of kind (stat.S_ISDIR, ...) itself, a link being of none but
    stat.S_ISLNK."""
    try:
        return kind(path.lstat().st_mode)
    except OSError:
        return False
