"""Versioned artifacts on `ModelRegistryAPIClient` (ML Aide's `create_artifact` and
`get_artifact`): every creation under a name is its next version, numbered without gaps.

A version is a standalone registry artifact with a number, a type and metadata; its
files live in the artifact service under a directory of their own, uploaded before the
version exists, so a version never shows without its files (docs/models.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

from .._argument_error import invalid_argument
from .._filter_text import quoted
from .._headers import REQUEST_ID_HEADER
from .._names import MAX_REGISTRY_NAME_LENGTH
from .._numbers import whole
from .._progress import Progress
from .._transport import Transport
from ..exceptions import (
    AlreadyExistsError,
    CairnError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from ..models._uris import ArtifactUri, parse_uri
from ..registry.v1 import registry_pb2 as pb
from ..registry.v1 import registry_service_pb2 as api
from ..types._arguments import proto
from ..types._artifacts import ObjectInfo
from ..types._journey import (
    VersionedArtifact,
    kind_problem,
    versioned_artifact_from_proto,
    versioned_artifact_to_proto,
)
from ..types._paging import Pager
from ..types._registry import PropertyValue
from ..types._tracking import RunInput
from ._local_files import check_target, files_in
from .artifacts import ArtifactClient, in_project

# Where versions' files go in the artifact service, one directory per version.
FILES_ROOT = "registry/artifacts"
FileSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


class ActiveArtifact:
    """One version of a named artifact and its files (ML Aide's `ActiveArtifact`).

    The version's facts are in `artifact` and repeated as attributes (`name`, `version`,
    `type`, `metadata`, `uri`, `run_id`).
    """

    # The sync facade hands it out with its methods made sync.
    _sync_view = True

    def __init__(self, artifact: VersionedArtifact, transport: Transport) -> None:
        self.artifact = artifact
        location = _location(artifact)
        self._directory = location.path
        self._store = in_project(transport, location.project)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "artifact":
            raise AttributeError(name)
        return getattr(self.artifact, name)

    def __repr__(self) -> str:
        return f"ActiveArtifact({self.artifact!r})"

    def as_input(self, context: str = "") -> RunInput:
        """This version as a run's input (`VersionedArtifact.as_input`).

        Raises:
            InvalidArgumentError: the type is longer than a kind may be.
        """
        return self.artifact.as_input(context)

    async def add_file(
        self, file: FileSource, filename: str | None = None, *, progress: Progress = False
    ) -> list[ObjectInfo]:
        """Adds a file (a path, bytes, a bytearray or memoryview, or a binary file
        object), or every file of a directory, to this version, as filename when given.
        Bytes and file objects without one are stored as "data", as create_artifact
        stores them; a path keeps its own name. progress shows the file or directory as
        one transfer (docs/artifacts.md, "Progress").

        Raises:
            AlreadyExistsError: the version has a file of that name already.
            InvalidArgumentError: file is an empty path (it would name the working
                directory), a path of no file or directory, or no path, bytes or binary
                file object at all; nothing is sent.
        """
        source = _source(file, "file")
        try:
            return await _upload(self._store, self._directory, source, filename, progress, "file")
        except AlreadyExistsError as taken:  # the store's words offer an overwrite
            stored = taken.metadata.get("path", "").removeprefix(self._directory + "/")
            raise AlreadyExistsError(
                f"version {self.artifact.version} of artifact {self.artifact.name!r} has "
                f"a file {stored!r} already; a version's files are never replaced",
                reason=taken.reason,
                metadata=taken.metadata,
            ) from None

    async def files(self) -> list[str]:
        """The version's files, as paths relative to it."""
        prefix = self._directory + "/"
        listing = Pager(lambda options: self._store.list(prefix, recursive=True, options=options))
        found = [info.path[len(prefix) :] async for info in listing.limit(1000) if not info.is_dir]
        return sorted(found)

    async def download(
        self, target_directory: str | os.PathLike[str], *, progress: Progress = False
    ) -> str:
        """Downloads every file of this version into target_directory (kept relative to
        the version, sha256-checked), shown as one transfer with progress; returns
        target_directory."""
        target = Path(target_directory)
        try:
            await self._store.download(self._directory, target, progress=progress)
        except NotFoundError:  # a version without files (yet): nothing to download
            if await self.files():
                raise
            await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        return str(target_directory)

    async def load(self, filename: str) -> io.BytesIO:
        """One file of this version, in memory.

        Raises:
            NotFoundError: the version has no such file.
        """
        return io.BytesIO(await self._store.read(f"{self._directory}/{filename.strip('/')}"))


