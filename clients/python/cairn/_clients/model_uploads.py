"""A model's files uploaded to its run's directory: never over another model's, manifest last."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .._progress import Progress, meter
from ..exceptions import AlreadyExistsError, NotFoundError
from ..models import _manifest
from ..models._manifest import MANIFEST, Manifest
from ..models._uris import ArtifactUri
from .artifacts import ArtifactClient
from .model_fetches import read_manifest


async def logged_manifest(store: ArtifactClient, directory: str) -> bytes | None:
    """The manifest of a model logged at directory already, if any: a model's files must
    not change under a version that points at them."""
    try:
        uri = str(ArtifactUri(store.project, directory))
        return await read_manifest(store, f"{directory}/{MANIFEST}", uri)
    except NotFoundError:
        return None


def same_model(
    logged: bytes, manifest: Manifest, store: ArtifactClient, directory: str
) -> tuple[bytes, Manifest]:
    """The logged model's manifest, and its bytes, when it is the one being logged (the
    same call, run again after it stopped part-way); else the directory is another
    model's. The same files are not enough: a call of other metadata, signature or
    options, given the first call's version, would believe its own were kept."""
    where = str(ArtifactUri(store.project, directory))
    stored = Manifest.from_json(logged, where)
    # Read back as stored, so that a tuple given is the list the stored manifest holds.
    logging = Manifest.from_json(manifest.to_json(), where)
    if _as_logged(stored) != _as_logged(logging):
        raise logged_there(directory)
    return logged, stored


def _as_logged(manifest: Manifest) -> tuple[Any, ...]:
    """What a log_model call chose for its model; not the Python or library versions
    of the machine, which may differ when it is run again elsewhere."""
    return (
        manifest.flavor,
        manifest.options,
        manifest.files,
        manifest.metadata,
        manifest.signature,
    )


async def upload(
    store: ArtifactClient,
    directory: str,
    local: Path,
    manifest: Manifest,
    progress: Progress = False,
) -> bytes:
    """Never over an object: of two loggers at one directory, the first to store a file
    both have keeps it and the other stops (AlreadyExistsError), so the files under the
    winner's manifest are all the winner's. A file stored already with the same bytes
    (sha256 and size) is kept and counts as uploaded: a log_model that stopped part-way
    (an outage before its manifest) can be run again and completes the model. The
    manifest goes last: it is what makes the directory a model."""
    manifest_bytes = (local / MANIFEST).read_bytes()
    total = sum(entry.size for entry in manifest.files.values()) + len(manifest_bytes)
    with meter(progress, "upload", f"{directory}/", total) as counted:
        for relative, expected in manifest.files.items():
            remote, start = f"{directory}/{relative}", counted.done
            try:
                await store.upload(remote, local / relative, progress=counted)
            except AlreadyExistsError as error:
                await _accept_stored(store, remote, expected, directory, error)
                counted.reach(start + expected.size)
        try:
            await store.upload(
                f"{directory}/{MANIFEST}",
                manifest_bytes,
                content_type="application/json",
                progress=counted,
            )
        except AlreadyExistsError as error:
            raise logged_there(directory, error) from error
    return manifest_bytes


async def _accept_stored(
    store: ArtifactClient,
    remote: str,
    expected: _manifest.FileEntry,
    directory: str,
    error: AlreadyExistsError,
) -> None:
    """Returns when the object at remote holds expected's bytes; raises otherwise."""
    with contextlib.suppress(NotFoundError):  # deleted since: differs all the same
        stored = await store.stat(remote)
        if (stored.sha256, stored.size) == (expected.sha256, expected.size):
            return
    if await _has_manifest(store, directory):
        raise logged_there(directory, error) from error
    raise AlreadyExistsError(
        f"{directory!r} holds other files than this model's and no manifest: another "
        "log_model is storing a model there now, or one stopped part-way with other "
        "files. Log under another name, or, when no one is logging there, delete the "
        f"directory (ArtifactClient.delete({directory!r}, recursive=True)) and log again",
        reason="OBJECT_ALREADY_EXISTS",
        metadata={**error.metadata, "directory": directory},
    ) from error


async def _has_manifest(store: ArtifactClient, directory: str) -> bool:
    try:
        await store.stat(f"{directory}/{MANIFEST}")
    except NotFoundError:
        return False
    return True


def logged_there(directory: str, error: AlreadyExistsError | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"a model is logged at {directory!r} already; log under another name",
        reason="OBJECT_ALREADY_EXISTS",
        metadata=error.metadata if error else None,
    )
