"""A client's connection takes new calls for CAIRN_MAX_CONNECTION_AGE_SECONDS, then the
client opens another, looking the server's name up again: before, a connection lasted
as long as its client, so a client held for hours never reached a replica the
autoscaler added behind a headless Service (gRPC resolves a name again only when a
connection ends)."""

import asyncpg

import cairn
from cairn_server.common import server
from cairn_server.common.config import Config
from tests.conftest import eventually, serving
from tests.proxy import StallingProxy


async def test_a_client_opens_a_new_connection_once_its_own_is_old(
    config: Config, pool: asyncpg.Pool
) -> None:
    async with serving(config, pool, ["tracking"], max_connection_age_seconds=1) as port:
        proxy = StallingProxy("127.0.0.1", port)  # forwards, and counts connections
        await proxy.start()
        try:
            async with cairn.TrackingClient.insecure_connection("127.0.0.1", proxy.port) as client:

                async def reconnected() -> bool:
                    # Every call is answered, on the old connection or the new one.
                    assert await client.get_experiment_by_name("absent") is None
                    return proxy.accepted >= 2

                await eventually(reconnected, what="a second connection")
        finally:
            await proxy.close()


def test_an_age_of_zero_keeps_connections() -> None:
    """0 turns the age off: gRPC's own default, connections kept for ever, and not an
    age of 0 ms, which would send each connection away as it opened."""
    assert server._connection_age(0) == []
    assert server._connection_age(1.5) == [("grpc.max_connection_age_ms", 1500)]
