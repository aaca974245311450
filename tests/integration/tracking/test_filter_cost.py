"""No filter can make one request expensive: answers over 10,000 runs come in well
under a second, and a statement that runs long anyway is cut off by the pool's guard."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

import cairn
from bench import filters as bench_filters
from cairn.exceptions import InvalidArgumentError, ResourceExhaustedError
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.filters import LIMITS
from cairn_server.common.server import CairnServer

RUNS = 10_000
SECOND = 1.0  # the bound for the 200-term filter: answered within 1 s


@pytest_asyncio.fixture(scope="module")
async def crowded(postgres_url: str, server_port: int) -> str:
    """An experiment of 10,000 runs with five metrics, params and tags each, as
    `make bench-filters` searches."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        experiment_id = await client.create_experiment(f"crowded-{time.time_ns()}")
    await bench_filters.seed(postgres_url, experiment_id, RUNS)
    return experiment_id


async def _timed_search(client: cairn.TrackingClient, experiment_id: str, text: str) -> float:
    started = time.perf_counter()
    page = await client.search_runs([experiment_id], text, max_results=100)
    seconds = time.perf_counter() - started
    assert len(page) == 100, "every filter here matches most of the runs"
    return seconds


def _terms(count: int, term: str = "metrics.m1 > 0", joiner: str = " AND ") -> str:
    return joiner.join([term] * count)


async def test_the_200_term_filter_answers_within_a_second(
    tracking: cairn.TrackingClient, crowded: str
) -> None:
    text = _terms(200)
    assert len(text) == 3795  # the filter that took a backend to 23 GiB and 106 s
    assert await _timed_search(tracking, crowded, text) < SECOND


async def test_the_costliest_filter_the_limits_allow_answers_within_a_second(
    tracking: cairn.TrackingClient, crowded: str
) -> None:
    """Every distinct key allowed (each one lookup), OR-ed under the deepest nesting,
    ordered by yet another key, with every LIKE term and pattern character allowed: the
    worst shape, not the longest text."""
    families = [
        [f"{entity}.{entity[0]}{i}" for i in range(5)] for entity in ("metrics", "params", "tags")
    ]
    keys = [key for five in zip(*families, strict=True) for key in five][: LIMITS.keys]
    assert len(keys) == LIMITS.keys
    either = " OR ".join(f"{key} IS NOT NULL" for key in keys)
    depth = LIMITS.depth - 1
    share = LIMITS.like_characters // LIMITS.like_terms
    unlike = [f"params.p{i % 4} NOT LIKE '%{'z' * (share - 2)}%'" for i in range(LIMITS.like_terms)]
    nested = "(" * depth + either + ")" * depth
    text = " AND ".join([nested, _terms(50, "metrics.m0 >= 0"), *unlike])
    started = time.perf_counter()
    page = await tracking.search_runs(
        [crowded], text, order_by=["params.p3 DESC", "metrics.m2"], max_results=100
    )
    assert len(page) == 100
    assert time.perf_counter() - started < SECOND


async def test_filters_past_the_limits_are_refused_at_once(
    tracking: cairn.TrackingClient, crowded: str
) -> None:
    for text in (
        _terms(400),  # 7,595 characters: past the length limit
        _terms(LIMITS.terms + 1, "m1=1", " OR "),
        " OR ".join(f"tags.t{i} = 'x'" for i in range(LIMITS.keys + 1)),
        "(" * 196 + "metrics.m1 > 0" + ")" * 196,
        f"params.p1 LIKE '%{'a' * 4000}b%'",
        _terms(LIMITS.like_terms + 1, "params.p1 ILIKE '%x%'", " OR "),
    ):
        started = time.perf_counter()
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.search_runs([crowded], text)
        assert refused.value.reason == "FILTER_TOO_COMPLEX"
        assert time.perf_counter() - started < SECOND


async def test_twelve_at_once_keep_the_server_answering_others(
    tracking: cairn.TrackingClient, crowded: str, experiment_id: str
) -> None:
    """Twelve of those at once crashed PostgreSQL; now a bystander's call goes through
    while they run, and they all finish."""
    heavy = [asyncio.create_task(_timed_search(tracking, crowded, _terms(200))) for _ in range(12)]
    bystander = await tracking.get_experiment(experiment_id)
    assert bystander.experiment_id == experiment_id
    assert max(await asyncio.gather(*heavy)) < 6 * SECOND


@pytest_asyncio.fixture
async def guarded(config: Config, crowded: str) -> AsyncIterator[tuple[int, asyncpg.Pool]]:
    """The services again, on their own pool, with a statement timeout of 0.3 s."""
    strict = dataclasses.replace(config, db_statement_timeout_seconds=0.3, db_work_mem_kib=2048)
    pool = await database.create_pool(strict.database_url, strict)
    server = CairnServer(strict, catalog.select([]), pool)
    try:
        yield await server.start(), pool
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(pool)


async def test_every_pool_connection_carries_the_guards(
    guarded: tuple[int, asyncpg.Pool],
) -> None:
    _, pool = guarded
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "300ms"
        assert await conn.fetchval("SHOW work_mem") == "2MB"


async def test_a_statement_past_the_timeout_is_resource_exhausted(
    guarded: tuple[int, asyncpg.Pool], postgres_url: str, crowded: str
) -> None:
    """A search that has to wait (here, for a lock the test holds) longer than the
    timeout is cancelled by PostgreSQL and answers STATEMENT_TIMEOUT, not INTERNAL."""
    port, _ = guarded
    holder = await asyncpg.connect(postgres_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE tracking.latest_metrics IN ACCESS EXCLUSIVE MODE")
            async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client:
                started = time.perf_counter()
                with pytest.raises(ResourceExhaustedError) as cut:
                    await client.search_runs([crowded], "metrics.m1 > 0.5")
                assert cut.value.reason == "STATEMENT_TIMEOUT"
                assert time.perf_counter() - started < 5 * SECOND
    finally:
        await holder.close()
