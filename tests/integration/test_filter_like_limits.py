"""LIKE and ILIKE terms are bounded by the filter language: a long pattern or too many
such terms is refused at once, in tracking and registry lists alike, and the costliest
filter allowed stays cheap over long values. Before, a 4,000-character pattern over
1,000 runs whose tag holds 8,000 characters held a database connection for 25 s, and
140 ILIKE terms over 10,000 runs ran into the 30 s statement timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sized

import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn_server.common.filters import LIMITS
from tests.conftest import new_project

RUNS = 1_000
LONGEST = "a" * 8000  # the longest tag value a run may hold
TOO_LONG = f"tags.t LIKE '%{'a' * 4000}b%'"
TOO_MANY = " OR ".join(f"tags.t ILIKE '%q{i}%'" for i in range(LIMITS.like_terms + 1))
# The costliest pattern allowed: each of its characters is compared at every position of
# a value of repeated 'a's before the final 'b' fails.
COSTLIEST = f"tags.t LIKE '%{'a' * (LIMITS.like_characters - 3)}b%'"
MATCHING = f"tags.t LIKE '%{'a' * (LIMITS.like_characters - 2)}%'"


async def _refused(search: Callable[[str], Awaitable[object]], text: str, limit: int) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidArgumentError) as refused:
        await search(text)
    assert refused.value.reason == "FILTER_TOO_COMPLEX"
    assert f"at most {limit} " in refused.value.message
    assert time.perf_counter() - started < 1.0


async def test_tracking_refuses_long_patterns_and_many_like_terms(server_port: int) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        experiment_id = await client.create_experiment(f"like-{time.time_ns()}")
        await client.create_run(experiment_id, tags={"t": LONGEST})

        async def search(text: str) -> Sized:
            return await client.search_runs([experiment_id], text)

        await _refused(search, TOO_LONG, LIMITS.like_characters)
        await _refused(search, TOO_MANY, LIMITS.like_terms)
        assert len(await search(MATCHING)) == 1
        assert len(await search(COSTLIEST)) == 0


async def test_a_registry_listing_refuses_long_patterns_and_many_like_terms(
    server_port: int, unique: str
) -> None:
    project = await new_project(server_port, f"like-{unique}")
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as registry:
        await registry.create_registered_model("m")
        await registry.create_model_version("m", "s3://bucket/m", tags={"t": LONGEST})

        async def search(text: str) -> Sized:
            return await registry.search_model_versions(text)

        await _refused(search, TOO_LONG, LIMITS.like_characters)
        await _refused(search, TOO_MANY, LIMITS.like_terms)
        assert len(await search(MATCHING)) == 1
        assert len(await search(COSTLIEST)) == 0


async def test_the_costliest_like_filter_allowed_stays_cheap_over_long_values(
    server_port: int,
) -> None:
    """1,000 runs whose tag is the longest value allowed, all of one repeated letter:
    the worst case of PostgreSQL's LIKE, which compares the pattern at each position."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        experiment_id = await client.create_experiment(f"like-cost-{time.time_ns()}")
        gate = asyncio.Semaphore(8)

        async def create() -> None:
            async with gate:
                await client.create_run(experiment_id, tags={"t": LONGEST})

        await asyncio.gather(*(create() for _ in range(RUNS)))
        started = time.perf_counter()
        assert len(await client.search_runs([experiment_id], COSTLIEST)) == 0
        assert time.perf_counter() - started < 2.0
