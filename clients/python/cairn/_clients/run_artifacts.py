"""MLflow's artifact methods on `TrackingClient`: files of a run, in the artifact service.

A run's artifact URI is `cairn-artifacts://<project>/<path>`; these methods move files
under that path through an `ArtifactClient` on the same channel.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from .._progress import Progress
from ..exceptions import NotFoundError
from ..models._cache import refuse_download_into
from ..models._uris import RunUri, is_uri, parse_uri
from ..types._artifacts import ObjectInfo
from ..types._paging import Pager
from ._local_files import download_folder, local_file
from .model_fetches import download_uri
from .run_store import RunClient, file_name, join, run_store, within_run


class RunArtifacts:
    """Mixed into TrackingClient, which provides `_transport` and `get_run`."""

    async def log_artifact(
        self: RunClient,
        run_id: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        progress: Progress = False,
    ) -> ObjectInfo | list[ObjectInfo]:
        """Uploads a local file, or a directory with its tree, into the run's artifacts,
        under artifact_path by its own name (MLflow's `<artifact_path>/<dirname>`).

        Returns the object stored, or a directory's objects.

        progress: True for a bar on stderr (one line when it is not a terminal), a rich
        Console, or a callable given (bytes_done, bytes_total); docs/artifacts.md.
        """
        folder = within_run(artifact_path or "", "artifact_path")
        store, root = await run_store(self, run_id, writing=True)
        source = Path(local_path)
        target = join(root, folder, _own_name(source))
        if await asyncio.to_thread(source.is_dir):
            return await store.upload_tree(target, source, overwrite=True, progress=progress)
        return await store.upload(target, source, overwrite=True, progress=progress)

    async def log_artifacts(
        self: RunClient,
        run_id: str,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        progress: Progress = False,
    ) -> list[ObjectInfo]:
        """Uploads every file under a local directory, keeping the tree.

        progress shows the directory as one transfer, of the size of all its files (as
        `log_artifact` says).
        """
        folder = within_run(artifact_path or "", "artifact_path")
        store, root = await run_store(self, run_id, writing=True)
        return await store.upload_tree(
            join(root, None, folder), local_dir, overwrite=True, progress=progress
        )

    async def log_text(self: RunClient, run_id: str, text: str, artifact_file: str) -> ObjectInfo:
        """Stores text as a UTF-8 file at artifact_file within the run's artifacts.

        Raises:
            InvalidArgumentError: artifact_file is empty or ends with "/" (before
                anything is sent).
        """
        path = file_name(artifact_file)
        store, root = await run_store(self, run_id, writing=True)
        return await store.upload(
            join(root, None, path),
            text.encode(),
            overwrite=True,
            content_type="text/plain; charset=utf-8",
        )

    async def log_dict(
        self: RunClient, run_id: str, dictionary: dict[str, Any], artifact_file: str
    ) -> ObjectInfo:
        """Stores a dict as JSON (or YAML for .yaml/.yml files, when PyYAML is installed).

        A value neither format can encode (a numpy scalar, a `datetime.date` in JSON) is
        stored as its `str()`, as MLflow does, rather than failing the call.

        Raises:
            InvalidArgumentError: artifact_file is empty or ends with "/" (before
                anything is sent).
        """
        path = file_name(artifact_file)
        if artifact_file.endswith((".yaml", ".yml")):
            text, content_type = _yaml_text(dictionary), "application/yaml"
        else:
            text = json.dumps(dictionary, indent=2, default=str)
            content_type = "application/json"
        store, root = await run_store(self, run_id, writing=True)
        return await store.upload(
            join(root, None, path),
            text.encode(),
            overwrite=True,
            content_type=content_type,
        )

    async def list_artifacts(
        self: RunClient, run_id: str, path: str | None = None
    ) -> list[ObjectInfo]:
        """One level of the run's artifacts, with paths relative to the run's root; path
        normalised as download_artifacts' is (`./a//b` is `a/b`), before anything is sent."""
        directory = within_run(path or "", "path")
        store, root = await run_store(self, run_id)
        prefix = join(root, directory, "") + "/"
        listed = []
        async for entry in Pager(lambda options: store.list(prefix, options=options)):
            relative = entry.path[len(root) + 1 :]
            listed.append(ObjectInfo(**{**entry.__dict__, "path": relative.rstrip("/")}))
        return listed

    async def download_artifacts(
        self: RunClient,
        run_id: str,
        path: str | os.PathLike[str] | None = None,
        dst_path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: Progress = False,
    ) -> str:
        """Fetches one artifact file or directory; returns the local path written.

        run_id may be a URI instead (models:/<name>/<version>, models:/<name>@<alias>,
        models:/<name>/<stage>, runs:/<run_id>/<path>, cairn-artifacts://<project>/<path>);
        the next argument is then the destination: `download_artifacts(uri, dst)`. A model
        directory is fetched through the local model cache (cache_dir, or
        cairn.models.default_cache_dir()), checked against its manifest. progress shows
        the file or directory as one transfer (as `log_artifact` says).
        """
        if is_uri(run_id):
            try:
                return await download_uri(self, run_id, dst_path or path, cache_dir, progress)
            except NotFoundError as missing:
                parsed = parse_uri(run_id)
                if not isinstance(parsed, RunUri) or missing.reason != "OBJECT_NOT_FOUND":
                    raise
                raise _missing(missing, parsed.run_id, parsed.path) from None
        if path is None:
            raise TypeError("download_artifacts needs the path within the run, or a URI")
        path = str(path)
        relative = within_run(path, "path")
        store, root = await run_store(self, run_id)
        source = join(root, None, relative) if relative else root
        with download_folder(dst_path) as destination:
            # As MLflow's: the path within the run is kept under dst_path, so files of
            # the same name in two folders never overwrite each other. Each segment is
            # checked as a download's are: "C:" would name another place on Windows.
            target = local_file(destination, relative, relative) if relative else destination
            refuse_download_into(target, cache_dir, run_id)
            try:
                written = await store.download(source, target, progress=progress)
            except NotFoundError as missing:
                raise _missing(missing, run_id, path) from None
        return str(written)


def _own_name(source: Path) -> str:
    """The name a local file or directory is stored by: its own, with `.` and `..`
    resolved to the folder they name (without following a link, whose name it keeps)."""
    return Path(os.path.abspath(source)).name


def _missing(missing: NotFoundError, run_id: str, path: str) -> NotFoundError:
    """A run's artifact not found, named as the caller named it: the store's path is
    where the run's artifacts are (experiments/<id>/<run id>/...), not theirs."""
    named = f"no artifact at {path.strip('/')!r}" if path.strip("/") else "no artifacts"
    return NotFoundError(
        f"run {run_id} has {named}",
        reason=missing.reason,
        metadata={**missing.metadata, "run_id": run_id, "path": path},
    )


def _yaml_text(dictionary: dict[str, Any]) -> str:
    """YAML of `dictionary`, with values safe_dump has no tag for written as strings."""
    import yaml  # optional, as in MLflow

    class Stringifying(yaml.SafeDumper):
        pass

    # The None key is the representer of last resort, SafeDumper's raises.
    Stringifying.add_representer(None, lambda dumper, value: dumper.represent_str(str(value)))
    return yaml.dump(dictionary, Dumper=Stringifying)