class _Registry(Protocol):
    _transport: Transport
    _stub: Any

    @property
    def project(self) -> str: ...


class VersionedArtifacts:
    """Mixed into ModelRegistryAPIClient, which provides `_transport` and `_stub`."""

    async def create_artifact(
        self: _Registry,
        name: str,
        artifact_type: str,
        metadata: Mapping[str, PropertyValue] | None = None,
        *,
        files: FileSource | Iterable[str | os.PathLike[str]] | None = None,
        run_id: str | None = None,
        description: str | None = None,
        progress: Progress = False,
        request_id: str | None = None,
    ) -> ActiveArtifact:
        """Creates the next version of the artifact `name` (1 when the name is new).

        The files are uploaded first, to a directory of the version's own; the version
        (and its number) exists once they are all stored. Numbers have no gaps, also
        under concurrent creations, and are never given out twice.

        A call run again with the same request_id (a job restarted after its answer was
        lost) is answered with the version the first one made, sending no file; when
        that made none, its files go where the first one's went, over those it left.

        Args:
            name: the artifact's name.
            artifact_type: free-form: "dataset", "model", "report", ...
            metadata: facts to keep (str, int, float or bool values).
            files: a path (file or directory), several paths, bytes (a bytearray or
                memoryview too) or a binary file object (the latter two stored as
                "data"); more can be added later with `ActiveArtifact.add_file`.
            run_id: the run that made it.
            description: a description.
            progress: shows each file or directory as a transfer (docs/artifacts.md,
                "Progress").
            request_id: the caller's id of this creation, 1 to 128 printable ASCII
                characters (docs/client.md, "Retries apply a write once"); the same
                id with another name, type, metadata, run or description is
                InvalidArgumentError REQUEST_ID_REUSED. Files are not compared: a
                retry of a version made sends none and answers with it, whatever the
                local files now hold (docs/models.md).

        Raises:
            AlreadyExistsError: an unversioned standalone artifact holds the name.
            InvalidArgumentError: a name, type or metadata the registry refuses; a file
                that is an empty path (it would name the working directory), a path of
                no file or directory, or no path, bytes or binary file object at all;
                two files of one name, or a file (of a directory too) whose path the
                artifact service refuses (INVALID_PATH, naming the local file); what
                can be known before any byte is sent is checked first, and files
                uploaded for a version that is then not made are removed (those of a
                call with a request_id stay for its retry).
        """
        message = _new_version(self.project, name, artifact_type, metadata, "", run_id, description)
        sources = _sources(files)
        key = _directory_key(message, request_id, self._transport.credentials)
        directory = f"{FILES_ROOT}/{_segment(name)}/{key}"
        message.uri = str(ArtifactUri(self.project, directory))
        again = request_id is not None
        if again and (made := await _version_naming(self, message)) is not None:
            return ActiveArtifact(made, self._transport)  # whatever the files now are
        if sources:  # worth a look first only when there are files to send
            _check_distinct(sources)
            await asyncio.to_thread(_check_targets, sources, directory)
            await _check_name(self, name)
        store = in_project(self._transport, self.project)
        try:
            for source in sources:
                await _upload(store, directory, source, None, progress, "files", overwrite=again)
        except UNNAMED:
            # No version will name the files sent; but those of a call with a request id
            # stay for its retry, which sends them again over them: another call under
            # the id (a job's duplicate) may be making its version of them meanwhile.
            if not again:
                await remove_unnamed(store, directory)
            raise
        request = api.CreateArtifactRequest(artifact=message, new_version=True)
        headers = None if request_id is None else [(REQUEST_ID_HEADER, request_id)]
        try:
            reply = await self._transport.unary(
                self._stub.CreateArtifact, request, metadata=headers
            )
        # No version names the files (a repeat of a call that made one is answered with
        # it, not refused): nothing would ever remove them.
        except _REFUSED:
            if sources and not (again and await _named_or_unknown(self, message)):
                await remove_unnamed(store, directory)
            raise
        return ActiveArtifact(versioned_artifact_from_proto(reply.artifact), self._transport)

    async def get_artifact(
        self: _Registry, name: str, version: int | None = None
    ) -> ActiveArtifact:
        """The version asked for, or the latest one.

        Raises:
            NotFoundError: no such artifact or version.
        """
        request = proto(
            api.FindArtifactRequest,
            project=self.project,
            name=name,
            version=_asked_version(version),
        )
        found = (await self._transport.unary(self._stub.FindArtifact, request)).artifact
        if found.version == 0:  # an unversioned standalone artifact of that name
            raise NotFoundError(f"artifact {name} has no versions", reason="ARTIFACT_NOT_FOUND")
        return ActiveArtifact(versioned_artifact_from_proto(found), self._transport)

    async def get_artifact_versions(self: _Registry, name: str) -> list[VersionedArtifact]:
        """Every version of the artifact `name`, oldest first (empty when none, also for
        a name no artifact can have, as get_artifact finds none by it)."""
        if len(name) > MAX_REGISTRY_NAME_LENGTH:
            # Quoted into the filter below, it passed the filter's length (4,096
            # characters): INVALID_ARGUMENT FILTER_TOO_COMPLEX, a limit the caller never set.
            return []
        request = api.ListArtifactsRequest(
            project=self.project,
            filter=f"name = {quoted(name)} AND version > 0",
            order_by="id asc",
            page_size=1000,
        )
        return await self._transport.every_page(
            self._stub.ListArtifacts,
            request,
            lambda reply: [versioned_artifact_from_proto(a) for a in reply.artifacts],
        )


