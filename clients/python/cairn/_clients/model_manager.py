"""Devo ML Model Manager's calls on Cairn's registry: `add_model`, `get_model`,
`find_model`, `get_models`.

A Devo model is a registered model whose latest version holds the model file: the file
is stored as a `files` model (with a manifest of its sha256, docs/models.md), the
version's model artifact names the engine as its format. `force` adds a version rather
than changing files a version points at, so what was registered stays loadable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .. import _names as names
from .._argument_error import invalid_argument
from .._numbers import whole
from ..exceptions import AlreadyExistsError, NotFoundError
from ..models import _manifest
from ..models._cache import refuse_download_into
from ..models._copies import copy_files
from ..models._flavors import FilesFlavor
from ..models._uris import ArtifactUri, parse_uri
from ..types._journey import ManagedModel
from ..types._registry import ModelArtifact, ModelVersion, RegisteredModel
from ._local_files import MODEL_NOT_SENT, check_above, files_in, local_reads, local_writes
from .artifacts import ArtifactClient, in_project
from .model_fetches import model_to_copy, read_manifest
from .model_uploads import upload
from .registry import ModelRegistryAPIClient
from .tracking import TrackingClient
from .versioned_artifacts import _REFUSED, UNNAMED, _segment, remove_unnamed

# Where add_model puts files in the artifact service, one directory per version.
FILES_ROOT = "registry/models"
PAGE_SIZE = 1000

# The longest engine the registry keeps as a model artifact's format (free text).
MAX_ENGINE_LENGTH = 10_000


class ModelManager:
    """Devo's `Client` over a registry client's channel.

    `ModelManager(registry, download_path)`: download_path is where get_model and
    find_model put files (the current directory by default, as Devo's default
    downloader); downloads pass through the model cache (cache_dir, else
    cairn.models.default_cache_dir()). Models are the project's registered models;
    each call reads or writes their latest version.
    """

    _sync_view = True

    def __init__(
        self,
        registry: ModelRegistryAPIClient,
        download_path: str | os.PathLike[str] = ".",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._registry = registry
        self.page_size = page_size
        self.download_path = Path(download_path).expanduser()
        self.cache_dir = cache_dir

    async def add_model(
        self,
        name: str,
        engine: str,
        model_file: str | os.PathLike[str],
        description: str | None = None,
        force: bool = False,
    ) -> ManagedModel:
        """Uploads a model file and registers it under name with its engine.

        Args:
            name: the model's name.
            engine: how the file is to be read ("ONNX", "H2O", ...): the version's model
                format. Matching it to the file is the caller's business, as in Devo.
            model_file: the local file (or directory); "~" is expanded.
            description: the model's description.
            force: replaces an existing model: its latest version becomes a new one
                with this file and engine; the description changes when one is given.

        Returns:
            The model as stored.

        Raises:
            FailedPreconditionError: before anything is sent, a folder or file of
                model_file that cannot be read (not the caller's, or removed while it
                is copied), LOCAL_READ_FAILED, metadata path and errno; its copy that
                cannot be written (the temporary folder's disk full), LOCAL_WRITE_FAILED.
            InvalidArgumentError: model_file is no file or directory, the engine is
                empty, or the file's name, the engine or the model's name is one the
                registry refuses (before any call).
            ModelAlreadyExists: the name is taken and force is False. An add of this
                file that stopped after its version and before the engine (an outage)
                is completed instead, by this call run again.
        """
        source = await asyncio.to_thread(_model_file, model_file)
        # Checked here: a lookup finds nothing by a name no model can have, and the
        # model's file would go up before the registry refused the name.
        names.registered_model_name(name, "name")
        _check_artifact(source.name, engine)
        existing = await self._registry.get_registered_model_by_params(name=name)
        if existing is not None:
            left = await self._left_by_an_earlier_add(existing, source, force)
            if left is not None:
                return await self._finish(existing, left, source.name, engine)
            if not force:
                raise _taken(name, await self._registry.get_latest_versions(name))
        model, version = await self._add_version(name, existing, source, description, force)
        uri = version.source_uri or ""
        artifact = await self._registry.upsert_model_artifact(
            ModelArtifact(source.name, uri=uri, model_format_name=engine), version.id
        )
        # Read again: a new version changes the model's update time.
        return _managed(
            await self._registry.get_registered_model_by_id(model.id or "") or model,
            version,
            artifact,
        )

    async def _add_version(
        self,
        name: str,
        existing: RegisteredModel | None,
        source: Path,
        description: str | None,
        force: bool,
    ) -> tuple[RegisteredModel, ModelVersion]:
        """Uploads source and makes the model's version that names its files. Files no
        version names would stay for ever, nothing removing them, so they go again when
        the add fails before its version: as when another caller took the name since the
        lookup. A lost answer to the version (UNAVAILABLE, a deadline) may hide one that
        was made, whose files must stay."""
        transport = self._registry._transport
        store = in_project(transport, transport.project)
        directory = f"{FILES_ROOT}/{_segment(name)}/{uuid.uuid4().hex}"
        try:
            uri = await self._store_file(store, directory, source)
            model = await self._model_for(name, existing, description, force)
        except UNNAMED:
            await remove_unnamed(store, directory)
            raise
        try:
            version = await self._registry.upsert_model_version(
                ModelVersion("", description=description, source_uri=uri), model.id or ""
            )
        except _REFUSED:
            await remove_unnamed(store, directory)
            raise
        return model, version

    async def _left_by_an_earlier_add(
        self, model: RegisteredModel, source: Path, force: bool
    ) -> ModelVersion | None:
        """The version an add of source's very files stopped at, before its artifact
        (the engine), if the model's latest is one: made by add_model (its source under
        FILES_ROOT), without an artifact, of the same files; and, without force, the
        model's only version (an add without force never follows another version)."""
        latest = await self._registry.get_latest_versions(model.name)
        version = max(latest, key=lambda v: v.version or 0, default=None)
        ours = str(ArtifactUri(self._registry.project, f"{FILES_ROOT}/{_segment(model.name)}/"))
        if (
            version is None
            or not (version.source_uri or "").startswith(ours)
            or (not force and version.version != 1)
            or await self._registry.get_model_artifacts(version.id)
        ):
            return None
        stored = await self._stored_files(version.source_uri or "")
        return version if stored == await asyncio.to_thread(_files_of, source) else None

    async def _stored_files(self, uri: str) -> dict[str, _manifest.FileEntry] | None:
        """The files the manifest at a version's source names, or None without one."""
        transport = self._registry._transport
        store = in_project(transport, transport.project)
        parsed = parse_uri(uri)
        if not isinstance(parsed, ArtifactUri):
            return None
        directory = parsed.path
        try:
            data = await read_manifest(store, f"{directory}/{_manifest.MANIFEST}", uri)
        except NotFoundError:
            return None
        return _manifest.Manifest.from_json(data, uri).files

    async def _finish(
        self, model: RegisteredModel, version: ModelVersion, file_name: str, engine: str
    ) -> ManagedModel:
        """Gives the version an add made of its file the artifact that add did not."""
        artifact = await self._registry.upsert_model_artifact(
            ModelArtifact(file_name, uri=version.source_uri or "", model_format_name=engine),
            version.id,
        )
        return _managed(model, version, artifact)

    async def get_model(self, name: str, download_file: bool | None = None) -> ManagedModel:
        """The model's latest version; with download_file, its file is downloaded into
        download_path (sha256-checked) and `path` says where.

        Raises:
            InvalidArgumentError: name is empty.
            ModelNotFound: no model has the name, or (with download_file) the latest
                version's files are not there to download.
        """
        found = await self._latest(name)
        return await self._download(found) if download_file else found

    async def find_model(self, name: str, download_file: bool | None = None) -> ManagedModel | None:
        """As get_model, but None when no model has the name. A model that is there
        but whose files are not (deleted from the store, a latest version without any)
        raises the download's NotFoundError, as get_model does: None would say that
        no model has the name."""
        try:
            found = await self._latest(name)
        except NotFoundError:  # also a model deleted between the lookup's calls
            return None
        return await self._download(found) if download_file else found

    async def _latest(self, name: str) -> ManagedModel:
        """The model's latest version, without downloading it.

        Raises:
            NotFoundError: REGISTERED_MODEL_NOT_FOUND, no model has the name.
        """
        # Checked here: the registry's lookup takes a name or an external id, and said
        # "give exactly one of name, external_id" of "", an argument Devo's calls lack.
        if not isinstance(name, str) or not name:
            raise invalid_argument("name", f"must be a model's name, not {name!r}")
        model = await self._registry.get_registered_model_by_params(name=name)
        if model is None:
            raise NotFoundError(f"model {name!r} not found", reason="REGISTERED_MODEL_NOT_FOUND")
        # The highest number, as get_models and models:/<name>/latest choose: creation
        # times of versions made at once need not follow their numbers.
        latest = await self._registry.get_latest_versions(name)  # the highest per stage
        version = max(latest, key=lambda v: v.version or 0, default=None)
        artifacts = await self._registry.get_model_artifacts(version.id) if version else []
        return _managed(model, version, artifacts[0] if artifacts else None)

    async def get_models(self) -> list[ManagedModel]:
        """Every model of the project (all pages), each as its latest version.

        Reads the models, versions and model artifacts of the project a page (page_size,
        1,000 by default) at a time: three listings, not a call per model.
        """
        registry, size = self._registry, whole(self.page_size, "page_size", 32)
        models = await registry._every_registered_model(size)
        latest: dict[str, ModelVersion] = {}
        for version in await registry._every_model_version(size):
            key = version.registered_model_id or ""
            if key not in latest or (version.version or 0) > (latest[key].version or 0):
                latest[key] = version
        wanted = {v.id: v.registered_model_id for v in latest.values()}
        first: dict[str, ModelArtifact] = {}
        for artifact in await registry._every_model_artifact(size):
            model_id = wanted.get(artifact.model_version_id or "")
            if model_id is not None:
                first.setdefault(model_id, artifact)
        return [_managed(m, latest.get(m.id or ""), first.get(m.id or "")) for m in models]

    async def _model_for(
        self, name: str, existing: RegisteredModel | None, description: str | None, force: bool
    ) -> RegisteredModel:
        if existing is None:
            try:
                return await self._registry.upsert_registered_model(
                    RegisteredModel(name, description=description)
                )
            except AlreadyExistsError:  # made meanwhile by another caller
                if not force:
                    raise
                existing = await self._registry.get_registered_model_by_params(name=name)
                assert existing is not None
        if description is not None and existing.description != description:
            # The description alone: the model read earlier sent back whole would undo
            # what others changed since (its custom properties, owner, state).
            return await self._registry.update_registered_model(existing.name, description)
        return existing

    async def _store_file(self, store: ArtifactClient, directory: str, source: Path) -> str:
        with tempfile.TemporaryDirectory(prefix="cairn-model-") as scratch:
            manifest = await asyncio.to_thread(
                _manifest.save,
                str(source),
                FilesFlavor(),
                Path(scratch),
                signature=None,
                metadata=None,
                run_id="",
                artifact_path=directory,
            )
            await upload(store, directory, Path(scratch), manifest)
        return str(ArtifactUri(store.project, directory))

    async def _download(self, model: ManagedModel) -> ManagedModel:
        """The files through the model cache (checked against their manifest), then
        copied; never loaded, so a pickled model downloads without being unpickled. A
        model without a version has nothing to download and is answered as it is."""
        if model.version is None:
            return model
        loader = TrackingClient(self._registry._transport)
        uri = f"models:/{model.name}/{model.version}"
        refuse_download_into(self.download_path, self.cache_dir, uri)
        with local_writes(self.download_path, "nothing was downloaded"):
            await asyncio.to_thread(check_above, self.download_path, uri)
            await asyncio.to_thread(self.download_path.mkdir, parents=True, exist_ok=True)
        try:
            async with model_to_copy(loader, uri, self.cache_dir) as (entry, manifest, shipped):
                path = await asyncio.to_thread(
                    copy_files, entry, manifest, self.download_path, uri, shipped
                )
        except NotFoundError as error:
            if error.reason != "OBJECT_NOT_FOUND":
                raise
            # Registered by hand, without a manifest: fetched as it is.
            written = await loader.download_artifacts(
                uri, self.download_path, cache_dir=self.cache_dir
            )
            return dataclasses.replace(model, path=written)
        return dataclasses.replace(model, path=str(path))


