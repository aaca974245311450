"""Models on `TrackingClient`: `log_model`, `load_model`, and URIs resolved to files.

A model is a directory in a run's artifacts: the flavor's files plus `cairn-model.json`
(cairn.models). Registering it makes a registry version whose source is that directory.
URIs (`models:/`, `runs:/`, `cairn-artifacts://`) resolve, through the registry and
tracking services on the client's channel, to a path in the artifact service; a model
is fetched from there into the local cache once per content.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, cast

from .. import _names as names
from .._argument_error import invalid_argument
from .._filter_text import quoted
from .._progress import Progress, meter
from .._transport import Transport
from ..exceptions import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
)
from ..models import _manifest
from ..models._cache import ModelCache, compiled_module
from ..models._copies import copy_model, writing
from ..models._flavors import (
    Flavor,
    UntrustedModelError,
    check_options,
    flavor_for,
    get_flavor,
)
from ..models._info import ModelInfo
from ..models._manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest
from ..models._paths import inside, invalid_manifest
from ..models._uris import (
    SCHEMES,
    ArtifactUri,
    RunUri,
    parse_uri,
    scheme_of,
)
from ..types._artifacts import ObjectInfo
from ..types._paging import ListOptions
from ..types._registry import MlflowModelVersion, ModelArtifact
from ._local_files import download_folder, tree_files
from .artifacts import ArtifactClient, in_project
from .model_sources import MANIFEST_TAG, files_of
from .registry import ModelRegistryAPIClient
from .run_store import RunClient, join, run_store, within_run

CachePath = str | os.PathLike[str] | None


class _Location(NamedTuple):
    """Where a URI's files are, the name a download gives them (the last segment of
    the path the URI names in its run or project; "" for the root of one, whose files
    land in the destination itself), and the sha256 of the manifest they must have when
    the URI went through a pinned registry version (None otherwise)."""

    store: ArtifactClient
    path: str
    name: str
    manifest_sha256: str | None = None


class RunModels:
    """Mixed into TrackingClient, which provides `_transport` and `get_run`."""

    async def log_model(
        self: RunClient,
        run_id: str,
        model: Any,
        name: str = "model",
        *,
        flavor: str | Flavor | None = None,
        registered_model_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        signature: Mapping[str, Any] | None = None,
        progress: Progress = False,
    ) -> ModelInfo:
        """Stores a model as a directory of the run's artifacts, optionally registered.

        The directory holds the flavor's files and a manifest with the sha256 of each,
        the flavor and the Python and library versions in use; the manifest is uploaded
        last, so a directory with one is complete. With registered_model_name, the
        registered model is created when absent and gets a new version whose source is
        the directory and whose run is the run.

        Args:
            run_id: the run to log into.
            model: the model; what it may be depends on the flavor (a path for "files").
            name: the directory's path within the run's artifacts.
            flavor: a registered flavor's name ("files", "pickle", "cloudpickle",
                "sklearn") or a Flavor; None picks one that recognises the model.
            registered_model_name: registers the model under this name.
            metadata: JSON-serialisable facts kept in the manifest.
            signature: the model's inputs and outputs as JSON (kept, not enforced).
            progress: shows the upload of the model's files as one transfer: True for a
                bar on stderr (one line when it is not a terminal), a rich Console, or a
                callable given (bytes_done, bytes_total); docs/artifacts.md.

        Returns:
            Where the model went, and the version made.

        Raises:
            AlreadyExistsError: the run has a model at name already (another model, or,
                without registered_model_name, any: with it, a call that stored these
                files and stopped before registering them is taken up where it stopped).
            FailedPreconditionError: of the files flavor, before anything is sent: a
                folder or file of the model that cannot be read (not the caller's, or
                removed while it is copied), LOCAL_READ_FAILED, metadata path and
                errno; its copy that cannot be written (the temporary folder's disk
                full), LOCAL_WRITE_FAILED.
            InvalidArgumentError: no flavor of that name, or none recognises the model;
                registered_model_name is no valid name, or name names the run's root
                or a place above it (before any call).
        """
        chosen = get_flavor(flavor) if isinstance(flavor, str) else flavor or flavor_for(model)
        if registered_model_name is not None:
            # Before any file goes up: refused after the upload, the model would stay
            # logged and unregistered, and a second log_model to register it would find
            # it there (OBJECT_ALREADY_EXISTS).
            names.registered_model_name(registered_model_name)
        name = _model_directory(name)
        store, root = await run_store(self, run_id, writing=True)
        directory = join(root, None, name)
        logged = await _logged_manifest(store, directory)
        if logged is not None and registered_model_name is None:
            raise _logged_there(directory)
        with tempfile.TemporaryDirectory(prefix="cairn-model-") as scratch:
            manifest = await asyncio.to_thread(
                _manifest.save,
                model,
                chosen,
                Path(scratch),
                signature=signature,
                metadata=metadata,
                run_id=run_id,
                artifact_path=name,
            )
            if logged is None:
                manifest_bytes = await _upload(store, directory, Path(scratch), manifest, progress)
            else:  # logged by an earlier call that may have stopped before registering
                manifest_bytes, manifest = _same_model(logged, manifest, store, directory)
        info = ModelInfo(
            run_id=run_id,
            artifact_path=name,
            model_uri=str(RunUri(run_id, name)),
            artifact_uri=str(ArtifactUri(store.project, directory)),
            flavor=chosen.name,
            files={path: entry.sha256 for path, entry in manifest.files.items()},
            manifest_sha256=ModelCache.key(manifest_bytes),
            metadata=manifest.metadata,
            signature=manifest.signature,
        )
        if registered_model_name is None:
            return info
        # Checked again: the run may have been deleted while the files went up, and a
        # version of a deleted run's files would go with it.
        await run_store(self, run_id, writing=True)
        number = await _register(
            self._transport, registered_model_name, info, manifest, resumed=logged is not None
        )
        return dataclasses.replace(
            info, registered_model_name=registered_model_name, registered_model_version=number
        )

    async def load_model(
        self: RunClient,
        model_uri: str,
        *,
        allow_pickle: bool = False,
        cache_dir: CachePath = None,
        progress: Progress = False,
    ) -> Any:
        """Loads a model logged with `log_model`, from any of its URIs.

        The files come from the local cache (cairn.models.default_cache_dir(), or
        cache_dir) when it holds the model's content already, else from the artifact
        service, each checked against the manifest's sha256 first.

        Args:
            model_uri: models:/<name>/<version>, models:/<name>@<alias>,
                models:/<name>/<stage>, models:/<name>/latest, runs:/<run_id>/<path> or
                cairn-artifacts://<project>/<path>.
            allow_pickle: loads flavors that unpickle ("pickle", "cloudpickle",
                "sklearn"). Unpickling runs code the file's author chose: allow it only
                for models from people you trust.
            cache_dir: the cache to use instead of the default.
            progress: shows the download of the model's files as one transfer (none
                when the cache holds them), as in `log_model`.

        Returns:
            What the flavor loads: the object, or for "files" the local path, read-only
            in the cache shared by every load (docs/models.md, "The cache").

        Raises:
            UntrustedModelError: the flavor unpickles and allow_pickle is False.
            DataLossError: a file differs from the sha256 the manifest recorded, or is
                gone from the store (OBJECT_BYTES_MISSING).
            NotFoundError: the URI names no model.
        """
        location = await _locate(self, model_uri, "model_uri")
        manifest_bytes, manifest = await _read_manifest(location, model_uri)
        flavor = get_flavor(manifest.flavor)
        if flavor.unsafe and not allow_pickle:
            raise UntrustedModelError(
                f"{model_uri} is a {flavor.name} model: loading it unpickles, which runs "
                "whatever code its author put in the file. Pass allow_pickle=True only "
                "for models from people you trust.",
                reason="PICKLE_NOT_ALLOWED",
            )
        check_options(flavor, manifest.options, model_uri)
        cache = ModelCache(cache_dir)
        directory = await _fetch(
            location.store, location.path, manifest_bytes, manifest, cache, model_uri, progress
        )
        _manifest.warn_on_other_versions(manifest, model_uri)
        return await asyncio.to_thread(flavor.load, directory, manifest.options)


def _model_directory(name: Any) -> str:
    """A model's directory within its run, normalised as any artifact path
    (`within_run`); the run's root is refused: the run's other files would be taken for
    the model's, and a download of the run would fetch the model alone."""
    if not isinstance(name, str):
        raise invalid_argument("name", f"a model's directory within the run, not {name!r}")
    relative = within_run(name, "name")
    if not relative:
        raise invalid_argument("name", "names the run's root: give the model a directory")
    return relative


