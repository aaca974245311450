"""A streamed download goes on where it stopped once its server is back from a restart,
within its call's timeout (docs/artifacts.md): it was opened again at once, and gRPC's
own retries, 0.7 s in all, ended within the second a channel waits before it connects
again to a server that refused it, so the download failed UNAVAILABLE 9 times in 9."""

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


@pytest.mark.parametrize("stopped_for", [0.0, 1.0])
async def test_a_streamed_download_goes_on_after_its_server_restarts(
    config: Config, pool: asyncpg.Pool, unique: str, tmp_path: Path, stopped_for: float
) -> None:
    server = Restartable(config, pool, ["artifacts"])
    await server.start()
    project = await new_project(server.port, f"restart-{unique}")
    body = os.urandom(SIZE)
    restarted = asyncio.Event()

    async def restart() -> None:
        await server.stop(grace=0.0)
        await asyncio.sleep(stopped_for)  # how long the server is away: the fault itself
        await server.start()
        restarted.set()

    def on_progress(done: int, total: int | None) -> None:
        if done >= SIZE // 4 and not restarting:
            restarting.append(asyncio.ensure_future(restart()))

    restarting: list[asyncio.Future[None]] = []
    try:
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server.port, project=project
        ) as client:
            client.direct_threshold = None  # the stream itself
            await client.upload("big.bin", body)
            await client.download("big.bin", tmp_path, progress=on_progress, timeout=60)
        await asyncio.wait_for(restarted.wait(), 30)
    finally:
        await server.stop()

    landed = (tmp_path / "big.bin").read_bytes()
    assert hashlib.sha256(landed).digest() == hashlib.sha256(body).digest()
