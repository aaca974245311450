"""Models fetched by URI: located through the registry and tracking services, read from
the artifact service into the local cache, each file checked against its manifest."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple, cast

from .._progress import Meter, Progress, meter
from ..exceptions import DataLossError, FailedPreconditionError, NotFoundError
from ..models import _manifest
from ..models._cache import ModelCache, compiled_module, refuse_download_into
from ..models._copies import copy_model, writing
from ..models._manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest, written_as_manifest
from ..models._paths import inside, invalid_manifest
from ..models._uris import SCHEMES, ArtifactUri, RunUri, parse_uri, scheme_of
from ..types._artifacts import ObjectInfo
from ..types._paging import ListOptions
from ._file_batches import Batch
from ._local_files import download_folder, tree_files
from ._many_files import download_each, moves_alone
from .artifacts import ArtifactClient, in_project
from .model_sources import files_of
from .registry import ModelRegistryAPIClient
from .run_store import RunClient, join, run_store

CachePath = str | os.PathLike[str] | None
# A file of a model's manifest: its path in the model, and what it must hold.
FileOfModel = tuple[str, _manifest.FileEntry]


class Location(NamedTuple):
    """Where a URI's files are, the name a download gives them (the last segment of
    the path the URI names in its run or project; "" for the root of one, whose files
    land in the destination itself), and the sha256 of the manifest they must have when
    the URI went through a pinned registry version (None otherwise)."""

    store: ArtifactClient
    path: str
    name: str
    manifest_sha256: str | None = None


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
    location = await locate(client, uri, "run_id")  # download_artifacts' first argument
    with download_folder(dst_path) as destination:
        target = destination / location.name if location.name else destination
        refuse_download_into(target, cache_dir, uri)
        return await _download_located(location, target, uri, cache_dir, progress)


async def _download_located(
    location: Location, target: Path, uri: str, cache_dir: CachePath, progress: Progress
) -> str:
    """The files of a located URI written at target; the path written."""
    store, path = location.store, location.path
    if not (location.name or location.manifest_sha256):
        # A root (runs:/<run_id>) is its files, as download_artifacts(run_id, "", dst)
        # writes them: a model logged there before log_model refused it hid the others.
        return str(await store.download(path, target, progress=progress))
    try:
        manifest_bytes, manifest = await manifest_at(location, uri)
    except NotFoundError:
        if location.manifest_sha256:  # a version registered with a model, gone since
            raise
        return str(await store.download(path, target, progress=progress))
    cache = ModelCache(cache_dir)
    entry = await fetch(store, path, manifest_bytes, manifest, cache, uri, progress)
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
    location = await locate(client, uri)
    manifest_bytes, manifest = await manifest_at(location, uri)
    store, path = location.store, location.path
    entry = await fetch(store, path, manifest_bytes, manifest, ModelCache(cache_dir), uri)
    async with shipped_bytecode(store, path, entry, manifest, uri) as shipped:
        yield entry, manifest, shipped


async def locate(client: RunClient, uri: str, argument: str = "uri") -> Location:
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
        return Location(store, parsed.path, _last_segment(parsed.path), pin)
    assert isinstance(parsed, RunUri)  # files_of follows every models:/ URI
    store, root = await run_store(client, parsed.run_id)
    return Location(store, join(root, None, parsed.path), _last_segment(parsed.path), pin)


def _last_segment(path: str | None) -> str:
    return PurePosixPath(path or "").name


async def manifest_at(location: Location, uri: str) -> tuple[bytes, Manifest]:
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
    if not (location.manifest_sha256 or written_as_manifest(data)):
        # A user's own cairn-model.json among data files, which download_artifacts
        # fetches as any other file: no model, rather than a broken one to log again.
        raise NotFoundError(
            f"{uri} holds no model logged with log_model (its {MANIFEST} is no manifest)",
            reason="OBJECT_NOT_FOUND",
        )
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


async def fetch(
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
                await _Filling(store, path, scratch, uri, counted).every(manifest)
    return cache.root / key


class _Filling:
    """The files of a model's manifest, fetched from its path in store into a cache
    entry's scratch folder, each checked against the manifest."""

    def __init__(
        self, store: ArtifactClient, path: str, scratch: Path, uri: str, counted: Meter
    ) -> None:
        self._store, self._path, self._scratch = store, path, scratch
        self._uri, self._counted = uri, counted

    async def every(self, manifest: Manifest) -> None:
        """As a directory's download: small files in batches, several at once
        (docs/artifacts.md, "Trees")."""
        threshold = self._store.direct_threshold

        def alone(size: int) -> bool:
            return moves_alone(size, threshold)

        files = list(manifest.files.items())
        moved = await download_each(
            self._store._downloads.parcels(files, lambda entry: entry[1].size, alone),
            self._parcel,
            lambda parcel: not isinstance(parcel, Batch) and alone(parcel[1].size),
        )
        if moved.failure is not None:
            raise moved.failure[1]

    def _place(self, entry: FileOfModel) -> tuple[str, Path]:
        """Where a file of the manifest is stored, and the local file it becomes."""
        return join(self._path, None, entry[0]), inside(self._scratch, entry[0], self._uri)

    async def _parcel(self, parcel: Batch[FileOfModel] | FileOfModel) -> None:
        if not isinstance(parcel, Batch):
            return await self._one(parcel)
        batches = self._store._downloads.batches
        left = await batches.fetch(parcel, self._place, self._counted, None, None)
        handed_back = {relative for relative, _ in left}
        for entry in parcel.files:
            if entry[0] in handed_back:
                await self._one(entry)
            else:
                await self._verify(entry)

    async def _one(self, entry: FileOfModel) -> None:
        remote, local = self._place(entry)
        relative, expected = entry
        stored = await _check_stored(self._store, remote, relative, expected, self._uri)
        part = self._counted.part(expected.size)
        await self._store._downloads.file(stored, local, part, None, None)
        await self._verify(entry)

    async def _verify(self, entry: FileOfModel) -> None:
        local = self._place(entry)[1]
        await asyncio.to_thread(_manifest.verify_file, local, *entry, self._uri)


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
