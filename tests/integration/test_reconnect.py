"""Clients reach a server within seconds of its return after an outage: a client made
afterwards at once, however long another client in the same process had been failing,
and a client that lived through the outage within its reconnect backoff (2 s)."""

import asyncio
import socket

import cairn
from cairn.exceptions import UnavailableError
from tests.conftest import eventually
from tests.proxy import AnswerDroppingProxy

# After 10 s of failing, gRPC's own backoff (1 s, growing 1.6 times an attempt, 20%
# jitter) would try next about 6 s after the server's return, 2.6 s at the soonest.
OUTAGE_SECONDS = 10.0
# The 2 s cap with its jitter, a failing call's retries (0.7 s) and the connection.
RECONNECT_SECONDS = 4.5


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _answered(client: cairn.TrackingClient) -> bool:
    try:
        return await client.get_experiment_by_name("absent") is None
    except UnavailableError:
        return False


async def test_clients_reach_a_server_soon_after_it_comes_back(server_port: int) -> None:
    port = _unused_port()
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as waiting:
        loop = asyncio.get_running_loop()
        outage_ends = loop.time() + OUTAGE_SECONDS
        while loop.time() < outage_ends:
            assert not await _answered(waiting)
        server = AnswerDroppingProxy(server_port)  # drops nothing: the server, come back
        await server.start(port)
        try:
            async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as fresh:
                assert await _answered(fresh)
            await eventually(
                lambda: _answered(waiting), RECONNECT_SECONDS, "the waiting client reconnects"
            )
        finally:
            await server.close()
