"""Answering a byte-endpoint request: a stored file sent with sendfile, a body, or a
failure as the gRPC service would answer it, then lingering over what the client still
sends."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from ..common import database, logs
from ..common.errors import DomainError
from .filesystem import holds_no_file
from .http_requests import ClientGone
from .objects import bytes_missing

# A download tells its progress (pace.py) a piece at a time.
SEND_PIECE = 4 * 1024 * 1024
# After an error answer, what the client still sends is read for at most this long or
# this much before the connection closes (closing on unread bytes resets it).
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024
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


class HttpError(Exception):
    def __init__(self, status: int, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.reason, self.message = status, code, reason, message


class StoredFileError(Exception):
    """A stored file could not be read: the server's fault, logged as INTERNAL, and
    answered so unless the answer had begun (then the connection only closes)."""

    def __init__(self, error: OSError, *, answering: bool) -> None:
        super().__init__(f"the stored file could not be read: {error}")
        self.answering = answering


def open_stored(file: Path, size: int, path: str) -> BinaryIO:
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


def send_file(
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


def send(connection: socket.socket, status: int, body: bytes, content_type: str) -> None:
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    connection.sendall(head.encode() + body)


def answer_failure(connection: socket.socket, error: Exception) -> bool:
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


def linger(connection: socket.socket) -> None:
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
    send(connection, error.status, json.dumps(body).encode(), "application/json")
