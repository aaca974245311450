"""A store whose answers run longer than they should: a part PUT answered with a body
without end, a read-back that sends more than the object holds. What is read of them is
bounded, and a read-back at odds with the store's own size is the store's failure
(UNAVAILABLE, call again), never a verdict that spends the upload."""

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import pytest

import cairn
from cairn_server.common.config import Config
from tests.conftest import new_project, serving
from tests.integration.artifacts.conftest import store_through

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 17)  # over the direct threshold set below: one part
FILLER = 256 * MIB  # what a reshaped answer sends past moto's, unless its reader stops
READ_AT_MOST = 32 * MIB  # far more than a bounded reader takes, socket buffers included


@dataclass
class Tail:
    """How an answer is reshaped: moto's, sent chunked under status (moto's when
    None), followed by extra filler bytes."""

    extra: int
    status: bytes | None = None


class ReshapingProxy:
    """An HTTP/1.1 proxy to moto that forwards each request and reads moto's answer
    whole; rule(method, target) gives a Tail to send it with, or None to pass it on."""

    def __init__(self, host: str, port: int, rule: Callable[[str, str], Tail | None]) -> None:
        self._target = (host, port)
        self._rule = rule
        self._server: asyncio.Server | None = None
        self.port = 0
        self.filler_sent = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> "ReshapingProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        server_in, server_out = await asyncio.open_connection(*self._target)
        self._writers |= {client_out, server_out}
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await client_in.readuntil(b"\r\n\r\n")
                body = await client_in.readexactly(_length(head))
                method, target = head.decode("latin-1").split(" ", 2)[:2]
                server_out.write(head + body)
                answer_head = await server_in.readuntil(b"\r\n\r\n")
                answer = (
                    b"" if method == "HEAD" else await server_in.readexactly(_length(answer_head))
                )
                tail = self._rule(method, target)
                if tail is None:
                    client_out.write(answer_head + answer)
                    await client_out.drain()
                else:
                    await self._reshaped(client_out, answer_head, answer, tail)
        server_out.close()
        client_out.close()

    async def _reshaped(
        self, out: asyncio.StreamWriter, head: bytes, body: bytes, tail: Tail
    ) -> None:
        lines = head.rstrip(b"\r\n").split(b"\r\n")
        status = lines[0] if tail.status is None else b"HTTP/1.1 " + tail.status
        fields = [line for line in lines[1:] if not line.lower().startswith(b"content-length")]
        out.write(b"\r\n".join([status, *fields, b"Transfer-Encoding: chunked", b"", b""]))
        if body:
            out.write(b"%x\r\n%s\r\n" % (len(body), body))
        block = b"%x\r\n%s\r\n" % (MIB, b"<" * MIB)
        for _ in range(tail.extra // MIB):
            out.write(block)
            await out.drain()  # raises once the reader closed the connection
            self.filler_sent += MIB
        out.write(b"0\r\n\r\n")
        await out.drain()


def _length(head: bytes) -> int:
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return int(found.group(1)) if found else 0


def _first(count: int, matches: Callable[[str, str], bool], tail: Tail):
    """A rule that reshapes the first count answers to requests that match."""
    left = [count]

    def rule(method: str, target: str) -> Tail | None:
        if left[0] and matches(method, target):
            left[0] -= 1
            return tail
        return None

    return rule


def _part_put(method: str, target: str) -> bool:
    return method == "PUT" and "partNumber=" in target


def _read_back(method: str, target: str) -> bool:
    return method == "GET" and "/_objects/" in target and "?" not in target


@contextlib.asynccontextmanager
async def _client_through_public(
    s3_config: Config, pool: asyncpg.Pool, proxy: ReshapingProxy, name: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """A client whose presigned URLs lead through proxy; the server reaches moto."""
    async with serving(
        s3_config, pool, ["artifacts"], s3_public_endpoint=f"127.0.0.1:{proxy.port}"
    ) as port:
        project = await new_project(port, name)
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project
        ) as client:
            client.direct_threshold = MIB
            yield client


@pytest.mark.parametrize("status", [None, b"403 Forbidden"], ids=["ok", "refused"])
async def test_a_part_answer_without_end_is_read_no_further_than_its_start(
    s3_config: Config, pool: asyncpg.Pool, unique: str, status: bytes | None
) -> None:
    """A part PUT's answer was preloaded whole: a store answering 200 with its ETag and
    then a body without end had it all read into memory (300 MiB, RSS +638 MiB) before
    the upload went on; a refusal's body (a 403's) was read whole too."""
    host, port = s3_config.s3_endpoint.split(":")
    rule = _first(1, _part_put, Tail(FILLER, status))
    async with (
        ReshapingProxy(host, int(port), rule) as proxy,
        _client_through_public(s3_config, pool, proxy, f"bnd-put-{unique}") as client,
    ):
        stored = await asyncio.wait_for(client.upload("m/part.bin", DATA), 60)
        assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
        assert proxy.filler_sent < READ_AT_MOST, proxy.filler_sent


async def test_a_read_back_without_end_stops_past_the_size_and_is_called_again(
    s3_config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """The completion's read-back hashed whatever the store sent and compared sizes only
    at its end: a store sending data without end kept it reading (25 GiB in 23 s for a
    3 MiB object), past the client's deadline, holding a completion slot and a lease;
    what it finally read was answered INVALID_ARGUMENT SIZE_MISMATCH."""
    host, port = s3_config.s3_endpoint.split(":")
    rule = _first(1, _read_back, Tail(FILLER))
    async with (
        ReshapingProxy(host, int(port), rule) as proxy,
        store_through(s3_config, pool, proxy.port, f"bnd-end-{unique}") as client,
    ):
        client.direct_threshold = MIB
        stored = await asyncio.wait_for(client.upload("m/endless.bin", DATA), 60)
        assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
        assert proxy.filler_sent < READ_AT_MOST, proxy.filler_sent


async def test_a_read_back_of_another_size_than_the_store_reported_leaves_the_upload(
    s3_config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A read-back that brought more bytes than the size the store itself reported
    was answered INVALID_ARGUMENT SIZE_MISMATCH, as if the client had claimed it, and
    spent the upload: its bytes removed, the object NOT_FOUND. It is the store's fault:
    UNAVAILABLE, which the client's channel calls again, and the upload completes."""
    host, port = s3_config.s3_endpoint.split(":")
    read_backs = []

    def rule(method: str, target: str) -> Tail | None:
        if not _read_back(method, target):
            return None
        read_backs.append(target)
        return Tail(MIB) if len(read_backs) == 1 else None  # one answer a MiB too long

    async with (
        ReshapingProxy(host, int(port), rule) as proxy,
        store_through(s3_config, pool, proxy.port, f"bnd-odd-{unique}") as client,
    ):
        client.direct_threshold = MIB
        stored = await asyncio.wait_for(client.upload("m/odd.bin", DATA), 60)
        assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
        assert len(read_backs) == 2, read_backs  # the second, called again, agreed
        assert (await client.stat("m/odd.bin")).size == len(DATA)