# Answers that say the version was not made; a lost answer (UNAVAILABLE, a deadline)
# may hide one that was, whose files must stay.
_REFUSED = (
    InvalidArgumentError,
    AlreadyExistsError,
    FailedPreconditionError,
    PermissionDeniedError,
    NotFoundError,
)
# What ends sending a version's files before the version is asked for: no version
# will name those sent, a cancelled call's neither.
UNNAMED = (Exception, asyncio.CancelledError)
# The longest a cancelled call waits for the files it sent to be removed.
REMOVAL_SECONDS = 5.0


def _new_version(
    project: str,
    name: str,
    artifact_type: str,
    metadata: Mapping[str, PropertyValue] | None,
    uri: str,
    run_id: str | None,
    description: str | None,
) -> pb.Artifact:
    """The new version's message, made before any file is sent: metadata the registry
    cannot hold (a nested value, an int past 64 bits) is refused at once, naming the
    entry as metadata['key'], and so is a type longer than a run input's kind."""
    if isinstance(artifact_type, str) and (problem := kind_problem(artifact_type)):
        raise invalid_argument("artifact_type", f"is {problem}, and as_input logs the type as one")
    return versioned_artifact_to_proto(
        project, name, artifact_type, _mapping(metadata), uri, run_id, description
    )


def _mapping(metadata: Mapping[str, PropertyValue] | None) -> dict[str, PropertyValue]:
    try:
        return dict(metadata or {})
    except (TypeError, ValueError):  # a number, a list of no pairs
        raise invalid_argument("metadata", f"{metadata!r} is no mapping") from None


def _check_distinct(sources: list[Any]) -> None:
    """Two sources stored under one name would stop the second upload half-way."""
    names = [_stored_name(source) for source in sources]
    for name in names:
        if names.count(name) > 1:
            raise invalid_argument(
                "files",
                f"two of them would be stored as {name!r}; give them apart, or "
                "add one with ActiveArtifact.add_file(file, filename)",
            )


