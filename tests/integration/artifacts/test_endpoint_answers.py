"""The client against answers of the byte endpoint that went wrong on the way: garbled,
cut, endless. A listener on loopback stands between client and endpoint; it answers
the first connection its own way and passes the later ones through, so that an upload
sent again reaches the real endpoint."""

import contextlib
import dataclasses
import hashlib
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import cairn
from cairn._clients import _direct
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from tests.conftest import new_project

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 17)
# What a fake endpoint sends at most past the head; the client reads none of it.
ENDLESS = 64 * MIB


class Between:
    """A loopback listener between the client and the byte endpoint: its first
    connection is served by `first`, the later ones pass to the endpoint untouched."""

    def __init__(self, first: Callable[["Between", socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first = first
        self.upstream = ("", 0)
        self.sent = 0  # what `first` sent past the head
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def redirect(self, client: cairn.ArtifactClient) -> None:
        """The client's byte-endpoint tickets name this listener instead."""
        direct = client._direct
        original = direct._endpoint

        def endpoint(ticket: api.DirectTicket) -> _direct.Endpoint | None:
            found = original(ticket)
            if found is not None:
                self.upstream = (found.host, found.port)
                found = dataclasses.replace(found, host="127.0.0.1", port=self.port)
            return found

        direct._endpoint = endpoint  # type: ignore[method-assign]

    def upstream_connection(self) -> socket.socket:
        return socket.create_connection(self.upstream)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            serve = self.first if self.connections == 1 else _pass_through
            threading.Thread(target=_serving, args=(serve, self, connection), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _serving(
    serve: Callable[[Between, socket.socket], None], between: Between, connection: socket.socket
) -> None:
    with connection:
        # The client closing its side, as it should, ends a handler with an OSError.
        with contextlib.suppress(OSError, EOFError):
            serve(between, connection)
        # Closing alone sends no FIN while a pump's recv holds the socket: the client
        # would wait for the rest of a cut answer until its connection idled out.
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


def _pass_through(between: Between, connection: socket.socket) -> None:
    with between.upstream_connection() as upstream:
        threading.Thread(target=_pump, args=(connection, upstream), daemon=True).start()
        _pump(upstream, connection)


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)


def _head(connection: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes]:
    """An HTTP head read whole, and what came after it."""
    while b"\r\n\r\n" not in buffered:
        received = connection.recv(1 << 16)
        if not received:
            raise EOFError(buffered)
        buffered += received
    head, _, rest = buffered.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _altered(alter: Callable[[bytes, bytes], bytes]) -> Callable[[Between, socket.socket], None]:
    """Passes an upload to the endpoint and 100 Continue back, then sends the endpoint's
    answer as alter(head, body) makes it and closes."""

    def serve(between: Between, connection: socket.socket) -> None:
        with between.upstream_connection() as upstream:
            threading.Thread(target=_pump, args=(connection, upstream), daemon=True).start()
            head, rest = _head(upstream)
            connection.sendall(head)  # 100 Continue
            head, answer = _head(upstream, rest)
            while data := upstream.recv(1 << 16):
                answer += data
            connection.sendall(alter(head, answer))

    return serve


def _length(head: bytes, body: bytes) -> bytes:
    """head, its Content-Length made body's, and body."""
    return re.sub(rb"(?im)^content-length:[^\r]*", b"Content-Length: %d" % len(body), head) + body


def _answering_endlessly(head: bytes) -> Callable[[Between, socket.socket], None]:
    """Takes an upload's body whole, then answers head and bytes without end."""

    def serve(between: Between, connection: socket.socket) -> None:
        _, received = _head(connection)
        connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not received.endswith(b"\r\n\r\n") or b"X-Cairn-Sha256" not in received:
            received = received[-256:] + connection.recv(1 << 20)
        _send_endlessly(between, connection, head)

    return serve


def _send_endlessly(between: Between, connection: socket.socket, head: bytes) -> None:
    connection.sendall(head)
    block = b"\n" * MIB
    while between.sent < ENDLESS:
        connection.sendall(block)
        between.sent += len(block)


@pytest.fixture
async def client(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    """A client that sends DATA over the byte endpoint."""
    project = await new_project(server_port, f"ea-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=60
    ) as client:
        client.direct_threshold = MIB
        yield client


@contextlib.contextmanager
def between(
    client: cairn.ArtifactClient, first: Callable[[Between, socket.socket], None]
) -> Iterator[Between]:
    listener = Between(first)
    listener.redirect(client)
    try:
        yield listener
    finally:
        listener.close()


GARBLED = {
    "garbled": lambda head, body: _length(head, b"\xff" * len(body)),
    "empty": lambda head, body: _length(head, b""),
    "cut": lambda head, body: head + body[: len(body) // 2],  # its Content-Length kept
    "fields_cut": lambda head, body: _length(head, body[: body.index(b"\x22\x40")]),
}


@pytest.mark.parametrize("kind", GARBLED)
async def test_a_garbled_upload_answer_sends_the_upload_again(
    client: cairn.ArtifactClient, kind: str
) -> None:
    """The endpoint's ObjectInfo garbled on the way raised protobuf's DecodeError (no
    CairnError, not sent again), or an empty or cut one returned an object without path
    or sha256 as a success, though the upload was published. Now it is UNAVAILABLE, and
    the upload sent again under its request id answers the object published."""
    with between(client, _altered(GARBLED[kind])) as listener:
        published = await client.upload("m/a.bin", DATA)
    assert listener.connections >= 1
    assert (published.path, published.size) == ("m/a.bin", len(DATA))
    assert published.sha256 == hashlib.sha256(DATA).hexdigest()


def _empty_before_the_body(between: Between, connection: socket.socket) -> None:
    _head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


async def test_a_garbled_answer_before_the_body_is_no_reused_request_id(
    client: cairn.ArtifactClient,
) -> None:
    """An empty ObjectInfo answered before the body (where the endpoint answers what the
    request id published already) raised InvalidArgumentError REQUEST_ID_REUSED, as an
    object of other bytes. Now it is UNAVAILABLE, and the upload is sent again."""
    with between(client, _empty_before_the_body):
        published = await client.upload("m/b.bin", DATA)
    assert published.sha256 == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(
    "length", [b"-1", b"99999999999999", b"400000000"], ids=["minus_one", "huge", "400M"]
)
async def test_an_endless_upload_answer_is_not_read(
    client: cairn.ArtifactClient, length: bytes
) -> None:
    """An answer of Content-Length -1 was read to the end of the connection, one of
    400000000 as far as it went (each then parsed as an object), and one of
    99999999999999 raised MemoryError. Now a length past what the endpoint answers is
    UNAVAILABLE, unread, and the upload is sent again."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % length
    with between(client, _answering_endlessly(head)) as listener:
        published = await client.upload("m/e.bin", DATA)
    assert published.sha256 == hashlib.sha256(DATA).hexdigest()
    assert listener.sent < ENDLESS


def _header_flood(between: Between, connection: socket.socket) -> None:
    _head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    fields = b"".join(b"X-%d: %s\r\n" % (n, b"v" * 8000) for n in range(128))
    while between.sent < ENDLESS:
        connection.sendall(fields)
        between.sent += len(fields)


def _error_without_end(between: Between, connection: socket.socket) -> None:
    _head(connection)
    _send_endlessly(between, connection, b"HTTP/1.1 422 Error\r\nContent-Length: -1\r\n\r\n")


@pytest.mark.parametrize("first", [_header_flood, _error_without_end], ids=["fields", "error"])
async def test_an_endless_download_answer_is_not_read(
    client: cairn.ArtifactClient, tmp_path: Path, first: Callable[[Between, socket.socket], None]
) -> None:
    """An answer whose fields went on without end was read, each field kept (RSS grew
    by 300 MiB), and an error of Content-Length -1 was read to the end of the
    connection. Now either is an endpoint that did not answer: the download streams."""
    await client.upload("m/d.bin", DATA)
    with between(client, first) as listener:
        await client.download("m/d.bin", tmp_path / "d.bin")
    assert (tmp_path / "d.bin").read_bytes() == DATA
    assert listener.sent < ENDLESS
