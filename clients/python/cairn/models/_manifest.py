"""The manifest of a model directory: what it holds and what it was saved with.

`cairn-model.json` sits beside the model's files. It names the flavor and its options,
the Python and library versions of the saver, and the size and sha256 of every file, so
a loader can tell that it holds exactly what was logged. It is uploaded last: a directory
with a manifest is complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._argument_error import invalid_argument
from .._clients._local_files import files_in
from ..exceptions import DataLossError, InvalidArgumentError
from ._flavors import Flavor
from ._paths import MANIFEST, invalid_manifest, relative_path

FORMAT = 1
_HASH_CHUNK = 1024 * 1024
# About 100,000 files' entries: a larger "manifest" is not one, and is not read whole.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The JSON type of each field but files (checked entry by entry).
_TYPES: dict[str, type | tuple[type, ...]] = {
    "flavor": str,
    "options": dict,
    "python_version": str,
    "libraries": dict,
    "signature": (dict, type(None)),
    "metadata": dict,
    "run_id": str,
    "artifact_path": str,
    "created_at": str,
    "format": int,
}


def written_as_manifest(data: bytes) -> bool:
    """Whether data may be a manifest a Cairn wrote, whole or damaged: anything but JSON
    no manifest is (a value other than an object naming its format), which a user's own
    cairn-model.json among data files holds, and which makes no model of its folder."""
    try:
        raw = json.loads(data)
    except ValueError:  # damaged in storage, or never JSON: not to be taken for data
        return True
    return isinstance(raw, dict) and "format" in raw


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A model directory's description (the JSON of `cairn-model.json`)."""

    flavor: str
    options: dict[str, Any]
    files: dict[str, FileEntry]
    python_version: str
    libraries: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    artifact_path: str = ""
    created_at: str = ""
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parses and checks a manifest: known format, fields of their types, file paths
        relative and inside the model's directory.

        Raises:
            DataLossError: (INVALID_MODEL_MANIFEST) anything else.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise invalid_manifest(where, f"is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            raw = json.loads(data)
        except ValueError as error:
            raise invalid_manifest(where, f"is no JSON ({error})") from None
        if not isinstance(raw, dict):
            raise invalid_manifest(where, "is no JSON object")
        if raw.get("format") != FORMAT:
            raise invalid_manifest(
                where,
                f"has format {raw.get('format')!r}; this client reads format {FORMAT} "
                "(a newer cairn may read it)",
            )
        unknown = set(raw) - {f.name for f in fields(cls)}
        missing = {"flavor", "options", "files", "python_version"} - set(raw)
        if unknown or missing:
            raise invalid_manifest(
                where, f"has unknown fields {sorted(unknown)} or lacks {sorted(missing)}"
            )
        for name, value in raw.items():
            expected = _TYPES.get(name, dict)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise invalid_manifest(where, f"has a {type(value).__name__} as {name}")
        if not all(isinstance(v, str) for v in raw.get("libraries", {}).values()):
            raise invalid_manifest(where, "has a library version that is no string")
        files = {
            relative_path(path, where): _entry(entry, path, where)
            for path, entry in raw.pop("files").items()
        }
        return cls(files=files, **raw)


def _entry(raw: Any, path: str, where: str) -> FileEntry:
    if not isinstance(raw, dict) or set(raw) != {"size", "sha256"}:
        raise invalid_manifest(where, f"describes {path!r} by {raw!r}, not by size and sha256")
    size, sha256 = raw["size"], raw["sha256"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid_manifest(where, f"gives {path!r} the size {size!r}")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise invalid_manifest(where, f"gives {path!r} the sha256 {sha256!r}")
    return FileEntry(size, sha256)


def save(
    model: Any,
    flavor: Flavor,
    directory: Path,
    *,
    signature: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    run_id: str,
    artifact_path: str,
) -> Manifest:
    """Has the flavor write the model into directory, then hashes every file and writes
    the manifest beside them (blocking: run it in a thread)."""
    options = flavor.save(model, directory)
    if (directory / MANIFEST).exists():
        raise InvalidArgumentError(
            f"the model holds a file or directory named {MANIFEST} at its top, the name of "
            "the manifest Cairn writes beside the files: rename it, or put it in a directory",
            reason="INVALID_PATH",
        )
    manifest = Manifest(
        flavor=flavor.name,
        options=options,
        files={relative: entry_of(directory / relative) for relative in files_under(directory)},
        python_version=platform.python_version(),
        libraries=_versions(flavor.libraries),
        signature=dict(signature) if signature is not None else None,
        metadata=dict(metadata or {}),
        run_id=run_id,
        artifact_path=artifact_path,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    (directory / MANIFEST).write_bytes(manifest.to_json())
    return manifest


@dataclass
class _Written:
    value: Any


def json_argument(value: Mapping[str, Any] | None, argument: str) -> dict[str, Any] | None:
    """value as a manifest keeps it (its signature, its metadata: what dict() makes of it),
    or InvalidArgumentError naming argument: nothing dict() takes, or holding what the
    manifest's JSON cannot (a set, a tuple for a key, keys of types that do not sort
    together). Dataclasses inside are written as dicts, as the manifest's asdict does."""
    if value is None:
        return None
    try:
        kept = dict(value)
    except (TypeError, ValueError):
        raise invalid_argument(argument, f"must be a mapping, not {type(value).__name__}") from None
    try:
        json.dumps(asdict(_Written(kept)), sort_keys=True)  # as to_json writes it
    except (TypeError, ValueError, RecursionError) as error:  # a dict holding itself
        raise invalid_argument(argument, f"must be JSON: {error}") from None
    return kept


def files_under(directory: Path) -> list[str]:
    """Every file's "/"-separated path under directory, the manifest excepted."""
    return [relative for relative in files_in(directory) if relative != MANIFEST]


def entry_of(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_HASH_CHUNK):
            digest.update(chunk)
    return FileEntry(path.stat().st_size, digest.hexdigest())


def holds(path: Path, expected: FileEntry) -> bool:
    """Whether path is a file of the entry's size and sha256 (the size first)."""
    try:
        return path.stat().st_size == expected.size and entry_of(path) == expected
    except OSError:
        return False


def verify_file(path: Path, relative: str, expected: FileEntry, where: str) -> None:
    """Raises DataLossError when the file differs from the manifest's entry."""
    if not path.is_file():
        raise invalid_manifest(where, f"names {relative!r}, which did not download as a file")
    found = entry_of(path)
    if found != expected:
        raise mismatch(relative, found, expected, where)


def mismatch(relative: str, found: FileEntry, expected: FileEntry, where: str) -> DataLossError:
    """The error of a stored file that is not the one the model was logged with."""
    return DataLossError(
        f"{relative!r} of the model at {where} has sha256 {found.sha256} "
        f"({found.size} bytes), but the model was logged with {expected.sha256} "
        f"({expected.size} bytes): the stored file changed since",
        reason="CHECKSUM_MISMATCH",
        metadata={"file": relative, "sha256": found.sha256, "expected_sha256": expected.sha256},
    )


def gone(relative: str, where: str) -> DataLossError:
    """The error of a file the manifest names that the store no longer holds: the model
    is no longer whole, as when a file changed (the path the caller named is there)."""
    return DataLossError(
        f"{relative!r} of the model at {where} is gone from the store: "
        "it was deleted since the model was logged",
        reason="OBJECT_BYTES_MISSING",
        metadata={"file": relative},
    )


def warn_on_other_versions(manifest: Manifest, where: str) -> None:
    """Loading with other library versions than the saver's often works, and sometimes
    silently does not (pickled estimators): say so, as MLflow does."""
    saved = {"python": _minor(manifest.python_version), **manifest.libraries}
    now = {"python": _minor(platform.python_version()), **_versions(tuple(manifest.libraries))}
    changed = [f"{name} {saved[name]} -> {now[name]}" for name in saved if saved[name] != now[name]]
    if changed:
        warnings.warn(
            f"the model at {where} was saved with other versions ({', '.join(changed)})",
            stacklevel=3,
        )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _versions(distributions: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = ""
    return found
