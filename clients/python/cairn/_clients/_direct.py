"""The client side of direct transfer (docs/artifacts.md): one upload or download over
plain HTTP/1.1 to the artifact service's byte endpoint, named by a ticket the gRPC
service issued. Blocking: runs in a worker thread. Each chunk is hashed in a second
thread while it is sent (or written), so the two overlap instead of adding up. Its
threads are Workers': a ThreadPoolExecutor's stop when the main thread ends, and a
thread that outlives it may still transfer with a sync client.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import BinaryIO

import grpc

from .._direct_io import Writable
from .._workers import Workers
from ..exceptions import CairnError, UnavailableError, error_class

CHUNK = 4 * 1024 * 1024
CONNECT_SECONDS = 3.0
# Beyond this, a stalled endpoint fails the transfer (an upload is then sent again).
IDLE_SECONDS = 300.0
PREFIX = "/v1/transfers/"
BUSY, GONE, REFUSED = 503, 410, 403  # statuses after which the client may stream instead
# The most of an answer this client reads: the endpoint sends three fields and, as a
# body, an ObjectInfo or a JSON error (paths of at most 1 KiB, a message), a few KiB. More
# is no byte endpoint's answer, and reading it whole would fill memory (an endless head,
# or a Content-Length of -1, read to the end of a stream that has none).
MAX_FIELDS = 64
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024
# What may break an exchange: the socket (resets, timeouts, TLS alerts are OSErrors), an
# answer that is no HTTP or goes past the most read (ValueError), or one that ends early.
BROKEN = (OSError, ValueError, UnavailableError)


class Unreachable(Exception):
    """Nothing was sent yet and the byte endpoint cannot take the transfer: stream
    through gRPC instead. `lasting` when the endpoint itself cannot be reached from
    here (refused, no route, TLS failed, a ticket of another replica), as opposed to
    busy or an object that changed."""

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ticket: str
    tls: ssl.SSLContext | None

    def connect(self) -> socket.socket:
        try:
            connection = socket.create_connection((self.host, self.port), CONNECT_SECONDS)
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_hostname=self.host)
        except (OSError, ssl.SSLError) as error:
            raise Unreachable(f"{self.host}:{self.port}: {error}", lasting=True) from error
        connection.settimeout(IDLE_SECONDS)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def head(self, method: str, *fields: str) -> bytes:
        lines = [f"{method} {PREFIX}{self.ticket} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        return "\r\n".join([*lines, *fields, "Connection: close", "", ""]).encode()


class Cut:
    """Ends a transfer's connection from another thread: a thread cannot be cancelled,
    and the transfer of a caller that left (its timeout passed, it was cancelled) went
    on unseen until its socket idled out, IDLE_SECONDS, holding `asyncio.run`'s exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: socket.socket | None = None
        self._done = False

    @contextlib.contextmanager
    def holding(self, connection: socket.socket) -> Iterator[None]:
        with self._lock:
            self._connection = connection
            if self._done:
                self._shut()
        try:
            yield
        finally:
            with self._lock:
                self._connection = None

    def cut(self) -> None:
        """Its connection's reads and writes, under way or to come, fail at once."""
        with self._lock:
            self._done = True
            self._shut()

    def _shut(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):  # the plain socket's: TLS's own clears state
                socket.socket.shutdown(self._connection, socket.SHUT_RDWR)


def upload(endpoint: Endpoint, source: BinaryIO, sent: Callable[[int], None], cut: Cut) -> bytes:
    """Sends source whole with its sha256 as the trailer; the serialized ObjectInfo the
    endpoint published.

    Raises:
        Unreachable: before the first byte of the body (stream instead).
        UnavailableError: the connection broke after (send the upload again), or was cut.
        CairnError: the endpoint's refusal.
        OSError: source could not be read.
    """
    with (
        endpoint.connect() as connection,
        cut.holding(connection),
        connection.makefile("rb") as incoming,
    ):
        head = endpoint.head(
            "PUT", "Transfer-Encoding: chunked", "Expect: 100-continue", "Trailer: X-Cairn-Sha256"
        )
        status, body = _opened(connection, incoming, head, 100)
        if status != 100:  # refused, or published already by this request id
            return _result(status, body)
        _send_body(connection, incoming, source, sent)
        with _broken("upload"):
            answer = _answer(incoming)
        return _result(*answer)


