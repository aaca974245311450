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
import errno
import hashlib
import json
import os
import queue
import re
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, cast

import grpc

from cairn._direct_io import BUFFER as WRITE_BUFFER

from ..common import database, logs
from ..common.errors import DomainError, InvalidArgument, Unavailable
from . import pace
from .filesystem import holds_no_file
from .objects import StoredObject, bytes_missing
from .streams import MERGE_BYTES, check_growth, verify
from .tickets import Ticket, TicketSigner
from .uploads import PendingUpload

T = TypeVar("T")
PREFIX = "/v1/transfers/"
SHA256_TRAILER = "x-cairn-sha256"
MAX_CHUNK = 4 * 1024 * 1024  # what the client sends; bounds one chunk held in memory
MAX_HEADER_LINE = 8192
READ_AHEAD = 2
# An upload holds READ_AHEAD queued chunks, one being received, one being written and
# the writer's buffer: 20 MiB. The transfers at once are sized from a budget of 512 MiB
# (a download holds only its socket buffers).
TRANSFER_BYTES = (READ_AHEAD + 2) * MAX_CHUNK + WRITE_BUFFER
MAX_TRANSFERS = 512 * 1024 * 1024 // TRANSFER_BYTES  # 25
# Connections whose ticket is not checked yet hold a thread (no buffers) HEAD_SECONDS.
MAX_CONNECTIONS = 4 * MAX_TRANSFERS
HEAD_SECONDS = 10.0
# A download tells its progress (pace.py) a piece at a time.
SEND_PIECE = 4 * 1024 * 1024
REAP_SECONDS = 0.5  # how often connections past HEAD_SECONDS are looked for
# After an error answer, what the client still sends is read for at most this long or
# this much before the connection closes (closing on unread bytes resets it).
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024
LOOP_SECONDS = 120.0  # the longest a database step of a transfer may wait for the loop
READ_WINDOW = 32 * 1024 * 1024
_log = logs.get("cairn.artifacts.direct")
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,  # an upload's key revoked or expired meanwhile
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.DATA_LOSS: 422,  # what arrived is not what was announced
}


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

    def __init__(
        self, host: str, port: int, transfers: Transfers, tls: ssl.SSLContext | None
    ) -> None:
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

    def __init__(
        self, address: tuple[str, int], transfers: Transfers, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(address, _Handler)
        self.transfers = transfers
        self.tls = tls
        self.stopping = threading.Event()
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._transfers = threading.BoundedSemaphore(MAX_TRANSFERS)
        self._active = 0
        self._idle = threading.Condition()
        self.connections = 0
        self.reaper = _Reaper()

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


class _Reaper:
    """Shuts down connections still without their request head after HEAD_SECONDS, and
    transfers that fall behind the pace (pace.py): a read timeout alone would let a
    client trickle a byte every few seconds for ever.

    It watches a duplicate of each connection's socket: TLS's wrap_socket detaches the
    handler's socket object, while shutting the duplicate down ends the TCP connection
    both name. Once stopped, it still cuts the connections it watches when they are due
    (a connection taken in before the endpoint closed sends its head, to be told
    SHUTTING_DOWN, or is cut), and ends when none is left."""

    def __init__(self) -> None:
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()  # also keeps a duplicate from closing mid-shutdown
        self._stopping = False
        self._ended = False
        threading.Thread(target=self._run, name="cairn-direct-reaper", daemon=True).start()

    def watch(self, connection: socket.socket) -> socket.socket:
        """Watches the connection; returns what to release once its head arrived."""
        watched = connection.dup()
        with self._lock:
            if self._ended:  # taken in before the endpoint closed, come too late
                _cut(watched)
            else:
                self._due[watched] = time.monotonic() + HEAD_SECONDS
        return watched

    def hold_to(self, watched: socket.socket, due: float) -> None:
        """Cuts the connection at due (time.monotonic) unless told otherwise before."""
        with self._lock:
            if watched in self._due:
                self._due[watched] = due

    def release(self, watched: socket.socket) -> None:
        with self._lock:
            self._due.pop(watched, None)
            watched.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True

    def _run(self) -> None:
        while True:
            time.sleep(REAP_SECONDS)
            now = time.monotonic()
            with self._lock:
                for watched in [c for c, due in self._due.items() if due < now]:
                    del self._due[watched]
                    _cut(watched)
                if self._stopping and not self._due:
                    self._ended = True
                    return


def _cut(watched: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the handler's reads end at once
        watched.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6  # a class attribute: read when the socket is made


class HttpError(Exception):
    def __init__(self, status: int, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.reason, self.message = status, code, reason, message


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        # A connection has HEAD_SECONDS for its handshake and request head in all.
        self.request.settimeout(HEAD_SECONDS)
        self._watched = self.server.reaper.watch(self.request)
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
                    if _answer_failure(connection, error):
                        _linger(connection)
        finally:
            self.server.reaper.release(self._watched)

    def _secured(self) -> socket.socket | None:
        if self.server.tls is None:
            return self.request
        try:
            return self.server.tls.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return None

    def _serve(self, connection: socket.socket, incoming: BinaryIO) -> None:
        method, target, headers = _read_head(incoming)
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
            source = _open_stored(transfers.local_file(ticket.key), ticket.size, ticket.path)
            return _send_file(connection, source, ticket.size, moved)
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise HttpError(
                411, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "send a chunked body"
            )
        # Spent here, past the refusals a request sent again may avoid (above, and a busy
        # or stopping endpoint's 503), and before two requests could record its upload.
        transfers.signer.spend(token, ticket)
        accepted = transfers.accept(ticket)
        if isinstance(accepted, bytes):  # a repeat of what its request id published
            return _send(connection, 200, accepted, "application/x-protobuf")
        if headers.get("expect", "").lower() == "100-continue":
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        with ChunkedReader(incoming, ticket.size, ticket.sha256, moved) as reader:
            info = transfers.store(accepted, reader, ticket)
        _send(connection, 200, info, "application/x-protobuf")


class ClientGone(Exception):
    """The client's connection broke or stalled in the middle of a transfer."""


class StoredFileError(Exception):
    """A stored file could not be read: the server's fault, logged as INTERNAL, and
    answered so unless the answer had begun (then the connection only closes)."""

    def __init__(self, error: OSError, *, answering: bool) -> None:
        super().__init__(f"the stored file could not be read: {error}")
        self.answering = answering


class ChunkedReader:
    """A file-like `read(n)` over a chunked HTTP body, verified at the end (the trailer's
    sha256, else the ticket's, and the expected size). Three threads overlap: this one
    receives the next chunk while the caller writes the one before and a third hashes
    it; at most READ_AHEAD chunks wait for the writer. Chunks smaller than MERGE_BYTES
    are merged up to it first: each chunk handed to the hasher and to the writer on its
    own made a body of 1-byte chunks cost the server far more per byte than the client."""

    def __init__(
        self,
        incoming: BinaryIO,
        expected_size: int,
        expected_sha256: str,
        moved: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._incoming = incoming
        self._moved = moved  # told the bytes received so far, after each chunk
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="cairn-direct-hash")
        self._hashing: Future[None] | None = None
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(READ_AHEAD)
        self._stopped = threading.Event()
        self._rest = b""
        self._finished = False
        self._size_read: int | None = None  # a chunk's size, read before its bytes
        self.hash = hashlib.sha256()
        self.size = 0
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.verified = False
        self._receiver = threading.Thread(
            target=self._receive, name="cairn-direct-receive", daemon=True
        )

    def __enter__(self) -> ChunkedReader:
        self._receiver.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A receiver still waiting for room (the writer failed) gives up; one waiting
        # on the client ends when the connection closes.
        self._stopped.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()
        self._hasher.shutdown(wait=True)

    @property
    def sha256(self) -> str:
        return self.hash.hexdigest()

    def read(self, n: int = -1) -> bytes:
        data = self._rest or self._take()
        if 0 <= n < len(data):
            data, self._rest = data[:n], data[n:]
        else:
            self._rest = b""
        return data

    def _take(self) -> bytes:
        if self._finished:
            return b""
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._finished = not item
        return item

    def _receive(self) -> None:
        while not self._stopped.is_set():
            try:
                item: bytes | BaseException = self._next()
            except OSError as error:  # told apart from the writer's errors (the disk's)
                item = ClientGone(f"the upload's connection broke: {error}")
            except BaseException as error:
                item = error
            while not self._stopped.is_set():
                with contextlib.suppress(queue.Full):
                    self._chunks.put(item, timeout=0.5)
                    break
            if not isinstance(item, bytes) or not item:
                return

    def _next(self) -> bytes:
        """The next piece for the writer, hashed: a chunk of MERGE_BYTES or more, or
        smaller chunks merged up to MERGE_BYTES; b"" at the end of the body."""
        merged = bytearray()
        while True:
            size = self._next_size()
            if merged and (size == 0 or len(merged) + size > MERGE_BYTES):
                self._size_read = size  # kept for the next piece, its bytes not read yet
                break
            if size == 0:
                self._end()
                return b""
            chunk = self._chunk(size)
            if size >= MERGE_BYTES:  # not merged: a piece of its own, not copied
                self._hash(chunk)
                return chunk
            merged += chunk
            if len(merged) == MERGE_BYTES:
                break
        piece = bytes(merged)
        self._hash(piece)
        return piece

    def _next_size(self) -> int:
        size, self._size_read = self._size_read, None
        return _chunk_size(_line(self._incoming)) if size is None else size

    def _chunk(self, size: int) -> bytes:
        chunk = self._incoming.read(size)
        if len(chunk) != size or self._incoming.read(2) != b"\r\n":
            raise _bad_request("the body ended inside a chunk")
        self.size += size
        self._moved(self.size)
        check_growth(self.size, self.expected_size)
        return chunk

    def _hash(self, chunk: bytes) -> None:
        if self._hashing is not None:
            self._hashing.result()
        self._hashing = self._hasher.submit(self.hash.update, chunk)

    def _end(self) -> None:
        if self._hashing is not None:
            self._hashing.result()
        trailers = _read_fields(self._incoming)
        sent = trailers.get(SHA256_TRAILER, "").lower()
        if sent and (len(sent) != 64 or not set(sent) <= _HEX):
            raise _bad_request("the trailer's sha256 is not 64 hexadecimal characters")
        if self.expected_sha256 and sent and sent != self.expected_sha256:
            raise _bad_request("the trailer's sha256 differs from the expected one")
        if not (sent or self.expected_sha256):
            raise _bad_request(
                f"name the bytes' sha256, in the ticket or the {SHA256_TRAILER} trailer"
            )
        verify(self.size, self.sha256, self.expected_size, sent or self.expected_sha256)
        self.verified = True


_HEX = set("0123456789abcdef")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


def _line(incoming: BinaryIO) -> bytes:
    """The next line, whole: one longer than MAX_HEADER_LINE, read so far, would be taken
    for its start (and the rest for the lines after it)."""
    line = incoming.readline(MAX_HEADER_LINE)
    if not line.endswith(b"\n"):
        raise _bad_request(
            f"a line of the request is longer than {MAX_HEADER_LINE} bytes, "
            "or the request ended inside it"
        )
    return line


def _chunk_size(line: bytes) -> int:
    """The size of a chunk line: hexadecimal digits (then extensions after ";")."""
    digits = line.split(b";", 1)[0].rstrip(b" \t\r\n")
    if not _CHUNK_SIZE.fullmatch(digits):
        raise _bad_request("malformed chunk size")
    size = int(digits, 16)
    if size > MAX_CHUNK:
        raise _bad_request(f"chunks are at most {MAX_CHUNK} bytes")
    return size


def _read_head(incoming: BinaryIO) -> tuple[str, str, dict[str, str]]:
    line = _line(incoming).decode("latin-1").rstrip("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _bad_request("not an HTTP/1.1 request")
    return parts[0], parts[1], _read_fields(incoming)


def _read_fields(incoming: BinaryIO) -> dict[str, str]:
    fields: dict[str, str] = {}
    for _ in range(100):
        line = _line(incoming).decode("latin-1").rstrip("\r\n")
        if not line:
            return fields
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    raise _bad_request("too many header fields")


def _open_stored(file: Path, size: int, path: str) -> BinaryIO:
    """The stored file of the object at path, opened, holding at least its size.

    Raises:
        HttpError: 410 OBJECT_CHANGED, replaced or deleted since the ticket was issued.
        DataLoss: OBJECT_BYTES_MISSING, cut short behind the service's back (sendfile
            would stop at its end, after a head announcing the whole size), or no file
            there (a folder, a link to itself).
    """
    try:
        source = file.open("rb")
    except FileNotFoundError:
        raise HttpError(
            410, grpc.StatusCode.ABORTED, "OBJECT_CHANGED", "the object changed; ask again"
        ) from None
    except OSError as error:
        if holds_no_file(error):
            raise bytes_missing(path) from None
        raise StoredFileError(error, answering=False) from error
    try:
        stored_size = os.fstat(source.fileno()).st_size
        # A file written around the page cache is read from disk: each window is asked
        # for ahead of the one being sent, so the disk reads while the socket sends.
        _read_ahead(source, 0, size)
    except OSError as error:
        source.close()
        raise StoredFileError(error, answering=False) from error
    if stored_size < size:
        source.close()
        raise bytes_missing(path)
    return source


def _send_file(
    connection: socket.socket, source: BinaryIO, size: int, moved: Callable[[int], None]
) -> None:
    with source:  # an open file keeps its bytes readable even if deleted meanwhile
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        connection.sendall(head.encode())
        try:
            for offset in range(0, size, SEND_PIECE):
                if offset % READ_WINDOW == 0:
                    _read_ahead(source, offset + READ_WINDOW, size)
                connection.sendfile(source, offset, min(SEND_PIECE, size - offset))
                moved(offset + min(SEND_PIECE, size - offset))
        except OSError as error:
            if _connection_error(error):
                raise ClientGone(f"the download's connection broke: {error}") from error
            raise StoredFileError(error, answering=True) from error


def _connection_error(error: OSError) -> bool:
    """Whether an error of sendfile is the socket's, not the file's."""
    if isinstance(error, ConnectionError | TimeoutError | ssl.SSLError):
        return True
    return error.errno in (errno.EPIPE, errno.ENOTCONN, errno.ECONNRESET)


def _read_ahead(source: BinaryIO, offset: int, size: int) -> None:
    if offset < size:
        count = min(READ_WINDOW, size - offset)
        os.posix_fadvise(source.fileno(), offset, count, os.POSIX_FADV_WILLNEED)


def _send(connection: socket.socket, status: int, body: bytes, content_type: str) -> None:
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    connection.sendall(head.encode() + body)


def _answer_failure(connection: socket.socket, error: Exception) -> bool:
    """Answers what failed as the gRPC interceptor would: a domain error as its status,
    the database out of reach as UNAVAILABLE, anything else as INTERNAL with a
    correlation id that the log line holds too; nothing when the client went away, or
    when a download's answer had begun. Whether an answer was sent."""
    answer = _known(error) or database.domain_error(error)
    if answer is None:
        if isinstance(error, OSError | ClientGone):
            return False  # the connection broke; an upload was discarded on the way out
        correlation = uuid.uuid4().hex
        _log.error("direct transfer failed", correlation_id=correlation, exc_info=error)
        if isinstance(error, StoredFileError) and error.answering:
            return False  # its head went out: the client finds the body short
        answer = HttpError(
            500,
            grpc.StatusCode.INTERNAL,
            "INTERNAL",
            f"internal error; correlation id {correlation}",
        )
    try:
        _send_error(connection, answer)
    except OSError:
        return False
    return True


def _linger(connection: socket.socket) -> None:
    """Reads what the client still sends after an error answer (an upload's body), for
    at most LINGER_SECONDS or LINGER_BYTES, once it knows no more comes from here:
    closing on unread bytes resets the connection, and a reset may destroy the answer
    before the client read it, which would send the upload again."""
    deadline, drained = time.monotonic() + LINGER_SECONDS, 0
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            received = connection.recv(256 * 1024)
            if not received:
                return
            drained += len(received)


def _known(error: Exception) -> HttpError | DomainError | None:
    return error if isinstance(error, HttpError | DomainError) else None


def _send_error(connection: socket.socket, error: HttpError | DomainError) -> None:
    metadata = {}
    if isinstance(error, DomainError):
        metadata = error.metadata  # what the gRPC answer's ErrorInfo would carry
        error = HttpError(
            _HTTP_STATUS.get(error.code, 500), error.code, error.reason, error.message
        )
    body: dict[str, Any] = {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
    }
    if metadata:
        body["metadata"] = metadata
    _send(connection, error.status, json.dumps(body).encode(), "application/json")


def _bad_request(message: str) -> InvalidArgument:
    return InvalidArgument("INVALID_ARGUMENT", message)


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