def _sources(files: Any) -> list[Any]:
    """create_artifact's files as a list of sources, each checked (`_source`)."""
    if files is None:
        return []
    if isinstance(files, str | os.PathLike) or _is_data(files):
        return [_source(files, "files")]
    if isinstance(files, Mapping) or not isinstance(files, Iterable):
        # A mapping was read as the paths of its keys, a number raised TypeError.
        raise invalid_argument(
            "files",
            f"{files!r:.200} is no path, list of paths, bytes or binary file object; "
            "add contents of a name of your choosing with ActiveArtifact.add_file(data, "
            "filename)",
        )
    return [_source(source, "files") for source in files]


def _source(source: Any, argument: str) -> Any:
    """source as one file to store, else InvalidArgumentError naming argument, before
    any byte is sent. An empty path is Path(""), the working directory: an unset
    environment variable sent every file in it, with no bound; what no upload reads (a
    number, a bytes path, text) raised Python's TypeError once under way."""
    if isinstance(source, io.TextIOBase):
        raise invalid_argument(argument, "is a file opened in text mode: open it with 'rb'")
    if _is_data(source):
        return source
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not path:
            raise invalid_argument(
                argument, "is an empty path, which names the working directory: give the path"
            )
        if isinstance(path, str):
            return source
    raise invalid_argument(
        argument,
        f"{source!r:.200} is no path (str or os.PathLike of str), bytes or binary file object",
    )


def _is_data(source: Any) -> bool:
    """Whether source is contents (stored as "data" without a filename), not a path."""
    return isinstance(source, bytes | bytearray | memoryview) or callable(
        getattr(source, "read", None)
    )


def _check_targets(sources: list[Any], directory: str) -> None:
    """Refuses, before any byte is sent, a path that is no file or directory, and a file
    or a tree's file whose path in directory the artifact service would refuse
    (blocking: it lists the trees), naming it: before, the files ahead of it were
    stored, and named by no version."""
    for source in sources:
        if _is_data(source):
            continue
        local = Path(source)
        target = f"{directory}/{local.name}"
        if local.is_dir():
            files_in(local, target)
        elif local.is_file():
            check_target(local, target)
        else:
            raise _missing(local, "files")


def _missing(local: Path, argument: str) -> InvalidArgumentError:
    return invalid_argument(argument, f"{str(local)!r} is no file or directory")


async def remove_unnamed(store: ArtifactClient, directory: str) -> None:
    """Deletes the files sent for a version that was not made, which nothing else would
    ever remove; a failure to is left to the error being raised. Also in a call being
    cancelled (`UNNAMED`), for a few seconds at most: a cancel waits that long."""
    with contextlib.suppress(CairnError, TimeoutError):
        async with asyncio.timeout(REMOVAL_SECONDS):
            await store.delete(directory, recursive=True)


def _directory_key(
    message: pb.Artifact, request_id: str | None, credentials: tuple[tuple[str, str], ...]
) -> str:
    """The version's directory under its name: random, or, for a call with a request id,
    one of the id, the caller's key and the version's facts, the same for each retry of
    the call. Another call under the id sends its files apart: one with other facts,
    which the registry refuses (REQUEST_ID_REUSED), and another user's, whose id it is
    too (the registry keeps each user's ids apart)."""
    if request_id is None:
        return uuid.uuid4().hex
    if not (isinstance(request_id, str) and 0 < len(request_id) <= 128 and _printable(request_id)):
        raise invalid_argument("request_id", "must be 1 to 128 printable ASCII characters")
    digest = hashlib.sha256(request_id.encode() + b"\0")
    for name, value in credentials:
        digest.update(f"{name}\0{value}\0".encode())
    digest.update(message.SerializeToString(deterministic=True))
    return digest.hexdigest()[:32]