def _check_artifact(file_name: str, engine: str) -> None:
    """Refuses what the registry would refuse of the version's model artifact, named
    after the file with the engine as its format, before the file goes up: refused once
    the version was made, it left a version without its engine, which each add run again
    took up and was refused on the same way."""
    if found := names.problem(file_name, names.MAX_REGISTRY_NAME_LENGTH):
        raise invalid_argument(
            "model_file", f"{file_name!r} names the model artifact, which {found}"
        )
    if not isinstance(engine, str) or not engine.strip():
        # Read back, an empty engine is None: "no model artifact", which this add made.
        raise invalid_argument(
            "engine", 'must name how the file is read ("ONNX", "H2O", ...), not be empty'
        )
    if len(engine) > MAX_ENGINE_LENGTH:
        raise invalid_argument("engine", f"must be at most {MAX_ENGINE_LENGTH} characters")
    if "\x00" in engine:
        raise invalid_argument("engine", "must not contain NUL characters")


def _files_of(source: Path) -> dict[str, _manifest.FileEntry]:
    """What the files flavor's manifest says of source: each file by its path under
    source's name (blocking)."""
    if source.is_file():
        return {source.name: _entry_of(source)}
    return {
        f"{source.name}/{relative}": _entry_of(source / relative) for relative in files_in(source)
    }


