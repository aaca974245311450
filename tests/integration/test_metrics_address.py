"""The /metrics endpoint on the addresses CAIRN_METRICS_ADDRESS takes: port 0 is told
(the server logs it), a bracketed IPv6 host binds as grpc's addresses do, and one that
cannot be bound says which setting named it."""

from __future__ import annotations

import asyncio
import urllib.request

import asyncpg
import pytest

from cairn_server.common import metrics


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


@pytest.mark.parametrize(("address", "host"), [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "[::1]")])
async def test_port_0_binds_a_free_port_and_returns_it(
    pool: asyncpg.Pool, address: str, host: str
) -> None:
    """Before, serve returned nothing, and "[::1]:0" failed: "Name or service not known"."""
    port = metrics.serve(address, pool)
    assert isinstance(port, int) and port > 0
    page = await asyncio.to_thread(_scrape, f"http://{host}:{port}/metrics")
    assert "cairn_db_pool_max" in page and "cairn_rpc_calls" in page


async def test_an_address_that_cannot_be_bound_names_the_setting(pool: asyncpg.Pool) -> None:
    with pytest.raises(OSError) as refused:
        metrics.serve("no-such-host.invalid:0", pool)
    assert str(refused.value) == (
        "cannot serve metrics on no-such-host.invalid:0 (CAIRN_METRICS_ADDRESS, "
        "--metrics-address): Name or service not known"
    )
