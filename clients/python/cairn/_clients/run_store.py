"""Where a run keeps its artifacts: the artifact service in its project, under a root
path, as its artifact URI `cairn-artifacts://<project>/<path>` says."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from .._transport import Transport
from ..models._uris import ARTIFACTS_SCHEME
from ..types._tracking import Run
from .artifacts import ArtifactClient


class RunClient(Protocol):
    """What the run mixins of TrackingClient need of it."""

    _transport: Transport

    async def get_run(self, run_id: str) -> Run: ...


async def run_store(client: RunClient, run_id: str) -> tuple[ArtifactClient, str]:
    """An ArtifactClient in the run's project, and the run's root path in it."""
    uri = (await client.get_run(run_id)).info.artifact_uri
    parts = urlsplit(uri)
    if parts.scheme != ARTIFACTS_SCHEME:
        raise ValueError(f"run {run_id} keeps artifacts at {uri!r}, outside the artifact service")
    transport = client._transport.for_project(parts.netloc, timeout=None)
    return ArtifactClient(transport), parts.path.strip("/")


def join(root: str, directory: str | None, name: str) -> str:
    """root/directory/name, without empty parts or doubled slashes."""
    return "/".join(part.strip("/") for part in (root, directory or "", name) if part.strip("/"))
