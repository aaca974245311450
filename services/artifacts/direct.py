"""The byte endpoint of direct transfer: plain HTTP/1.1 beside the gRPC port, serving
one request per connection, each named by a ticket of the gRPC service (`tickets.py`).

- `PUT /v1/transfers/<ticket>`, `Expect: 100-continue`, a chunked body and the trailer
  `X-Cairn-Sha256` (the client's sha256 of what it sent): the upload the ticket allows.
  The endpoint checks the ticket and records the upload before it answers
  `100 Continue` (so a refusal arrives before any byte is sent), writes the body to the
  upload's key as the streamed path does, hashing it on the way, and publishes it only
  when size and checksum match and its caller is still admitted (its key, role and
  project checked by the gate again, as before a streamed upload publishes: refused as
  the gate refuses, UNAUTHENTICATED `API_KEY_REVOKED` say, HTTP 401); the answer is the
  serialized `ObjectInfo`.
- `GET /v1/transfers/<ticket>`: the bytes of the stored key the ticket names, sent with
  `sendfile`; `410 Gone` when they were replaced or deleted since (the client then
  streams through gRPC, which goes back to the object's row); DATA_LOSS
  `OBJECT_BYTES_MISSING` when the file holds fewer bytes than recorded.

Errors are JSON: `{"code": "DATA_LOSS", "reason": "CHECKSUM_MISMATCH", "message": ...}`,
with `"metadata"` (strings by name) when the error has any, as its gRPC ErrorInfo would.
A connection runs in a thread of its own, doing only blocking calls that release the
GIL (recv, sha256 of a chunk in a second thread meanwhile, write, sendfile), so bytes
never pass through the event loop; the database steps run on the loop.

Anyone can open a connection, so what one costs before its ticket is checked is small
and bounded: over MAX_CONNECTIONS the listener closes new ones before a thread or a TLS
handshake is made for them, and a handshake and request head must arrive within
HEAD_SECONDS. Only a valid ticket takes one of the MAX_TRANSFERS slots, which bound the
memory transfers hold (docs/artifacts.md, "Guarantees").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, cast

import grpc

from cairn._direct_io import BUFFER as WRITE_BUFFER

from ..common.errors import Unavailable
from . import pace
from .http_answers import HttpError, answer_failure, linger, open_stored, send, send_file
from .http_requests import MAX_CHUNK, READ_AHEAD, ChunkedReader, read_head
from .objects import StoredObject
from .reaper import Reaper
from .tickets import Ticket, TicketSigner
from .uploads import PendingUpload

T = TypeVar("T")
# The TLS a connection is served, asked for each (files renewed since are served).
Tls = Callable[[], ssl.SSLContext]
PREFIX = "/v1/transfers/"
# An upload holds READ_AHEAD queued chunks, one being received, one being written and
# the writer's buffer: 20 MiB. The transfers at once are sized from a budget of 512 MiB
# (a download holds only its socket buffers).
TRANSFER_BYTES = (READ_AHEAD + 2) * MAX_CHUNK + WRITE_BUFFER
MAX_TRANSFERS = 512 * 1024 * 1024 // TRANSFER_BYTES  # 25
# Connections whose ticket is not checked yet hold a thread (no buffers) HEAD_SECONDS.
MAX_CONNECTIONS = 4 * MAX_TRANSFERS
HEAD_SECONDS = 10.0
LOOP_SECONDS = 120.0  # the longest a database step of a transfer may wait for the loop


class Transfers(Protocol):
    """What the endpoint asks of the service; called from connection threads."""

    signer: TicketSigner

    def accept(self, ticket: Ticket) -> PendingUpload | StoredObject | bytes:
        """Records the ticket's upload; for a repeat of the upload its request id
        published, the serialized ObjectInfo to answer at once (the ticket names the
        object's sha256), or the object, whose bytes the body must be."""
        ...

    def store(
        self, upload: PendingUpload | StoredObject, reader: ChunkedReader, ticket: Ticket
    ) -> bytes:
        """Writes the body to the upload's key and publishes it, or compares it with the
        object a repeat's request id published; the ObjectInfo."""
        ...

    def local_file(self, key: str) -> Path: ...


class ByteEndpoint:
    """The listening endpoint; `close` stops it, letting transfers under way end."""

    def __init__(self, host: str, port: int, transfers: Transfers, tls: Tls | None) -> None:
        self._server = (_Server6 if ":" in host else _Server)((host, port), transfers, tls)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cairn-direct", daemon=True
        )
        self._thread.start()

    @property
    def connections(self) -> int:
        """The connections the endpoint holds (taken in, not yet closed)."""
        return self._server.connections

    def close(self, grace: float = 0.0) -> None:
        """Stops taking connections and transfers (new ones are UNAVAILABLE, and clients
        stream instead), then waits up to grace seconds for the transfers under way."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.reaper.stop()
        self._server.wait_for_transfers(grace)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: socketserver's 5 drops bursts

    def __init__(self, address: tuple[str, int], transfers: Transfers, tls: Tls | None) -> None:
        super().__init__(address, _Handler)
        self.transfers = transfers
        self.tls = tls
        self.stopping = threading.Event()
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._transfers = threading.BoundedSemaphore(MAX_TRANSFERS)
        self._active = 0
        self._idle = threading.Condition()
        self.connections = 0
        self.reaper = Reaper()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Over the limit, a connection is closed here: no thread, no handshake.
        if not self._connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        self._count(1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._let_go()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._let_go()

    def _let_go(self) -> None:
        self._count(-1)
        self._connections.release()

    def _count(self, change: int) -> None:
        with self._idle:
            self.connections += change

    @contextlib.contextmanager
    def transfer_slot(self) -> Iterator[None]:
        """One of the MAX_TRANSFERS slots, for a connection whose ticket passed."""
        if self.stopping.is_set():
            raise Unavailable("SHUTTING_DOWN", "the server is stopping; stream instead")
        if not self._transfers.acquire(blocking=False):
            raise Unavailable("UNAVAILABLE", "too many transfers at once; stream instead")
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            self._transfers.release()
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_for_transfers(self, grace: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=grace)


class _Server6(_Server):
    address_family = socket.AF_INET6  # a class attribute: read when the socket is made


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        # A connection has HEAD_SECONDS for its handshake and request head in all.
        self.request.settimeout(HEAD_SECONDS)
        self._watched = self.server.reaper.watch(self.request, time.monotonic() + HEAD_SECONDS)
        try:
            connection = self._secured()
            if connection is None:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            incoming = cast(BinaryIO, connection.makefile("rb", buffering=256 * 1024))
            with connection, incoming:
                try:
                    self._serve(connection, incoming)
                except Exception as error:
                    if answer_failure(connection, error):
                        linger(connection)
        finally:
            self.server.reaper.release(self._watched)

    def _secured(self) -> socket.socket | None:
        if self.server.tls is None:
            return self.request
        try:
            return self.server.tls().wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return None

    def _serve(self, connection: socket.socket, incoming: BinaryIO) -> None:
        method, target, headers = read_head(incoming)
        # The ticket is checked on the server's time; the transfer's bound comes after.
        self.server.reaper.hold_to(self._watched, float("inf"))
        if not target.startswith(PREFIX) or method not in ("PUT", "GET"):
            raise HttpError(
                404, grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", "no such resource"
            )
        token = target[len(PREFIX) :]
        ticket = self.server.transfers.signer.verify(token, method)
        with self.server.transfer_slot():
            connection.settimeout(pace.IDLE_SECONDS)  # a stalled client does not hold a slot
            self._transfer(connection, incoming, token, ticket, headers, self._pace())

    def _pace(self) -> Callable[[int], None]:
        """Starts a transfer's bound: told the bytes moved so far, it cuts the
        connection when they fall behind the pace (pace.py)."""
        reaper, watched, start = self.server.reaper, self._watched, time.monotonic()
        reaper.hold_to(watched, pace.due(start, 0))
        return lambda moved: reaper.hold_to(watched, pace.due(start, moved))

    def _transfer(
        self,
        connection: socket.socket,
        incoming: BinaryIO,
        token: str,
        ticket: Ticket,
        headers: dict[str, str],
        moved: Callable[[int], None],
    ) -> None:
        transfers = self.server.transfers
        if ticket.method == "GET":
            source = open_stored(transfers.local_file(ticket.key), ticket.size, ticket.path)
            return send_file(connection, source, ticket.size, moved)
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise HttpError(
                411, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "send a chunked body"
            )
        # Spent here, past the refusals a request sent again may avoid (above, and a busy
        # or stopping endpoint's 503), and before two requests could record its upload.
        transfers.signer.spend(token, ticket)
        accepted = transfers.accept(ticket)
        if isinstance(accepted, bytes):  # a repeat of what its request id published
            return send(connection, 200, accepted, "application/x-protobuf")
        if headers.get("expect", "").lower() == "100-continue":
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        with ChunkedReader(incoming, ticket.size, ticket.sha256, moved) as reader:
            info = transfers.store(accepted, reader, ticket)
        send(connection, 200, info, "application/x-protobuf")


def on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on the service's loop from a connection thread; its result.

    Raises:
        Unavailable: the loop is closed, or did not run the step within LOOP_SECONDS
            (it stopped): a transfer thread never waits for it forever.
    """
    try:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except RuntimeError:  # the loop is closed
        coroutine.close()
        raise Unavailable("SHUTTING_DOWN", "the server is stopping") from None
    try:
        return future.result(timeout=LOOP_SECONDS)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise Unavailable("SHUTTING_DOWN", "the server stopped during the transfer") from None
