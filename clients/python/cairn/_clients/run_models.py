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
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import _names as names
from .._argument_error import invalid_argument
from .._filter_text import quoted
from .._progress import Progress
from .._transport import Transport
from ..exceptions import AlreadyExistsError
from ..models import _manifest
from ..models._cache import ModelCache
from ..models._flavors import Flavor, UntrustedModelError, check_options, flavor_for, get_flavor
from ..models._info import ModelInfo
from ..models._manifest import Manifest
from ..models._uris import ArtifactUri, RunUri
from ..types._registry import MlflowModelVersion, ModelArtifact
from .model_fetches import CachePath, fetch, locate, manifest_at
from .model_sources import MANIFEST_TAG
from .model_uploads import logged_manifest, logged_there, same_model, upload
from .registry import ModelRegistryAPIClient
from .run_store import RunClient, join, run_store, within_run


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
                or a place above it; metadata or signature is no mapping, or holds what
                JSON cannot (before any call).
        """
        chosen = get_flavor(flavor) if isinstance(flavor, str) else flavor or flavor_for(model)
        # Here, before any call: the manifest, written after the flavor saved, keeps them.
        signature = _manifest.json_argument(signature, "signature")
        metadata = _manifest.json_argument(metadata, "metadata")
        if registered_model_name is not None:
            # Before any file goes up: refused after the upload, the model would stay
            # logged and unregistered, and a second log_model to register it would find
            # it there (OBJECT_ALREADY_EXISTS).
            names.registered_model_name(registered_model_name)
        name = _model_directory(name)
        store, root = await run_store(self, run_id, writing=True)
        directory = join(root, None, name)
        logged = await logged_manifest(store, directory)
        if logged is not None and registered_model_name is None:
            raise logged_there(directory)
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
                manifest_bytes = await upload(store, directory, Path(scratch), manifest, progress)
            else:  # logged by an earlier call that may have stopped before registering
                manifest_bytes, manifest = same_model(logged, manifest, store, directory)
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
        location = await locate(self, model_uri, "model_uri")
        manifest_bytes, manifest = await manifest_at(location, model_uri)
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
        directory = await fetch(
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
