"""A garbage collection that loses its database connection in the middle of a step
(PostgreSQL itself up, as in a failover or a dropped route) is handed back and resumed
from what is left, as after a server's restart, and succeeds; it does not end FAILED."""

from __future__ import annotations

import datetime

import asyncpg
import pytest

import cairn
from cairn.exceptions import NotFoundError
from cairn.types import OperationState
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import new_project, with_overrides
from tests.proxy import PostgresProxy

HOUR = datetime.timedelta(hours=1)


async def test_a_connection_lost_mid_step_is_resumed_not_failed(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start())
    own_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), own_pool)
    port = await server.start()
    try:
        project = await new_project(port, f"gc-cut-{unique}")
        async with cairn.Client(f"http://127.0.0.1:{port}", project=project) as client:
            tracking = client.tracking
            run_id = (await tracking.create_run(await tracking.create_experiment("e"))).info.run_id
            await tracking.delete_run(run_id)
            await pool.execute(
                """UPDATE tracking.runs SET delete_time = delete_time - interval '2 hours'
                   WHERE run_id = $1::text::uuid""",
                run_id,
            )
            proxy.cut_on(rb"SELECT count\(\*\) FROM tracking\.runs")  # the tracking step's first
            started = await client.operations.start_garbage_collection(HOUR)
            done = await client.operations.wait_operation(started.name, timeout=30)
            assert proxy.cuts
            assert done.state is OperationState.SUCCEEDED, done.errors
            assert done.counts["runs"] >= 1
            with pytest.raises(NotFoundError):
                await tracking.get_run(run_id)
    finally:
        await server.stop(grace=1.0)
        await own_pool.close()
        await proxy.close()
