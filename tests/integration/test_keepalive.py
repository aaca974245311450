"""A connection whose client stopped answering (a stopped process, a frozen pod, a
vanished host) is closed by the server, its calls cancelled: gRPC holds an answer until
its client has read it all or gone, so each 5-byte search of a paused client held tens
of MiB for as long as the connection stood, which was for ever."""

import asyncpg
import grpc
import pytest

from cairn_server.common import server
from cairn_server.common.config import Config
from tests.conftest import eventually, serving
from tests.proxy import FreezingProxy


async def test_a_client_that_answers_nothing_is_let_go(
    config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "PING_ANSWER_SECONDS", 0)  # a minute, as a second here
    async with serving(config, pool, [], keepalive_seconds=1) as port:
        proxy = FreezingProxy(port)
        await proxy.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
                await channel.channel_ready()
                proxy.freeze()
                await eventually(proxy.server_closed.is_set, what="the connection's close")
        finally:
            await proxy.close()