def _entry_of(file: Path) -> _manifest.FileEntry:
    # A file that cannot be read (not the caller's, or removed since it was listed) is
    # refused as files_in refuses one (LOCAL_READ_FAILED).
    with local_reads(file, MODEL_NOT_SENT):
        return _manifest.entry_of(file)


def _taken(name: str, versions: list[Any]) -> AlreadyExistsError:
    hint = "pass force=True to replace it"
    if not versions:  # created by another call, or left by an add that stopped there
        hint = "it has no version yet; pass force=True to add this file as its first"
    return AlreadyExistsError(
        f"model {name!r} exists; {hint}", reason="REGISTERED_MODEL_ALREADY_EXISTS"
    )


def _managed(
    model: RegisteredModel, version: ModelVersion | None, artifact: ModelArtifact | None
) -> ManagedModel:
    return ManagedModel(
        id=model.id or "",
        name=model.name,
        engine=artifact.model_format_name if artifact else None,
        description=model.description,
        version=version.version if version else None,
        file_name=artifact.name if artifact else None,
        uri=(artifact.uri if artifact else None) or (version.source_uri if version else None),
        create_time_since_epoch=model.create_time_since_epoch,
        last_update_time_since_epoch=model.last_update_time_since_epoch,
    )


def _model_file(path: str | os.PathLike[str]) -> Path:
    """Devo's paths may start with "~"; the model's file (or directory, of a file at
    least) must exist, checked before any call, naming the caller's argument."""
    expanded = Path(path).expanduser()
    if not (expanded.is_file() or expanded.is_dir()):
        raise invalid_argument("model_file", f"{str(expanded)!r} is no file or directory")
    if expanded.is_dir() and not files_in(expanded):  # get_model answered its whole folder
        raise invalid_argument("model_file", f"{str(expanded)!r} holds no file")
    return expanded
