"""The service's side of direct transfer (docs/artifacts.md): it signs the tickets the
servicer issues, runs the byte endpoint (`direct.py`) on the filesystem backend, and
records, writes and publishes what the endpoint receives, by the same steps as a
streamed upload (`uploads.py`'s begin, the backend's write, `publication.py`'s
publish; discard on failure), its caller admitted again by the gate when it begins and
just before it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import access
from ..common.config import Config
from ..common.errors import FailedPrecondition, Unavailable, invalid_field
from ..common.service import Resources
from ..common.stopping import Stopping
from ..common.tls import ServingTls
from . import backends, repeats
from .direct import ByteEndpoint, on_loop
from .filesystem import FilesystemBackend
from .http_requests import ChunkedReader
from .janitor import Janitor
from .objects import StoredObject, already_exists
from .store import ObjectStore
from .tickets import Admissions, Ticket, TicketSigner
from .uploads import PendingUpload


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DirectTransfers:
    """Tickets and the byte endpoint; `direct.Transfers` for the endpoint's threads."""

    def __init__(
        self,
        resources: Resources,
        backend: backends.Backend,
        objects: ObjectStore,
        janitor: Janitor,
        info: Callable[[StoredObject], pb.ObjectInfo],
        discard: Callable[[PendingUpload], Coroutine[Any, Any, None]],
    ) -> None:
        self.signer = TicketSigner()
        self._admissions = Admissions(resources.config.auth != "none")
        self._config = resources.config
        self._stopping = resources.stopping
        self._backend = backend
        self._objects = objects
        self._janitor = janitor
        self._info = info
        self._discard = discard
        self._loop = asyncio.get_running_loop()
        self._endpoint = _byte_endpoint(resources.config, backend, self)
        if self._endpoint is not None:
            closing = self._loop.create_task(self._close_on_stop(), name="byte endpoint")
            # Held, so that the server's stop waits for the transfers under way before
            # it closes the pool they publish through.
            if isinstance(self._stopping, Stopping):
                self._stopping.holds(closing)

    async def _close_on_stop(self) -> None:
        await self._stopping.wait()
        endpoint, grace = self._endpoint, self._config.shutdown_grace_seconds
        assert endpoint is not None
        closed = self._loop.create_future()

        def close() -> None:
            try:
                endpoint.close(grace)
            finally:
                # The loop may be gone: a second signal ends the process without this.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_settle, closed)

        # Transfers under way may end within the grace period: their database steps
        # still run on this loop while gRPC lets its calls end. The wait is on a daemon
        # thread of its own, not the loop's executor, which the process joins as it
        # ends: a stop cut short by a second signal must not wait for it.
        threading.Thread(target=close, name="byte endpoint close", daemon=True).start()
        await closed

    def check_offered(self) -> ByteEndpoint:
        """Raises FAILED_PRECONDITION (DIRECT_TRANSFER_UNAVAILABLE) unless the endpoint runs,
        and UNAVAILABLE (SHUTTING_DOWN) while the server stops: that is no reason for a
        client to stop asking for tickets (the next server may offer them)."""
        if self._stopping.is_set():
            raise Unavailable("SHUTTING_DOWN", "the server is stopping; stream instead")
        if self._endpoint is None:
            raise FailedPrecondition(
                "DIRECT_TRANSFER_UNAVAILABLE",
                "this server offers no direct transfer (CAIRN_ARTIFACT_DIRECT, filesystem "
                "backend only); stream through Upload and Download",
            )
        return self._endpoint

    def ticket(self, **claims: object) -> api.DirectTicket:
        """A signed ticket for the claims (tickets.Ticket's fields), and where to use it.
        A PUT ticket names the caller (with authentication on), whose admission by the
        gate is kept to ask again (tickets.Admissions); called by the call issuing it."""
        endpoint = self.check_offered()
        admit = access.readmission() if claims.get("method") == "PUT" else None
        if admit is not None and (caller := access.current_caller()).key_prefix:
            claims |= {"user": caller.user_id, "key_prefix": caller.key_prefix}
            self._admissions.keep(caller.key_prefix, str(claims["project"]), admit)
        return api.DirectTicket(
            host=self._config.artifact_direct_host,
            port=endpoint.port,
            tls=bool(self._config.tls_cert_file),
            ticket=self.signer.issue(**claims),
        )

    # direct.Transfers: called from the endpoint's connection threads.
    def accept(self, ticket: Ticket) -> PendingUpload | StoredObject | bytes:
        return on_loop(self._loop, self._accept(ticket))

    async def _accept(self, ticket: Ticket) -> PendingUpload | StoredObject | bytes:
        admit = self._admissions.pin(ticket)
        if admit is not None:  # refused before any byte is sent, not after them all
            await admit()
        request_id = ticket.request
        # Asked first, as the servicer's _in_the_way: a first try publishing in between is
        # then this repeat's own object, not one in its way.
        taken = not ticket.overwrite and await self._objects.exists(ticket.project, ticket.path)
        done = await self._objects.published_by(ticket.project, ticket.path, request_id)
        if done is not None:
            # Another upload under the id may have published since the ticket was issued
            # (the servicer compared the ticket with what had published then).
            repeats.check(done, ticket.sha256, ticket.size, ticket.content_type)
            if ticket.sha256:  # the same bytes: not worth sending again
                return self._info(done).SerializeToString()
            return done
        if taken:
            raise already_exists(ticket.path)
        return await self._objects.begin(
            ticket.project, ticket.path, ticket.overwrite, ticket.content_type
        )

    def store(
        self, upload: PendingUpload | StoredObject, reader: ChunkedReader, ticket: Ticket
    ) -> bytes:
        if isinstance(upload, StoredObject):
            return self._compare(upload, reader)
        try:
            try:
                self._backend.write(upload.storage_key, reader, upload.content_type, ticket.size)
            except Exception as error:
                if expired := on_loop(self._loop, self._objects.expired_instead(upload)):
                    raise expired from error
                if isinstance(error, OSError):  # the disk's (full, say): no client gone
                    raise RuntimeError(f"writing {upload.storage_key} failed: {error}") from error
                raise
            _check_verified(reader)
        except BaseException:
            on_loop(self._loop, self._discard(upload))
            raise
        return on_loop(self._loop, self._publish(upload, reader, ticket))

    def _compare(self, done: StoredObject, reader: ChunkedReader) -> bytes:
        """done's ObjectInfo if the body is done's bytes (a repeat of the upload that
        published it), else REQUEST_ID_REUSED; the body is stored nowhere."""
        repeats.read_to_end(reader, done)
        _check_verified(reader)
        repeats.check(done, reader.sha256, reader.size)
        return self._info(done).SerializeToString()

    async def _publish(self, upload: PendingUpload, reader: ChunkedReader, ticket: Ticket) -> bytes:
        try:
            # As a streamed upload: its caller's key or role may be gone since it began,
            # however long ago (a ticket only bounds when an upload may begin).
            if admit := self._admissions.pinned(ticket):
                await admit()
            stored, replaced = await self._objects.publish(
                upload,
                reader.size,
                reader.sha256,
                upload.content_type,
                request_id=ticket.request,
            )
        except BaseException:
            await self._discard(upload)
            raise
        await self._janitor.collect([replaced] if replaced else [])
        return self._info(stored).SerializeToString()

    def local_file(self, key: str) -> Path:
        assert isinstance(self._backend, FilesystemBackend)
        return self._backend.local_file(key)


def _check_verified(reader: ChunkedReader) -> None:
    if not reader.verified:  # never take what was not checked to the end
        raise invalid_field("body", "the upload ended before its last chunk")


def _byte_endpoint(
    config: Config, backend: backends.Backend, transfers: DirectTransfers
) -> ByteEndpoint | None:
    """The endpoint, listening on the gRPC host; None when turned off or the backend
    keeps no local files (S3 has presigned URLs of its own)."""
    if not config.artifact_direct or not isinstance(backend, FilesystemBackend):
        return None
    host = config.listen_address.rpartition(":")[0].strip("[]")
    # The gRPC port's TLS (and mTLS), checked and renewed as that port's is.
    tls = ServingTls.of(config)
    context = None if tls is None else tls.context
    try:
        return ByteEndpoint(host, config.artifact_direct_port, transfers, context)
    except OSError as error:  # the socket's own words name neither the port nor a setting
        raise OSError(
            f"cannot listen on {host}:{config.artifact_direct_port} (CAIRN_ARTIFACT_DIRECT_PORT"
            f", on the host of CAIRN_LISTEN_ADDRESS): {error.strerror or error}"
        ) from error
