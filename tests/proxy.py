"""A TCP proxy for gRPC that loses answers: armed, it forwards a call to the server and
cuts the connection when the server's answer begins, so the write is done but its
caller never hears of it (the fault that makes retries apply writes twice)."""

from __future__ import annotations

import asyncio
import contextlib

_FRAME_HEADER = 9
_HEADERS = 0x1


class AnswerDroppingProxy:
    """Listens on 127.0.0.1; `drop_next(n)` loses the next n answers."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._to_drop = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        """Listens on port (a free one if 0); returns it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def drop_next(self, answers: int = 1) -> None:
        self._to_drop = answers

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
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
        """Forwards the server's HTTP/2 frames; the headers that open an armed answer
        end the connection instead."""
        while True:
            header = await server_in.readexactly(_FRAME_HEADER)
            length = int.from_bytes(header[:3], "big")
            kind, stream = header[3], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
            payload = await server_in.readexactly(length)
            if kind == _HEADERS and stream and self._to_drop:
                self._to_drop -= 1
                self.dropped += 1
                return
            client_out.write(header + payload)
            await client_out.drain()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()


class StallingProxy:
    """A TCP proxy to host:port that can stop answering, as a hung object store or a
    black-holed route does: `stall()` cuts the connections it forwards (their requests
    are lost) and accepts new ones without ever answering them; after `resume()`, new
    connections are forwarded again, and those that met the stall stay silent."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._stalled = False
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._forwarding: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        """Listens on a free port of 127.0.0.1; returns it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def stall(self) -> None:
        self._stalled = True
        for connection in self._forwarding:
            connection.cancel()

    def resume(self) -> None:
        self._stalled = False

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        try:
            if self._stalled:
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