async def download_uri(
    client: RunClient,
    uri: str,
    dst_path: str | os.PathLike[str] | None,
    cache_dir: CachePath = None,
    progress: Progress = False,
) -> str:
    """`TrackingClient.download_artifacts` given a URI: a model directory through the
    cache (then copied whole or not at all, manifest last), anything else straight from
    the store."""
    location = await _locate(client, uri, "run_id")  # download_artifacts' first argument
    with download_folder(dst_path) as destination:
        target = destination / location.name if location.name else destination
        return await _download_located(location, target, uri, cache_dir, progress)


async def _download_located(
    location: _Location, target: Path, uri: str, cache_dir: CachePath, progress: Progress
) -> str:
    """The files of a located URI written at target; the path written."""
    store, path = location.store, location.path
    if not (location.name or location.manifest_sha256):
        # A root (runs:/<run_id>) is its files, as download_artifacts(run_id, "", dst)
        # writes them: a model logged there before log_model refused it hid the others.
        return str(await store.download(path, target, progress=progress))
    try:
        manifest_bytes, manifest = await _read_manifest(location, uri)
    except NotFoundError:
        if location.manifest_sha256:  # a version registered with a model, gone since
            raise
        return str(await store.download(path, target, progress=progress))
    cache = ModelCache(cache_dir)
    entry = await _fetch(store, path, manifest_bytes, manifest, cache, uri, progress)
    async with shipped_bytecode(store, path, entry, manifest, uri) as shipped:
        await asyncio.to_thread(copy_model, entry, manifest, manifest_bytes, target, uri, shipped)
    return str(target)