def _send_body(
    connection: socket.socket, incoming: BinaryIO, source: BinaryIO, sent: Callable[[int], None]
) -> None:
    # Only the sending is the connection's: a read of source that failed was taken for
    # a broken connection, whose answer was then waited for while the endpoint waited
    # for the rest of the body, IDLE_SECONDS. Raised as it is, it ends the connection
    # (the endpoint drops a body that ends unfinished) as the streamed path's does.
    digest, total = _Hasher(), 0
    with digest:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            with _sending(incoming):
                connection.sendall(b"%x\r\n" % len(chunk))
                connection.sendall(chunk)
                connection.sendall(b"\r\n")
            total += len(chunk)
            sent(total)
        trailer = f"0\r\nX-Cairn-Sha256: {digest.hexdigest()}\r\n\r\n"
    with _sending(incoming):
        connection.sendall(trailer.encode())


@contextlib.contextmanager
def _sending(incoming: BinaryIO) -> Iterator[None]:
    """UnavailableError for a connection that breaks while an upload's body goes, unless
    the endpoint answered before it closed (a write failed on its side): its refusal."""
    try:
        yield
    except OSError as error:
        answer = None
        with contextlib.suppress(*BROKEN):  # only the reading of the answer
            answer = _answer(incoming)
        if answer is not None:
            _result(*answer)  # a refusal, its reason kept (OBJECT_STORE_UNAVAILABLE, say)
        raise UnavailableError(f"the upload's connection broke: {error}") from error


def download(
    endpoint: Endpoint, out: Writable, size: int, received: Callable[[int], None], cut: Cut
) -> str:
    """Writes the ticket's object to out; returns the sha256 of what arrived.

    Raises:
        Unreachable: before the first byte (stream instead).
        UnavailableError: the connection broke after, or was cut.
        OSError: out could not be written.
    """
    with (
        endpoint.connect() as connection,
        cut.holding(connection),
        connection.makefile("rb") as incoming,
    ):
        status, body = _opened(connection, incoming, endpoint.head("GET"), 200)
        if status == GONE:  # replaced or deleted since the ticket: the row decides
            raise Unreachable("the object changed since its ticket was issued")
        if status != 200:
            _result(status, body)
        return _receive(incoming, out, size, received)


def _receive(incoming: BinaryIO, out: Writable, size: int, received: Callable[[int], None]) -> str:
    # Three threads overlap: this one receives a chunk while one hashes and one writes
    # the chunk before. Only the receiving is the connection's: a write refused (a full
    # disk) was UNAVAILABLE, which tells a caller that trying again may help; raised as
    # it is, the caller's `local_writes` names it (LOCAL_WRITE_FAILED).
    digest, writer, total = _Hasher(), _Behind(out.write), 0
    with digest, writer:
        while total < size:
            with _broken("download"):
                chunk = incoming.read(min(CHUNK, size - total))
            if not chunk:
                raise UnavailableError("the download's connection ended early")
            digest.update(chunk)
            writer.submit(chunk)
            total += len(chunk)
            received(total)
        writer.wait()
        return digest.hexdigest()


@contextlib.contextmanager
def _broken(what: str) -> Iterator[None]:
    """UnavailableError for a connection that breaks once bytes moved."""
    try:
        yield
    except BROKEN as error:
        if isinstance(error, UnavailableError):
            raise
        raise UnavailableError(f"the {what}'s connection broke: {error}") from error


