"""The artifacts service: `cairn.artifacts.v1.ArtifactService`."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import asyncpg
import grpc

from cairn.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc

from ..common import logs
from ..common.access import role_table
from ..common.config import Config
from ..common.service import Resources, ServiceSpec, Unservable
from . import completions, purge
from .filesystem import FilesystemBackend
from .servicer import ArtifactServicer

_log = logs.get("cairn.artifacts")


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    artifacts_service_pb2_grpc.add_ArtifactServiceServicer_to_server(
        ArtifactServicer(resources), server
    )


async def _background(resources: Resources) -> None:
    """The service's work beside its calls (`purge.background`), and settling the
    completions under way when the server stops, before its pool closes."""
    await asyncio.gather(purge.background(resources), completions.settle_on_stop(resources))


async def _servable(pool: asyncpg.Pool, config: Config) -> None:
    """Refuses to serve a filesystem root the server cannot write, which would answer
    every upload UNAVAILABLE ("call again") for ever. A full one is served: downloads
    work, and deleting objects frees the space uploads need."""
    if config.artifact_backend != "filesystem":
        return
    backend = FilesystemBackend(config.artifact_dir)
    try:
        await asyncio.to_thread(backend.check_writable)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            _log.warning(
                "the artifact root is full: uploads fail until space is freed",
                root=str(backend.root),
            )
            return
        raise Unservable(_unusable_root(config, backend.root, error)) from error


def _unusable_root(config: Config, root: Path, error: OSError) -> str:
    where = "" if config.artifact_root else ", by default <CAIRN_DATA_DIR>/artifacts"
    failed = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return (
        f"the artifact root {root} cannot be used ({failed}): set CAIRN_ARTIFACT_ROOT "
        f"(--artifact-root{where}) to a directory this server can create and write in"
    )


# A presigned URL may be for a PUT, so creating one needs the editor role; a ticket
# grants what its call does (an upload: editor; a download, on S3 a presigned GET of
# the object's bytes as they are: viewer).
ROLES = role_table(
    viewer=["Download", "DownloadFiles", "StatObject", "ListObjects", "CreateDownloadTicket"],
    editor=[
        "Upload",
        "UploadFiles",
        "DeleteObject",
        "CreatePresignedUrl",
        "ConfirmUpload",
        "CreateUploadTicket",
        "CompleteUploadTicket",
        "AbortUploadTicket",
    ],
)

SPEC = ServiceSpec(
    name="artifacts",
    full_name=artifacts_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    schema="artifacts",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
    roles=ROLES,
    background=_background,
    purge=purge.purge,
    records_requests=True,
    servable=_servable,
    # Deduplicated by the publications recorded under their request ids (publication.py) and
    # the ids kept on uploads: ConfirmUpload discards what it refused, which a recorded
    # call's rollback would undo; a presigned URL is a bearer secret, never stored.
    # (Upload, a stream, is never recorded either: its publication is.) UploadFiles
    # claims its id and keeps its answer in the transaction that publishes its files,
    # which the interceptor's would hold, with a connection, while their bytes are
    # written (batch_store.py).
    # The ticket calls write nothing but, on S3, an upload's row (a repeat begins another,
    # which the janitor discards): an upload's ticket carries the request id to its
    # publication (CompleteUploadTicket's on S3), recorded as Upload's is;
    # CompleteUploadTicket discards what it refused, as ConfirmUpload does.
    # AbortUploadTicket's repeat finds no upload left to give up and answers OK, as the
    # first did; it aborts the multipart upload after its commit, which no rollback undoes.
    not_recorded=frozenset(
        {
            "ConfirmUpload",
            "CreatePresignedUrl",
            "CreateUploadTicket",
            "CreateDownloadTicket",
            "CompleteUploadTicket",
            "AbortUploadTicket",
            "UploadFiles",
        }
    ),
)
