"""`make bench-registry`: lookups, paging through 10,000 models, concurrent versions.

Baselines measured in the same run: a gRPC round trip to the same server that touches
no database (a health check), and a bare `SELECT 1` round trip to its PostgreSQL.
Together they are the floor of any registry call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from grpc_health.v1 import health_pb2, health_pb2_grpc

import cairn
from cairn.types import ListOptions, ModelArtifact, ModelVersion, RegisteredModel

from .harness import Stopwatch, median, percentile, postgres, report, serve

MODELS = 10_000
SAMPLES = 1000
CONCURRENT_VERSIONS = 50


async def p50(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    samples = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return median(samples), percentile(samples, 99)


async def select_one(database_url: str) -> tuple[float, float]:
    conn = await asyncpg.connect(database_url)
    try:
        return await p50(lambda: conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


async def populate(client: cairn.ModelRegistryAPIClient) -> None:
    async def one(n: int) -> None:
        await client.upsert_registered_model(
            RegisteredModel(f"model-{n:05}", owner="bench", custom_properties={"n": n, "team": "x"})
        )

    for start in range(0, MODELS, 64):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 64, MODELS))))


async def page_through(client: cairn.ModelRegistryAPIClient) -> tuple[float, int]:
    options, seen = ListOptions(limit=100), 0
    with Stopwatch() as clock:
        while True:
            seen += len(await client.get_registered_models(options))
            if options.next_page_token is None:
                break
    return clock.seconds, seen


async def concurrent_versions(client: cairn.ModelRegistryAPIClient) -> float:
    model_id = (await client.upsert_registered_model(RegisteredModel("concurrent"))).id or ""
    with Stopwatch() as clock:
        await asyncio.gather(
            *(
                client.upsert_model_version(ModelVersion(f"v{n}"), model_id)
                for n in range(CONCURRENT_VERSIONS)
            )
        )
    return CONCURRENT_VERSIONS / clock.seconds


async def main() -> None:
    with postgres() as database_url, serve(database_url, "registry") as server:
        async with cairn.ModelRegistryAPIClient.insecure_connection(
            "127.0.0.1", server.port, timeout=600
        ) as client:
            health = health_pb2_grpc.HealthStub(client._transport.channel)
            grpc_floor = await p50(lambda: health.Check(health_pb2.HealthCheckRequest()))
            db_floor = await select_one(database_url)
            await populate(client)
            model = await client.get_registered_model_by_params(name="model-00042")
            model_id = model.id if model and model.id else ""
            version = await client.upsert_model_version(
                ModelVersion("v1", external_id="ext-v1"), model_id
            )
            version_id = version.id or ""
            artifact = await client.upsert_model_artifact(
                ModelArtifact("weights", uri="s3://b/w"), version_id
            )
            artifact_id = artifact.id or ""
            lookups = {
                "get_registered_model_by_id": lambda: client.get_registered_model_by_id(model_id),
                "get_model_version_by_id": lambda: client.get_model_version_by_id(version_id),
                "get_model_artifact_by_id": lambda: client.get_model_artifact_by_id(artifact_id),
                "get_registered_model_by_params(name)": lambda: (
                    client.get_registered_model_by_params(name="model-00042")
                ),
                "get_model_version_by_params(external_id)": lambda: (
                    client.get_model_version_by_params(external_id="ext-v1")
                ),
                "get_model_artifact_by_params(name, version)": lambda: (
                    client.get_model_artifact_by_params(name="weights", model_version_id=version_id)
                ),
            }
            measured = {name: await p50(call) for name, call in lookups.items()}
            paging_seconds, paged = await page_through(client)
            versions_per_second = await concurrent_versions(client)
    print("cairn registry benchmark (server, client and PostgreSQL on this machine)")
    rows = [
        ("gRPC round trip, no database (health)", f"{grpc_floor[0]:.2f} ms", "baseline"),
        ("SELECT 1 round trip (asyncpg)", f"{db_floor[0]:.2f} ms", "baseline"),
    ]
    for name, (median_ms, p99_ms) in measured.items():
        rows.append((f"{name} p50", f"{median_ms:.2f} ms", f"p99 {p99_ms:.2f} ms; target <= 2 ms"))
    rows += [
        (f"page through {paged:,} models, 100 a page", f"{paging_seconds:.2f} s", "target <= 1 s"),
        (
            f"{CONCURRENT_VERSIONS} concurrent upsert_model_version",
            f"{versions_per_second:,.0f} /s",
            "numbers 1..50, gapless",
        ),
    ]
    report(rows)


if __name__ == "__main__":
    asyncio.run(main())