def _opened(
    connection: socket.socket, incoming: BinaryIO, head: bytes, going: int
) -> tuple[int, bytes]:
    """Sends a request's head; the answer's status, and its body unless the status is
    `going` (the transfer goes on). Unreachable when the endpoint breaks the connection
    or answers no HTTP before that, is busy or stopping (503), or does not know the
    ticket (another replica's, behind a load balancer), or took its upload already (a
    ticket sent again): nothing was sent yet, so the client may stream instead."""
    try:
        connection.sendall(head)
        status, fields = _status(incoming)
        body = b"" if status == going else _body(incoming, fields)
    except BROKEN as error:
        raise Unreachable(f"the byte endpoint did not answer: {error}") from error
    if status == BUSY:
        raise Unreachable("the byte endpoint is busy or stopping")
    if status == REFUSED and _reason(body) == "TICKET_INVALID":
        raise Unreachable("the byte endpoint does not know the ticket", lasting=True)
    if status == REFUSED and _reason(body) == "TICKET_USED":  # this ticket only
        raise Unreachable("the byte endpoint took this ticket's upload already")
    return status, body


class _Behind:
    """Calls a function on each chunk in a thread of its own, one call in flight."""

    def __init__(self, function: Callable[[bytes], object]) -> None:
        self._function = function
        self._thread = Workers(1, thread_name_prefix="cairn-write")
        self._pending: Future[object] | None = None

    def __enter__(self) -> _Behind:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True)

    def submit(self, chunk: bytes) -> None:
        self.wait()
        self._pending = self._thread.submit(self._function, chunk)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()


class _Hasher:
    """sha256 in a thread of its own: update returns at once, one chunk in flight; the
    chunk must not change until the next update (every chunk here is a new bytes)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._thread = Workers(1, thread_name_prefix="cairn-hash")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _Hasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True)

    def update(self, chunk: bytes) -> None:
        self._wait()
        self._pending = self._thread.submit(self._hash.update, chunk)

    def hexdigest(self) -> str:
        self._wait()
        return self._hash.hexdigest()

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()


def _status(incoming: BinaryIO) -> tuple[int, dict[str, str]]:
    """The status line and fields of an answer; ValueError when it is no HTTP."""
    line = incoming.readline(8192).decode("latin-1")
    if not line:
        raise UnavailableError("the byte endpoint closed the connection without an answer")
    version, _, rest = line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP answer: {line[:40]!r}")
    return int(rest[:3]), _fields(incoming)


def _fields(incoming: BinaryIO) -> dict[str, str]:
    """An answer's fields, up to the blank line; ValueError past MAX_FIELDS or
    MAX_HEAD_BYTES."""
    fields: dict[str, str] = {}
    count, length = 0, 0
    while header := incoming.readline(8192).decode("latin-1").rstrip("\r\n"):
        count, length = count + 1, length + len(header)
        if count > MAX_FIELDS or length > MAX_HEAD_BYTES:
            raise ValueError("the answer's head went on past what an endpoint sends")
        name, _, value = header.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def _answer(incoming: BinaryIO) -> tuple[int, bytes]:
    status, fields = _status(incoming)
    return status, _body(incoming, fields)


def _body(incoming: BinaryIO, fields: dict[str, str]) -> bytes:
    """An answer's body, whole; ValueError for a length that is no count of bytes or
    past MAX_BODY_BYTES, or for a body that ended early (its answer would parse as
    another, shorter one)."""
    declared = fields.get("content-length", "0")
    if not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY_BYTES:
        raise ValueError(f"an answer of Content-Length {declared[:24]!r}")
    body = incoming.read(int(declared))
    if len(body) < int(declared):
        raise ValueError(f"the answer ended after {len(body)} of {declared} bytes")
    return body


def _result(status: int, body: bytes) -> bytes:
    if status == 200:
        return body
    raise _error(body)


def _reason(body: bytes) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("reason"))
    return None


def _error(body: bytes) -> CairnError:
    try:
        error = json.loads(body)
        code = grpc.StatusCode[error["code"]]
        return error_class(code)(
            error["message"],
            reason=error.get("reason"),
            code=code,
            metadata=_strings(error.get("metadata")),
        )
    except (ValueError, KeyError, TypeError):
        return UnavailableError("the byte endpoint answered with an error it did not explain")


def _strings(metadata: object) -> dict[str, str]:
    """An error's metadata (an endpoint of an older server sends none)."""
    if not isinstance(metadata, dict):
        return {}
    return {str(name): str(value) for name, value in metadata.items()}
