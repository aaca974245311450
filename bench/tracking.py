"""`make bench-tracking`: ingestion, log_metric latency, search and metric history.

Server, client and PostgreSQL share this machine. Ingestion is reported beside its
ceiling, measured in the same run: asyncpg's copy_records_to_table of the same rows
straight into the same table.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import asyncpg

import cairn
from cairn.types import Metric, PagedList, Param, Run, RunTag

from .harness import RssSampler, Server, Stopwatch, median, percentile, postgres, report, serve

BATCH = 10_000
BATCHES_ONE_WRITER = 40
WRITERS = 8
BATCHES_PER_WRITER = 10
SEARCH_RUNS = 10_000
HISTORY_POINTS = 1_000_000


def _points(count: int, offset: int = 0) -> list[Metric]:
    now = time.time_ns() // 1_000_000
    return [Metric(f"m{i % 10}", random.random(), now, offset + i) for i in range(count)]


async def copy_ceiling(database_url: str, batches: int) -> float:
    """Points per second that raw COPY moves into a bare table of the same rows: what
    PostgreSQL accepts at all, before any service, index or transaction logic."""
    conn = await asyncpg.connect(database_url)
    run = uuid.uuid4()
    rows = [(run, m.key, m.value, m.step, m.timestamp) for m in _points(BATCH)]
    try:
        await conn.execute(
            """CREATE TEMP TABLE points (run_id uuid, key text, value float8, step int8,
                   timestamp_ms int8)"""
        )
        with Stopwatch() as clock:
            for _ in range(batches):
                await conn.copy_records_to_table("points", records=rows)
    finally:
        await conn.close()
    return batches * BATCH / clock.seconds


async def ingest(client: cairn.TrackingClient, run_ids: list[str], batches: int) -> float:
    """Points per second through LogBatch, one writer per run, all at once."""
    payloads = [_points(BATCH, n * BATCH) for n in range(batches)]

    async def writer(run_id: str) -> None:
        for payload in payloads:
            await client.log_batch(run_id, metrics=payload)

    with Stopwatch() as clock:
        await asyncio.gather(*(writer(r) for r in run_ids))
    return len(run_ids) * batches * BATCH / clock.seconds


async def log_metric_latency(
    client: cairn.TrackingClient, run_id: str, calls: int = 2000
) -> list[float]:
    samples = []
    for step in range(calls):
        start = time.perf_counter()
        await client.log_metric(run_id, "latency", 1.0, step=step)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def populate_search(client: cairn.TrackingClient, experiment_id: str) -> None:
    async def one(n: int) -> None:
        run = (await client.create_run(experiment_id)).info.run_id
        await client.log_batch(
            run,
            metrics=[Metric(f"m{i}", random.random(), 1, 0) for i in range(5)],
            params=[Param(f"p{i}", f"v{random.randrange(4)}") for i in range(5)],
            tags=[RunTag(f"t{i}", f"x{n % 7}") for i in range(5)],
        )

    for start in range(0, SEARCH_RUNS, 64):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 64, SEARCH_RUNS))))


SEARCH_FILTER = "metrics.m0 > 0.2 and params.p1 != 'v0'"
SEARCH_ORDER = ["metrics.m2 DESC"]


async def search_page(
    client: cairn.TrackingClient, experiment_id: str, token: str | None = None
) -> PagedList[Run]:
    return await client.search_runs(
        [experiment_id], SEARCH_FILTER, order_by=SEARCH_ORDER, max_results=100, page_token=token
    )


async def search(
    client: cairn.TrackingClient, experiment_id: str
) -> tuple[list[float], float, int]:
    first_pages = []
    for _ in range(30):
        start = time.perf_counter()
        await search_page(client, experiment_id)
        first_pages.append((time.perf_counter() - start) * 1000)
    seen, token = 0, None
    with Stopwatch() as clock:
        while True:
            page = await search_page(client, experiment_id, token)
            seen += len(page)
            token = page.token
            if not token:
                break
    return first_pages, clock.seconds, seen


async def analyze(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def history(
    client: cairn.TrackingClient, server: Server, run_id: str
) -> tuple[float, float, int]:
    for n in range(HISTORY_POINTS // BATCH):
        await client.log_batch(
            run_id, metrics=[Metric("h", random.random(), 1, n * BATCH + i) for i in range(BATCH)]
        )
    async with RssSampler(server) as rss:
        with Stopwatch() as clock:
            points = await client.get_metric_history(run_id, "h")
    return clock.seconds, rss.growth_mib, len(points)


async def main() -> None:
    with postgres() as database_url, serve(database_url, "tracking") as server:
        async with cairn.TrackingClient.insecure_connection(
            "127.0.0.1", server.port, timeout=600
        ) as client:
            experiment_id = await client.create_experiment("bench")
            runs = [
                (await client.create_run(experiment_id)).info.run_id for _ in range(WRITERS + 3)
            ]
            await ingest(client, runs[:1], 2)  # warm up connections and caches
            ceiling = await copy_ceiling(database_url, BATCHES_ONE_WRITER)
            one = await ingest(client, runs[:1], BATCHES_ONE_WRITER)
            many = await ingest(client, runs[1 : 1 + WRITERS], BATCHES_PER_WRITER)
            latency = await log_metric_latency(client, runs[-2])
            search_experiment = await client.create_experiment("bench-search")
            await populate_search(client, search_experiment)
            cold_pages, _, _ = await search(client, search_experiment)
            # Autovacuum analyzes freshly loaded tables within about a minute; ANALYZE
            # gets to that steady state at once.
            await analyze(database_url)
            first_pages, full_scan, matched = await search(client, search_experiment)
            history_seconds, rss_growth, history_points = await history(client, server, runs[-3])
    print("cairn tracking benchmark (server, client and PostgreSQL on this machine)")
    report(
        [
            ("COPY ceiling (asyncpg, same rows)", f"{ceiling:,.0f} pts/s", "baseline"),
            (
                "LogBatch 10k, 1 writer",
                f"{one:,.0f} pts/s",
                f"{ceiling / one:.1f}x below COPY; target >= 250,000",
            ),
            (
                f"LogBatch 10k, {WRITERS} writers",
                f"{many:,.0f} pts/s",
                f"{ceiling / many:.1f}x below COPY; target >= 250,000",
            ),
            (
                "log_metric round trip p50",
                f"{median(latency):.2f} ms",
                f"p99 {percentile(latency, 99):.2f} ms; target p50 <= 1.5 ms",
            ),
            (
                f"search_runs first page ({SEARCH_RUNS:,} runs) p50",
                f"{median(first_pages):.1f} ms",
                f"p99 {percentile(first_pages, 99):.1f} ms; target <= 50 ms",
            ),
            (
                "  the same before statistics exist",
                f"{median(cold_pages):.1f} ms",
                "right after loading, before autovacuum's ANALYZE",
            ),
            (
                "search_runs all pages",
                f"{full_scan:.2f} s",
                f"{matched:,} runs in pages of 100; target <= 2 s",
            ),
            (
                f"get_metric_history {history_points:,} points",
                f"{history_seconds:.2f} s",
                "target <= 3 s",
            ),
            ("  server RSS growth meanwhile", f"{rss_growth:.1f} MiB", "target < 200 MiB"),
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
