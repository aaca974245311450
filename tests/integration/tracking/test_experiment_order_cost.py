"""SearchExperiments orders by creation or last update time from an index: a page reads
about its own rows however many experiments the project holds, and the order (whole
milliseconds, ties by id), the view types and the page tokens are what they were when
every page sorted the whole project (audit 23, finding 4)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn.types import ViewType
from cairn_server.tracking.model import ViewType as StoreViewType
from cairn_server.tracking.store.experiments import ExperimentStore
from tests.conftest import new_project

from .rows_read import RecordingPool, rows_read

CROWD = 5_000
SMALL = 150
# The sort key as it was before the indexes (floor of the epoch in milliseconds), which
# the answers are compared with.
_MS = "floor(extract(epoch FROM {}) * 1000)::bigint"
_ORDER_SQL = {
    "": f"{_MS.format('creation_time')} DESC, experiment_id",
    "creation_time DESC": f"{_MS.format('creation_time')} DESC, experiment_id",
    "creation_time ASC": f"{_MS.format('creation_time')} ASC, experiment_id",
    "last_update_time DESC": f"{_MS.format('last_update_time')} DESC, experiment_id",
    "last_update_time": f"{_MS.format('last_update_time')} ASC, experiment_id",
    "name DESC": "name DESC, experiment_id",
    "creation_time DESC, name": f"{_MS.format('creation_time')} DESC, name, experiment_id",
}
_VIEWS = {
    ViewType.ACTIVE_ONLY: "lifecycle_stage = 1",
    ViewType.DELETED_ONLY: "lifecycle_stage = 2",
    ViewType.ALL: "TRUE",
}


async def _seed(pool: asyncpg.Pool, project: str, count: int) -> None:
    """count experiments in groups of five created within one millisecond, their
    microseconds in another order than their ids (so that the time itself orders them
    otherwise than milliseconds then id do, either way); update times in groups of
    three, some across a millisecond's end; every seventh deleted."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO tracking.experiments
                   (project, name, artifact_location, lifecycle_stage, creation_time,
                    last_update_time)
               SELECT $1, 'e' || g, 'x/' || g, CASE WHEN g % 7 = 0 THEN 2 ELSE 1 END,
                      timestamptz '2024-05-01 12:00:00+00' - (g / 5) * interval '1 ms'
                          + (g * 3 % 5) * interval '150 microseconds',
                      timestamptz '2024-06-01 00:00:00.0004+00' + (g / 3) * interval '1 ms'
                          + (g * 2 % 3) * interval '300 microseconds'
               FROM generate_series(1, $2) g""",
            project,
            count,
        )
        await conn.execute("ANALYZE tracking.experiments")


@pytest_asyncio.fixture(scope="module")
async def crowded(server_port: int, pool: asyncpg.Pool) -> str:
    project = await new_project(server_port, f"exp-order-crowd-{uuid.uuid4().hex[:8]}")
    await _seed(pool, project, CROWD)
    return project


@pytest_asyncio.fixture(scope="module")
async def small(server_port: int, pool: asyncpg.Pool) -> str:
    project = await new_project(server_port, f"exp-order-small-{uuid.uuid4().hex[:8]}")
    await _seed(pool, project, SMALL)
    return project


async def _expected(
    pool: asyncpg.Pool, project: str, order: str, view: ViewType, where: str
) -> list:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT experiment_id FROM tracking.experiments
                WHERE project = $1 AND {_VIEWS[view]} AND {where}
                ORDER BY {_ORDER_SQL[order]}""",
            project,
        )
    return [str(r["experiment_id"]) for r in rows]


async def _paged(client: cairn.TrackingClient, order: str, view: ViewType, text: str) -> list:
    found: list[str] = []
    token = None
    while True:
        page = await client.search_experiments(
            view, 7, text, [order] if order else None, page_token=token
        )
        found += [e.experiment_id for e in page]
        token = page.token
        if token is None:
            return found


@pytest.mark.parametrize("order", list(_ORDER_SQL))
async def test_pages_follow_the_millisecond_order_with_ties_by_id(
    server_port: int, pool: asyncpg.Pool, small: str, order: str
) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=small
    ) as client:
        for view in _VIEWS:
            expected = await _expected(pool, small, order, view, "TRUE")
            assert await _paged(client, order, view, "") == expected, (order, view)


async def test_a_time_filter_pages_as_before(
    server_port: int, pool: asyncpg.Pool, small: str
) -> None:
    async with pool.acquire() as conn:
        middle = await conn.fetchval(
            f"""SELECT {_MS.format("creation_time")} FROM tracking.experiments
                WHERE project = $1 AND name = 'e77'""",
            small,
        )
    where = f"{_MS.format('creation_time')} <= {middle}"
    expected = await _expected(pool, small, "", ViewType.ALL, where)
    assert 0 < len(expected) < SMALL
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=small
    ) as client:
        found = await _paged(client, "", ViewType.ALL, f"creation_time <= {middle}")
    assert found == expected


async def _page_cost(pool: asyncpg.Pool, project: str, order: str, view: StoreViewType) -> int:
    """Rows of experiments read by the 40th page of 10, the token taken from the
    page before it."""
    token = ""
    for _ in range(39):
        page = await ExperimentStore(pool).search(project, "", order, view, 10, token)
        token = page.next_page_token
    recording = RecordingPool(pool)
    page = await ExperimentStore(recording).search(project, "", order, view, 10, token)
    assert len(page.items) == 10
    return await rows_read(pool, recording.statements, "experiments")


@pytest.mark.parametrize(
    "order", ["", "creation_time ASC", "last_update_time DESC", "last_update_time ASC"]
)
@pytest.mark.parametrize("view", [StoreViewType.ALL, StoreViewType.ACTIVE_ONLY])
async def test_a_deep_page_reads_about_its_own_rows(
    pool: asyncpg.Pool, crowded: str, order: str, view: StoreViewType
) -> None:
    # A page of 10 and the one after; an active-only page skips the deleted among them
    # (every seventh), a page by ascending time reads the rest of its last millisecond.
    assert await _page_cost(pool, crowded, order, view) <= 30


@pytest.mark.parametrize("direction", ["DESC", "ASC"])
async def test_the_data_orders_otherwise_by_the_times_themselves(
    pool: asyncpg.Pool, small: str, direction: str
) -> None:
    """What makes the comparisons above tell the orders apart: by the time to the
    microsecond, experiments created within one millisecond would not follow their ids."""
    async with pool.acquire() as conn:
        by_moment = await conn.fetch(
            f"""SELECT experiment_id FROM tracking.experiments WHERE project = $1
                ORDER BY creation_time {direction}, experiment_id""",
            small,
        )
    by_milliseconds = await _expected(
        pool, small, f"creation_time {direction}", ViewType.ALL, "TRUE"
    )
    assert [str(r["experiment_id"]) for r in by_moment] != by_milliseconds