@contextlib.asynccontextmanager
async def model_to_copy(
    client: RunClient, uri: str, cache_dir: CachePath
) -> AsyncIterator[tuple[Path, Manifest, dict[str, Path | None]]]:
    """A model's verified cache entry, its manifest and the compiled modules it shipped
    as stored (shipped_bytecode), to copy, without loading it (nothing is unpickled).

    Raises:
        NotFoundError: (OBJECT_NOT_FOUND) the URI holds no manifest.
    """
    location = await _locate(client, uri)
    manifest_bytes, manifest = await _read_manifest(location, uri)
    store, path = location.store, location.path
    entry = await _fetch(store, path, manifest_bytes, manifest, ModelCache(cache_dir), uri)
    async with shipped_bytecode(store, path, entry, manifest, uri) as shipped:
        yield entry, manifest, shipped


async def _locate(client: RunClient, uri: str, argument: str = "uri") -> _Location:
    """The artifact service (in the right project) and the path a URI names, with the
    pin of the first registry version on the way (a version's source may itself be a
    models:/ URI). A malformed URI is an InvalidArgumentError naming argument, the
    caller's argument that led to it."""
    current, pin = await files_of(ModelRegistryAPIClient(client._transport), uri, argument)
    if current != uri and scheme_of(current) not in SCHEMES:  # s3://, https://, ...
        raise FailedPreconditionError(
            f"{uri} is stored at {current!r}, outside Cairn's artifact service: fetch it "
            "with the tools of that store",
            reason="INVALID_ARTIFACT_LOCATION",
        )
    parsed = parse_uri(current, argument)
    if isinstance(parsed, ArtifactUri):
        store = in_project(client._transport, parsed.project)
        return _Location(store, parsed.path, _last_segment(parsed.path), pin)
    assert isinstance(parsed, RunUri)  # files_of follows every models:/ URI
    store, root = await run_store(client, parsed.run_id)
    return _Location(store, join(root, None, parsed.path), _last_segment(parsed.path), pin)


def _last_segment(path: str | None) -> str:
    return PurePosixPath(path or "").name


