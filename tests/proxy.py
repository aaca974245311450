"""A TCP proxy for gRPC that loses answers: armed, it forwards a call to the server and
cuts the connection when the server's answer begins (or, later, at its message), so the
write is done but its caller never hears of it (the fault that makes retries apply
writes twice)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
from collections.abc import Callable

_FRAME_HEADER = 9
_DATA = 0x0
_HEADERS = 0x1


class _Listener:
    """A server on 127.0.0.1 that serves each connection in a task of its own, and
    ends them all on close."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0  # connections taken in, ever

    async def _listen(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accepted(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.accepted += 1
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        await self._serve(client_in, client_out)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError


class AnswerDroppingProxy(_Listener):
    """Listens on 127.0.0.1; `drop_next(n)` loses the next n answers: at their headers,
    or, with after_headers, at their first message, once their headers reached the
    client (gRPC holds such a call committed: a retry policy of its own would send it no
    more)."""

    def __init__(self, target_port: int, *, after_headers: bool = False) -> None:
        super().__init__()
        self._target_port = target_port
        self._cut_at = _DATA if after_headers else _HEADERS
        self._to_drop = 0
        self.dropped = 0

    async def start(self, port: int = 0) -> int:
        """Listens on port (a free one if 0); returns it."""
        return await self._listen(port)

    def drop_next(self, answers: int = 1) -> None:
        self._to_drop = answers

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._target_port)
        upstream = asyncio.ensure_future(_copy(client_in, server_out))
        try:
            await self._answers(server_in, client_out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # either side went away
        finally:
            upstream.cancel()
            for writer in (client_out, server_out):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _answers(self, server_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        """Forwards the server's HTTP/2 frames until one the connection ends at."""
        while True:
            header = await server_in.readexactly(_FRAME_HEADER)
            length = int.from_bytes(header[:3], "big")
            kind, stream = header[3], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
            payload = await server_in.readexactly(length)
            if stream and self._to_drop and self._ends_at(kind, payload):
                self._to_drop -= 1
                self.dropped += 1
                return
            client_out.write(header + payload)
            await client_out.drain()

    def _ends_at(self, kind: int, payload: bytes) -> bool:
        """Whether an armed proxy ends the connection at this frame of a stream, instead
        of forwarding it: the headers that open an answer (or its first message)."""
        return kind == self._cut_at and bool(payload)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()


class StallingProxy(_Listener):
    """A TCP proxy to host:port that can stop answering, as a hung object store or a
    black-holed route does: `stall()` cuts the connections it forwards (their requests
    are lost) and accepts new ones without ever answering them; after `resume()`, new
    connections are forwarded again, and those that met the stall stay silent."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._target = (host, port)
        self._stalled = False
        self._forwarding: set[asyncio.Task[None]] = set()
        self.unanswered = 0  # connections taken in while stalled

    async def start(self) -> int:
        """Listens on a free port of 127.0.0.1; returns it."""
        return await self._listen()

    def stall(self) -> None:
        self._stalled = True
        for connection in self._forwarding:
            connection.cancel()

    def resume(self) -> None:
        self._stalled = False

    @property
    def forwarding(self) -> int:
        """The connections it forwards now (those cut by a stall are gone once closed)."""
        return len(self._forwarding)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        try:
            if self._stalled:
                self.unanswered += 1
                while await client_in.read(65536):
                    pass  # read the request, never answer
                return
            self._forwarding.add(task)
            task.add_done_callback(self._forwarding.discard)
            await self._forward(client_in, client_out)
        except ConnectionError:
            pass  # the client went away
        finally:
            client_out.close()

    async def _forward(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        """Copies both ways until either side closes."""
        server_in, server_out = await asyncio.open_connection(*self._target)
        directions = {
            asyncio.ensure_future(_copy(client_in, server_out)),
            asyncio.ensure_future(_copy(server_in, client_out)),
        }
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            server_out.close()


class FreezingProxy(_Listener):
    """A TCP proxy to a gRPC server whose client can freeze, as a stopped process or a
    vanished host does: after `freeze()` nothing passes either way, so the server's
    pings go unanswered; what the server sends is still taken (and dropped), so that
    `server_closed` is set once the server closes a connection."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._target = port
        self._frozen = False
        self.server_closed = asyncio.Event()

    async def start(self) -> int:
        """Listens on a free port of 127.0.0.1; returns it."""
        return await self._listen()

    def freeze(self) -> None:
        self._frozen = True

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._target)
        directions = {
            asyncio.ensure_future(self._pass(client_in, server_out)),
            asyncio.ensure_future(self._pass(server_in, client_out)),
        }
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
            if server_in.at_eof():
                self.server_closed.set()
        finally:
            for direction in directions:
                direction.cancel()
            server_out.close()
            client_out.close()

    async def _pass(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter):
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if not self._frozen:
                    sink.write(chunk)
                    await sink.drain()


class S3AnsweringProxy(_Listener):
    """An HTTP/1.1 proxy to an S3 server that answers chosen requests itself, as a store
    may: `answer` (method, target) gives the response to send instead of forwarding the
    request (a 200 OK whose body is an <Error>, which S3 documents for a multipart
    completion, or no body at all), or None to forward it. Each connection carries one
    request at a time, as the SDK sends them, so answers keep their order."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._target = (host, port)
        self.answer: Callable[[str, str], bytes | None] = lambda method, target: None

    async def start(self) -> int:
        return await self._listen()

    async def before_forwarding(self, method: str, target: str) -> None:
        """Called with each request it forwards, before it does: a proxy that holds some
        requests back waits here."""

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        server_in, server_out = await asyncio.open_connection(*self._target)
        answers = asyncio.ensure_future(_copy(server_in, client_out))
        try:
            while True:
                head = await client_in.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await client_in.readexactly(int(length.group(1)) if length else 0)
                method, target = head.decode("latin-1").split(" ", 2)[:2]
                if (own := self.answer(method, target)) is not None:
                    client_out.write(own)
                    await client_out.drain()
                else:
                    await self.before_forwarding(method, target)
                    server_out.write(head + body)
                    await server_out.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # either side went away
        finally:
            answers.cancel()
            server_out.close()
            client_out.close()


def http_answer(status: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 response of status ("200 OK") with an XML body."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class PostgresProxy(_Listener):
    """A TCP proxy on 127.0.0.1 in front of a PostgreSQL listening on a unix socket, for
    faults between a server and its database. `cut_on(pattern)` breaks the connection
    that next sends a statement matching pattern, before PostgreSQL gets it.
    `partition()` stops every byte either way, and leaves new connections unanswered,
    as a network partition or a black-holed route does; `heal()` lets them flow again
    (what TCP's retransmissions would have carried arrives then). `refuse_new()` refuses
    new connections alone."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        url = urllib.parse.urlparse(database_url)
        socket_dir = urllib.parse.parse_qs(url.query)["host"][0]
        self._socket = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
        self._user, self._database = url.username or "postgres", url.path.lstrip("/")
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut: re.Pattern[bytes] | None = None
        self.cuts: list[bytes] = []
        self.held = 0  # messages sent to PostgreSQL during a partition, held back

    async def start(self) -> str:
        """Listens on a free port; returns the database URL that leads through it."""
        await self._listen()
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{self._database}"

    async def close(self) -> None:
        self.heal()
        await super().close()

    def cut_on(self, pattern: bytes) -> None:
        self._cut = re.compile(pattern, re.IGNORECASE | re.DOTALL)

    def partition(self) -> None:
        self._flowing.clear()

    def refuse_new(self) -> None:
        """Refuses new connections while those open go on, as a database Service that
        lost its endpoints does."""
        assert self._server is not None
        self._server.close()

    def heal(self) -> None:
        self._flowing.set()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        writers = [client_out]
        try:
            await self._flowing.wait()  # the connection is not answered meanwhile
            server_in, server_out = await asyncio.open_unix_connection(self._socket)
            writers.append(server_out)
            answers = asyncio.ensure_future(self._pass(server_in, client_out))
            try:
                await self._statements(client_in, server_out)
            finally:
                answers.cancel()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # either side went away
        finally:
            for writer in writers:
                writer.close()

    async def _statements(
        self, client_in: asyncio.StreamReader, server_out: asyncio.StreamWriter
    ) -> None:
        """Forwards the client's messages; returns at the one to cut on."""
        startup = await _untyped_message(client_in)
        if startup[4:8] == _SSL_REQUEST:  # the server answers it; then the startup comes
            await self._send(server_out, startup)
            startup = await _untyped_message(client_in)
        await self._send(server_out, startup)
        prepared: dict[bytes, bytes] = {}  # statement name -> text, for Bind
        while True:
            kind = await client_in.readexactly(1)
            length = await client_in.readexactly(4)
            body = await client_in.readexactly(int.from_bytes(length, "big") - 4)
            text = _statement_text(kind, body, prepared)
            if self._cut is not None and text is not None and self._cut.search(text):
                self._cut = None
                self.cuts.append(text)
                return
            self.held += not self._flowing.is_set()
            await self._send(server_out, kind + length + body)

    async def _pass(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while chunk := await source.read(65536):
                await self._send(sink, chunk)
        sink.close()

    async def _send(self, sink: asyncio.StreamWriter, data: bytes) -> None:
        await self._flowing.wait()
        sink.write(data)
        await sink.drain()


_SSL_REQUEST = (80877103).to_bytes(4, "big")


async def _untyped_message(source: asyncio.StreamReader) -> bytes:
    """A startup-phase message: its length (4 bytes, itself included), then the rest."""
    length = await source.readexactly(4)
    return length + await source.readexactly(int.from_bytes(length, "big") - 4)


def _statement_text(kind: bytes, body: bytes, prepared: dict[bytes, bytes]) -> bytes | None:
    """The SQL a Query, Parse or Bind message runs (Bind names a statement parsed before)."""
    if kind == b"Q":
        return body
    if kind == b"P":
        name, _, rest = body.partition(b"\0")
        prepared[name] = rest.partition(b"\0")[0]
        return prepared[name]
    if kind == b"B":
        statement = body.partition(b"\0")[2].partition(b"\0")[0]
        return prepared.get(statement, b"")
    return None
