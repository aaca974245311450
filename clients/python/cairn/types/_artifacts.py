"""Artifact types: stored objects and presigned URLs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..artifacts.v1 import artifacts_pb2 as pb


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object, or a "directory" of a one-level list (is_dir, path ends in "/").

    `file_size` is MLflow's FileInfo name for size.
    """

    path: str
    is_dir: bool = False
    size: int = 0
    sha256: str = ""
    content_type: str = ""
    uri: str = ""
    create_time: int | None = None
    update_time: int | None = None
    project: str = "default"

    @property
    def file_size(self) -> int | None:
        return None if self.is_dir else self.size

    @property
    def artifact_uri(self) -> str:
        """The object's name for other clients and services, "cairn-artifacts://<project>/
        <path>": give this (not `uri`, where one backend keeps the bytes) to the registry
        or a teammate; `TrackingClient.download_artifacts` and `load_model` resolve it."""
        return f"cairn-artifacts://{self.project}/{self.path.rstrip('/')}"


@dataclass(frozen=True)
class PresignedUrl:
    """A URL to send a request to, with the headers it needs; a PUT's upload_id goes
    to `ArtifactClient.confirm_upload`."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    upload_id: str = ""


def object_from_proto(message: pb.ObjectInfo) -> ObjectInfo:
    return ObjectInfo(
        path=message.path,
        size=message.size,
        sha256=message.sha256,
        content_type=message.content_type,
        uri=message.uri,
        create_time=message.create_time.ToMilliseconds() or None,
        update_time=message.update_time.ToMilliseconds() or None,
        project=message.project,
    )


def directory(path: str, project: str) -> ObjectInfo:
    return ObjectInfo(path=path, is_dir=True, project=project)
