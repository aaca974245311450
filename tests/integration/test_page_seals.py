"""Page tokens are tamper-evident: a list serves only the tokens its service sealed, and
every replica of the service (sharing its database) honours them, before and after a
restart."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from cairn_server.common.service import Unservable
from tests.conftest import sealed_by, serving, unsealed, with_overrides


async def _experiment(tracking: cairn.TrackingClient, name: str, runs: int) -> str:
    experiment_id = await tracking.create_experiment(name)
    for number in range(runs):
        await tracking.create_run(experiment_id, run_name=f"r{number}", start_time=number + 1)
    return experiment_id


async def _names(tracking: cairn.TrackingClient, experiment_id: str, token: str) -> list[str]:
    """The names of the runs of the pages from token on (oldest first, two a page)."""
    names: list[str] = []
    while True:
        page = await tracking.search_runs(
            experiment_id, max_results=2, order_by=["attributes.start_time"], page_token=token
        )
        names += [run.info.run_name for run in page]
        if not page.token:
            return names
        token = page.token


async def _refused(tracking: cairn.TrackingClient, experiment_id: str, token: str) -> str | None:
    with pytest.raises(InvalidArgumentError) as raised:
        await _names(tracking, experiment_id, token)
    return raised.value.reason


async def test_an_edited_token_is_refused_where_it_was_served(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """A token edited to start further on, a bare one (as the release before wrote
    them), and one of another service were served (the first skipped two runs); a seal
    of non-ASCII text must be refused as any other, not fail the comparison."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await _experiment(tracking, f"seals-{unique}", runs=6)
        first = await tracking.search_runs(
            experiment_id, max_results=2, order_by=["attributes.start_time"]
        )
        assert first.token is not None
        bare = unsealed(first.token)
        payload = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
        # The sort key: missing flag, start time, run id. After every run started at 4,
        # not after the one started at 2: two runs skipped.
        payload["k"][1:] = [4, str(uuid.UUID(int=2**128 - 1))]
        skipping = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        seal = first.token.rpartition(".")[2]
        other_service = await sealed_by(pool, "registry", bare)
        for token in (f"{skipping}.{seal}", bare, other_service, f"{bare}.é"):
            assert await _refused(tracking, experiment_id, token) == "INVALID_PAGE_TOKEN"
        # Sealed by the service's own key, the edit is what paging reads: the seal alone
        # refused it above.
        edited = await sealed_by(pool, "tracking", skipping)
        assert await _names(tracking, experiment_id, edited) == ["r4", "r5"]
        assert await _names(tracking, experiment_id, first.token) == ["r2", "r3", "r4", "r5"]


async def test_a_token_is_honoured_by_another_replica_and_after_a_restart(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """Replicas share their service's key through the database, so a walk may move from
    one to another, and outlive the server that began it."""
    async with _tracking(config, pool) as tracking:
        experiment_id = await _experiment(tracking, f"replicas-{unique}", runs=5)
        page = await tracking.search_runs(
            experiment_id, max_results=2, order_by=["attributes.start_time"]
        )
    assert [run.info.run_name for run in page] == ["r0", "r1"]
    assert page.token is not None
    async with _tracking(config, pool) as tracking:
        assert await _names(tracking, experiment_id, page.token) == ["r2", "r3", "r4"]


@contextlib.asynccontextmanager
async def _tracking(config: Config, pool: asyncpg.Pool) -> AsyncIterator[cairn.TrackingClient]:
    """A client of a tracking server of its own, stopped when the client is done."""
    async with (
        serving(config, pool, ["tracking"]) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking,
    ):
        yield tracking


async def test_each_service_has_a_key_of_its_own(pool: asyncpg.Pool) -> None:
    keys = [
        await pool.fetchval(f"SELECT secret FROM {schema}.page_token_key")
        for schema in ("auth", "tracking", "registry", "artifacts", "operations")
    ]
    assert all(len(key) == 32 for key in keys)
    assert len(set(keys)) == len(keys)


async def test_a_server_whose_key_is_gone_does_not_start(own_postgres, config: Config) -> None:
    """A key deleted instead of replaced made every list call INTERNAL, on a server
    that reported itself serving."""
    settings = with_overrides(config, database_url=own_postgres.get_uri())
    pool = await database.create_pool(settings.database_url, settings)
    try:
        await migrate(pool, catalog.select(["tracking"]))
        await pool.execute("DELETE FROM tracking.page_token_key")
        server = CairnServer(settings, catalog.select(["tracking"]), pool)
        with pytest.raises(Unservable, match=r"tracking\.page_token_key holds no key"):
            await server.start()
    finally:
        await database.close_pool(pool)