async def _logged_manifest(store: ArtifactClient, directory: str) -> bytes | None:
    """The manifest of a model logged at directory already, if any: a model's files must
    not change under a version that points at them."""
    try:
        uri = str(ArtifactUri(store.project, directory))
        return await read_manifest(store, f"{directory}/{MANIFEST}", uri)
    except NotFoundError:
        return None


def _same_model(
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
        raise _logged_there(directory)
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


async def _upload(
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
            raise _logged_there(directory, error) from error
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
        raise _logged_there(directory, error) from error
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


def _logged_there(directory: str, error: AlreadyExistsError | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"a model is logged at {directory!r} already; log under another name",
        reason="OBJECT_ALREADY_EXISTS",
        metadata=error.metadata if error else None,
    )


async def _register(
    transport: Transport, name: str, info: ModelInfo, manifest: Manifest, resumed: bool
) -> int:
    """Creates the registered model when absent, then a version of it with a model
    artifact (Kubeflow's shape: named as the model, the format is the flavor); returns
    the version number. (Named after the directory, an artifact name the registry
    refuses, as a long one, failed the call after the version was made.) When resumed
    (the files were logged by a call that stopped part-way), the version that call made
    of these files, found by their manifest's sha256, is taken up rather than made
    twice, and given its model artifact if it lacks one."""
    registry = ModelRegistryAPIClient(transport)
    if await registry.get_registered_model_by_params(name=name) is None:
        with contextlib.suppress(AlreadyExistsError):  # created meanwhile by someone else
            await registry.create_registered_model(name)
    version = await _version_made(registry, name, info) if resumed else None
    if version is None:
        version = await registry.create_model_version(
            name,
            info.artifact_uri,
            run_id=info.run_id,
            tags={MANIFEST_TAG: info.manifest_sha256},
        )
    elif await registry.get_model_artifacts(version.id):
        return int(version.version or 0)
    format_version = next(iter(manifest.libraries.values()), "") or None
    await registry.upsert_model_artifact(
        ModelArtifact(
            name,
            uri=info.artifact_uri,
            model_format_name=info.flavor,
            model_format_version=format_version,
        ),
        version.id,
    )
    return int(version.version or 0)


async def _version_made(
    registry: ModelRegistryAPIClient, name: str, info: ModelInfo
) -> MlflowModelVersion | None:
    """The version of name made of exactly these files (its source and manifest pin)."""
    found = await registry.search_model_versions(
        f"name = {quoted(name)} AND tags.`{MANIFEST_TAG}` = {quoted(info.manifest_sha256)}"
        f" AND source_uri = {quoted(info.artifact_uri)}",
        order_by=["version ASC"],
    )
    return found[0] if found else None


async def _read_manifest(location: _Location, uri: str) -> tuple[bytes, Manifest]:
    """The manifest at a location, which must be the one its pin names, if any."""
    path = location.path
    try:
        data = await read_manifest(location.store, f"{path}/{MANIFEST}" if path else MANIFEST, uri)
    except NotFoundError:
        raise NotFoundError(
            f"{uri} was registered with a model logged with log_model, whose files are gone "
            "from its source (deleted, or removed with its run by a garbage collection)"
            if location.manifest_sha256
            else f"{uri} holds no model logged with log_model (no {MANIFEST})",
            reason="OBJECT_NOT_FOUND",
        ) from None
    found = ModelCache.key(data)
    if location.manifest_sha256 and found != location.manifest_sha256:
        raise DataLossError(
            f"{uri} was registered with the model whose manifest has sha256 "
            f"{location.manifest_sha256}; its source now holds another model ({found}): "
            "the files changed since it was registered",
            reason="CHECKSUM_MISMATCH",
            metadata={"sha256": found, "expected_sha256": location.manifest_sha256},
        )
    return data, Manifest.from_json(data, uri)


async def read_manifest(store: ArtifactClient, path: str, uri: str) -> bytes:
    """The bytes of the manifest at path (which uri names in errors), read as they
    stream in, so that a huge object posing as a manifest stops early; under the
    client's default deadline, as its unary calls are (a byte stream takes none, and
    one that never answers would hold the caller for ever).

    Raises:
        NotFoundError: no object is at path.
        DataLossError: (INVALID_MODEL_MANIFEST) it is larger than any manifest.
    """
    data = bytearray()
    source = cast(AsyncGenerator[bytes], store.open(path, timeout=store._transport.timeout))
    async with contextlib.aclosing(source) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) > MAX_MANIFEST_BYTES:
                raise invalid_manifest(uri, f"is larger than {MAX_MANIFEST_BYTES} bytes")
    return bytes(data)


async def _fetch(
    store: ArtifactClient,
    path: str,
    manifest_bytes: bytes,
    manifest: Manifest,
    cache: ModelCache,
    uri: str,
    progress: Progress = False,
) -> Path:
    """The model's local directory: the cache entry of its manifest, filled when absent."""
    key = cache.key(manifest_bytes)
    if (entry := await asyncio.to_thread(cache.lookup, key, manifest)) is not None:
        return entry
    total = sum(entry.size for entry in manifest.files.values())
    with writing(cache.root):
        async with cache.filling(key, manifest_bytes, manifest) as scratch:
            # The manifest's names as a directory download checks its objects' names:
            # ones this file system cannot hold apart ("a" and "A" on macOS or Windows)
            # would leave one file where the manifest names two, unsafe ones (Windows'
            # "NUL", say) name no file here.
            await asyncio.to_thread(tree_files, scratch, "", list(manifest.files))
            with meter(progress, "download", uri, total) as counted:
                for relative, expected in manifest.files.items():
                    local = inside(scratch, relative, uri)
                    remote = join(path, None, relative)
                    stored = await _check_stored(store, remote, relative, expected, uri)
                    await store._downloads.file(stored, local, counted, None, None)
                    await asyncio.to_thread(_manifest.verify_file, local, relative, expected, uri)
    return cache.root / key


@contextlib.asynccontextmanager
async def shipped_bytecode(
    store: ArtifactClient, path: str, entry: Path, manifest: Manifest, uri: str
) -> AsyncIterator[dict[str, Path | None]]:
    """The compiled modules the model shipped, for a copy of the cache entry: each None
    when the entry holds it as shipped, else fetched from the store into a temporary
    folder, checked. Python may have written over them in the entry, importing the
    model's code there (ModelCache.lookup lets it): copied, they failed the copy
    (another size) or were handed out as the model's (the same size)."""
    compiled = [name for name in manifest.files if compiled_module(PurePosixPath(name), manifest)]
    shipped: dict[str, Path | None] = dict.fromkeys(compiled)
    stale = [
        relative
        for relative in compiled
        if not await asyncio.to_thread(_manifest.holds, entry / relative, manifest.files[relative])
    ]
    if not stale:
        yield shipped
        return
    with tempfile.TemporaryDirectory(prefix="cairn-") as folder:
        with meter(False, "download", uri, None) as counted:
            for number, relative in enumerate(stale):
                expected, local = manifest.files[relative], Path(folder) / str(number)
                remote = join(path, None, relative)
                stored = await _check_stored(store, remote, relative, expected, uri)
                await store._downloads.file(stored, local, counted, None, None)
                await asyncio.to_thread(_manifest.verify_file, local, relative, expected, uri)
                shipped[relative] = local
        yield shipped


async def _check_stored(
    store: ArtifactClient, remote: str, relative: str, expected: _manifest.FileEntry, uri: str
) -> ObjectInfo:
    """The stored object of a manifest entry (downloaded from it, with no second stat);
    refuses, before any byte moves, an entry naming a directory of the store (whose
    download would be a whole tree), no object, or an object other than the one logged."""
    try:
        stored = await store.stat(remote)
    except NotFoundError:
        if await store.list(f"{remote}/", options=ListOptions(limit=1)):
            raise invalid_manifest(uri, f"names {relative!r}, a directory of the store") from None
        raise _manifest.gone(relative, uri) from None
    found = _manifest.FileEntry(stored.size, stored.sha256 or expected.sha256)
    if found != expected:
        raise _manifest.mismatch(relative, found, expected, uri)
    return stored
