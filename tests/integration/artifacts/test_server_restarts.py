"""Transfers go on once their server is back from a restart, within their call's
timeout (docs/artifacts.md). A streamed download was opened again at once, and an S3
direct upload's completion was sent again by gRPC alone: its retries, 0.7 s in all,
end within the second a channel waits before it connects again to a server that
refused it, so both failed UNAVAILABLE (the download 9 times in 9)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn_server.common.config import Config
from tests.conftest import Restartable, new_project

SIZE = 24 * 1024 * 1024


class _Restarting:
    """Restarts server, away for stopped_for seconds, once a transfer passed a quarter
    of SIZE (its progress callable): the completion of an upload to S3 then came
    within the second its channel waited before it connected again, 3 times in 3."""

    def __init__(self, server: Restartable, stopped_for: float) -> None:
        self._server, self._stopped_for = server, stopped_for
        self._restart: asyncio.Future[None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if done >= SIZE // 4 and self._restart is None:
            self._restart = asyncio.ensure_future(self._restarted())

    async def _restarted(self) -> None:
        await self._server.stop(grace=0.0)
        await asyncio.sleep(self._stopped_for)  # how long the server is away: the fault
        await self._server.start()

    async def done(self) -> None:
        assert self._restart is not None, "the transfer never passed a quarter"
        await asyncio.wait_for(self._restart, 30)


@pytest.mark.parametrize("stopped_for", [0.0, 1.0])
async def test_a_streamed_read_goes_on_after_its_server_restarts(
    config: Config, pool: asyncpg.Pool, unique: str, stopped_for: float
) -> None:
    """The server restarts between the first chunk and the rest: the stream is cut, and
    the rest comes from a stream opened again once the server is back."""
    server = Restartable(config, pool, ["artifacts"])
    await server.start()
    body = os.urandom(SIZE)
    chunks: list[bytes] = []
    try:
        project = await new_project(server.port, f"restart-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server.port, project=project
        ) as client:
            client.direct_threshold = None  # the stream itself
            await client.upload("big.bin", body)
            async for chunk in client.open("big.bin", timeout=60):
                chunks.append(chunk)
                if len(chunks) == 1:
                    await server.stop(grace=0.0)
                    await asyncio.sleep(stopped_for)  # how long it is away: the fault
                    await server.start()
    finally:
        await server.stop()

    assert len(chunks[0]) < SIZE
    assert _digest(b"".join(chunks)) == _digest(body)


async def test_a_direct_upload_to_s3_goes_on_after_its_server_restarts(
    s3_config: Config, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    server = Restartable(s3_config, pool, ["artifacts"])
    await server.start()
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(SIZE))
    try:
        project = await new_project(server.port, f"direct-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server.port, project=project
        ) as client:
            client.direct_threshold = SIZE // 2  # presigned, straight to the store
            restarting = _Restarting(server, 0.2)
            stored = await client.upload("big.bin", source, progress=restarting, timeout=60)
            await restarting.done()
            read = await client.read("big.bin")
    finally:
        await server.stop()

    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert _digest(read) == _digest(source.read_bytes())


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