async def _named_or_unknown(registry: _Registry, message: pb.Artifact) -> bool:
    """Whether a version names message's directory, or the registry cannot tell: then
    the files stay, as another call under the request id may have made a version of them
    while this one was refused."""
    try:
        return await _version_naming(registry, message) is not None
    except CairnError:
        return True


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


async def _version_naming(registry: _Registry, message: pb.Artifact) -> VersionedArtifact | None:
    """The version of message's name whose URI is message's, if one was made."""
    wanted = f"name = {quoted(message.name)} AND uri = {quoted(message.uri)}"
    request = api.ListArtifactsRequest(project=registry.project, filter=wanted, page_size=1)
    reply = await registry._transport.unary(registry._stub.ListArtifacts, request)
    return versioned_artifact_from_proto(reply.artifacts[0]) if reply.artifacts else None


def _stored_name(source: Any) -> str:
    return "data" if _is_data(source) else Path(source).name


async def _check_name(registry: _Registry, name: str) -> None:
    """Refuses a name the registry refuses, before any file is sent."""
    request = api.FindArtifactRequest(project=registry.project, name=name)
    with contextlib.suppress(NotFoundError):
        await registry._transport.unary(registry._stub.FindArtifact, request)


async def _upload(
    store: ArtifactClient,
    directory: str,
    file: Any,
    filename: str | None,
    progress: Progress,
    argument: str,
    *,
    overwrite: bool = False,
) -> list[ObjectInfo]:
    """Stores one checked source (`_source`) in directory; a path gone since it was
    checked is refused naming argument, the caller's."""
    if _is_data(file):
        data: Any = file
        name = f"{directory}/{filename or 'data'}"
        return [await store.upload(name, data, overwrite=overwrite, progress=progress)]
    local = Path(file)
    if await asyncio.to_thread(local.is_file):
        name = f"{directory}/{filename or local.name}"
        return [await store.upload(name, local, overwrite=overwrite, progress=progress)]
    if not await asyncio.to_thread(local.is_dir):
        raise _missing(local, argument)
    return await store.upload_tree(
        f"{directory}/{filename or local.name}", local, overwrite=overwrite, progress=progress
    )


def _location(artifact: VersionedArtifact) -> ArtifactUri:
    """Where the version's files are: always the artifact service, unless the row was
    changed by hand (the registry keeps a version's URI as it was created)."""
    try:
        location = parse_uri(artifact.uri)
    except InvalidArgumentError:
        location = None
    if not isinstance(location, ArtifactUri):
        raise FailedPreconditionError(
            f"version {artifact.version} of artifact {artifact.name!r} is at "
            f"{artifact.uri!r}, not in the artifact service (cairn-artifacts://...): "
            "its files cannot be read through Cairn",
            reason="INVALID_ARTIFACT_LOCATION",
        )
    return location


# The longest a name's segment of a version's directory may be: any name of the
# registry's 256 characters then leaves room in a path of 1,024 bytes for the version's
# directory and its files' names.
MAX_SEGMENT = 160


def _segment(name: str) -> str:
    """The name as one path segment (names may hold "/", or be "." or ".."), cut short
    when quoting makes it long (a character of another script takes 9 bytes, an emoji
    12), with a hash of the whole name so that names cut alike stay apart."""
    quoted = quote(name, safe="")
    if quoted in (".", ".."):
        return quoted.replace(".", "%2E")
    if len(quoted) <= MAX_SEGMENT:
        return quoted
    head = quoted[: MAX_SEGMENT - 17]
    head = head[: head.rfind("%")] if "%" in head[-2:] else head  # never half a %XX
    return f"{head}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _asked_version(version: Any) -> int:
    """The version FindArtifact is sent: 0, which it reads as the latest, for None; a
    version asked for is 1 or more (versions are numbered from 1), since a 0 sent on
    would be answered with the latest instead of none."""
    if version is None:
        return 0
    number = whole(version, "version")
    if number < 1:
        raise invalid_argument(
            "version", f"{number} is no version (versions start at 1; None asks for the latest)"
        )
    return number
