"""Where a run keeps its artifacts: the artifact service in its project, under a root
path, as its artifact URI `cairn-artifacts://<project>/<path>` says."""

from __future__ import annotations

import posixpath
from typing import Protocol
from urllib.parse import urlsplit

from .._argument_error import invalid_argument
from .._transport import Transport
from ..exceptions import FailedPreconditionError
from ..models._uris import ARTIFACTS_SCHEME
from ..types._tracking import Experiment, LifecycleStage, Run
from .artifacts import ArtifactClient, in_project


class RunClient(Protocol):
    """What the run mixins of TrackingClient need of it."""

    _transport: Transport

    async def get_run(self, run_id: str) -> Run: ...

    async def get_experiment(self, experiment_id: str) -> Experiment: ...


async def run_store(
    client: RunClient, run_id: str, *, writing: bool = False
) -> tuple[ArtifactClient, str]:
    """An ArtifactClient in the run's project, and the run's root path in it.

    Raises:
        FailedPreconditionError: writing, and the run or its experiment is deleted
            (RUN_DELETED, EXPERIMENT_DELETED), as the tracking service refuses its other
            writes. The artifact service knows no runs: what it stored there would be
            removed with the run by the next garbage collection, a model version
            registered from it too.
    """
    run = await client.get_run(run_id)
    if writing and run.info.lifecycle_stage == LifecycleStage.DELETED:
        raise await _deleted(client, run)
    parts = urlsplit(run.info.artifact_uri)
    if parts.scheme != ARTIFACTS_SCHEME:
        raise ValueError(
            f"run {run_id} keeps artifacts at {run.info.artifact_uri!r}, outside the artifact "
            "service"
        )
    return in_project(client._transport, parts.netloc), parts.path.strip("/")


async def _deleted(client: RunClient, run: Run) -> FailedPreconditionError:
    """The tracking service's refusal of a write to a run that reads as deleted: a run
    of a deleted experiment does too."""
    run_id = run.info.run_id
    experiment = await client.get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        return FailedPreconditionError(
            f"the experiment of run {run_id} is deleted; restore it before writing",
            reason="EXPERIMENT_DELETED",
            metadata={"run_id": run_id},
        )
    return FailedPreconditionError(
        f"run {run_id} is deleted; restore it before writing to it",
        reason="RUN_DELETED",
        metadata={"run_id": run_id},
    )


def join(root: str, directory: str | None, name: str) -> str:
    """root/directory/name, without empty parts or doubled slashes."""
    return "/".join(part.strip("/") for part in (root, directory or "", name) if part.strip("/"))


def within_run(path: str, argument: str) -> str:
    """path within a run's artifacts, normalised as MLflow's local store reads it
    (`./a//b` is `a/b`; "" for the run's root).

    Raises:
        InvalidArgumentError: path names a place above the run's root (`../x`).
    """
    normal = posixpath.normpath(path).strip("/") if path.strip("/") else ""
    if normal == ".." or normal.startswith("../"):
        raise invalid_argument(argument, f"names a place above the run's artifacts: {path!r}")
    return "" if normal == "." else normal


def file_name(artifact_file: str) -> str:
    """artifact_file, the name of the one file a run-artifact writer stores, checked
    before anything is sent (join it under the run's root with `join`), and normalised
    as MLflow normalises it: `./a.txt`, `d//a.txt` and `d/../a.txt` name `a.txt`,
    `d/a.txt` and `a.txt` (the store refuses such segments).

    Raises:
        InvalidArgumentError: artifact_file is empty, ends with "/", or names the root
            (`d/..`) or a place above it (`../x`, which the store would refuse naming
            its own path). Joined, the others would name the run's root or a
            directory, and the object stored there would stand in for the files under
            it (download_artifacts would fetch that object instead of the run's
            folder); MLflow refuses these (IsADirectoryError).
    """
    normal = within_run(artifact_file, "artifact_file")
    if not normal or artifact_file.endswith("/"):
        raise invalid_argument(
            "artifact_file",
            f"names a file within the run's artifacts, so it must not be empty, end with "
            f"'/' or name their root: {artifact_file!r}",
        )
    return normal
