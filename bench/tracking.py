"""`make bench-tracking`: ingestion, log_metric latency, search and metric history.

Server, client and PostgreSQL share this machine. Each figure is reported beside its
floor or ceiling, measured in the same run: ingestion beside binary COPY of the same
rows (asyncpg's copy_records_to_table, one row per point, into a bare table) over as
many connections as there are writers; log_metric beside a bare gRPC unary call to a
server that answers at once (bench/grpc_echo.py).

The ceiling ingestion is held to (target: 80%) is COPY into a logged table, each COPY a
commit that waits for its WAL flush. A LogBatch is acknowledged only once it is
durable, so it must write WAL and wait for the flush at its commit; no durable write
can reach COPY into a temporary table, which does neither. That figure is printed too,
as the speed of PostgreSQL taking rows at all. So is the same ingestion sent to a
server that answers at once (bench/grpc_echo.py): the client's and gRPC's share of each
batch's time, which COPY, run from a client of PostgreSQL, does not pay.

Figures and their bounds are measured in alternating rounds (ingestion in three,
latency in twenty of 100 calls) and medians are reported: other work on the machine
changes both within seconds.

`python -m bench.tracking ingest latency` runs only the sections named (ingest,
latency, search, history); with none, all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import grpc

import cairn
from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn.types import Metric, PagedList, Param, Run, RunTag

from .harness import (
    BIN,
    RssSampler,
    Server,
    Stopwatch,
    median,
    percentile,
    postgres,
    report,
    serve,
)

BATCH = 1_000  # points per LogBatch, as MLflow's log_batch takes them
BATCHES_ONE_WRITER = 400
WRITERS = 8
BATCHES_PER_WRITER = 50
LATENCY_CALLS = 2000
HISTORY_BATCH = 10_000
INGEST_ROUNDS = 3
LATENCY_ROUNDS = 20
SEARCH_RUNS = 10_000
HISTORY_POINTS = 1_000_000


def _points(count: int, offset: int = 0) -> list[Metric]:
    now = time.time_ns() // 1_000_000
    return [Metric(f"m{i % 10}", random.random(), now, offset + i) for i in range(count)]


async def copy_ceiling(
    database_url: str, connections: int, batches: int, durable: bool = False
) -> float:
    """Points per second that raw binary COPY of BATCH rows at a time moves into a bare
    table of the same rows, over `connections` connections at once: what PostgreSQL
    accepts at all, before any service, index or transaction logic. The table is
    temporary (no WAL, nothing to flush at commit) unless durable: then one logged
    table, each COPY a commit that waits for its WAL flush, as every LogBatch does."""
    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    run = uuid.uuid4()
    rows = [(run, m.key, m.value, m.step, m.timestamp) for m in _points(BATCH)]
    table = "durable_points" if durable else "points"

    async def copy(conn: asyncpg.Connection) -> None:
        for _ in range(batches):
            await conn.copy_records_to_table(table, records=rows)

    try:
        for conn in conns if not durable else conns[:1]:
            await conn.execute(
                f"""CREATE {"" if durable else "TEMP"} TABLE {table} (run_id uuid, key text,
                        value float8, step int8, timestamp_ms int8)"""
            )
        with Stopwatch() as clock:
            await asyncio.gather(*(copy(conn) for conn in conns))
        if durable:
            await conns[0].execute(f"DROP TABLE {table}")
    finally:
        for conn in conns:
            await conn.close()
    return connections * batches * BATCH / clock.seconds


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
    client: cairn.TrackingClient, run_id: str, calls: int = LATENCY_CALLS, first_step: int = 0
) -> list[float]:
    samples = []
    for step in range(first_step, first_step + calls):
        start = time.perf_counter()
        await client.log_metric(run_id, "latency", 1.0, step=step)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


@contextmanager
def grpc_echo() -> Iterator[int]:
    """The port of a bare gRPC server in its own process (bench/grpc_echo.py)."""
    echo = subprocess.Popen(
        [str(BIN / "python"), "-m", "bench.grpc_echo"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert echo.stdout is not None
        yield int(echo.stdout.readline())
    finally:
        echo.terminate()
        echo.wait(timeout=30)


async def bare_unary_latency(port: int, calls: int = LATENCY_CALLS) -> list[float]:
    """Round trips of the generated stub's LogMetric, the same request log_metric
    sends, to a server that answers at once: the floor of any unary call here."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.TrackingServiceStub(channel)
        samples = []
        for step in range(calls):
            request = api.LogMetricRequest(
                project="default",
                run_id=uuid.uuid4().hex,
                metric=pb.Metric(key="latency", value=1.0, timestamp_ms=1, step=step),
            )
            start = time.perf_counter()
            await stub.LogMetric(request, timeout=60)
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
    for n in range(HISTORY_POINTS // HISTORY_BATCH):
        first = n * HISTORY_BATCH
        await client.log_batch(
            run_id,
            metrics=[Metric("h", random.random(), 1, first + i) for i in range(HISTORY_BATCH)],
        )
    async with RssSampler(server) as rss:
        with Stopwatch() as clock:
            points = await client.get_metric_history(run_id, "h")
    return clock.seconds, rss.growth_mib, len(points)


async def history_of_at_most(client: cairn.TrackingClient, run_id: str, points: int) -> float:
    """Seconds to read the history asking for at most that many points."""
    with Stopwatch() as clock:
        await client.get_metric_history(run_id, "h", max_points=points)
    return clock.seconds


Row = tuple[str, str, str]


async def ingest_section(client: cairn.TrackingClient, database_url: str) -> list[Row]:
    experiment_id = await client.create_experiment("bench-ingest")
    runs = [(await client.create_run(experiment_id)).info.run_id for _ in range(WRITERS + 1)]
    await ingest(client, runs[:1], 20)  # warm up connections and caches
    with grpc_echo() as port:
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as echo:
            await ingest(echo, runs[:1], 20)
            return await _ingest_rows(client, echo, database_url, runs[1:])


async def _ingest_rows(
    client: cairn.TrackingClient, echo: cairn.TrackingClient, database_url: str, runs: list[str]
) -> list[Row]:
    rows = []
    for writers, batches in ((1, BATCHES_ONE_WRITER), (WRITERS, BATCHES_PER_WRITER)):
        # Each ceiling right before the figure it bounds, so both see the same machine,
        # in rounds whose medians are reported: the machine's load changes within seconds.
        ceilings, durable, logged, sent = [], [], [], []
        for _ in range(INGEST_ROUNDS):
            ceilings.append(await copy_ceiling(database_url, writers, batches))
            durable.append(await copy_ceiling(database_url, writers, batches, durable=True))
            logged.append(await ingest(client, runs[:writers], batches))
            sent.append(await ingest(echo, runs[:writers], batches))
        ratios = [n / c for n, c in zip(logged, ceilings, strict=True)]
        durable_ratios = [n / c for n, c in zip(logged, durable, strict=True)]
        # A batch's time on the wire, as a share of the time the ceiling's COPY takes.
        wire_shares = [c / s for c, s in zip(durable, sent, strict=True)]
        rows += [
            (
                f"COPY ceiling, {BATCH:,} rows a COPY, {writers} conn(s)",
                f"{median(durable):,.0f} pts/s",
                "baseline: a logged table, each COPY a commit that waits for its WAL flush",
            ),
            (
                "  the same into a temporary table",
                f"{median(ceilings):,.0f} pts/s",
                "no WAL, no flush: not durable, so no bound a LogBatch can reach",
            ),
            (
                f"LogBatch {BATCH:,}, {writers} writer(s)",
                f"{median(logged):,.0f} pts/s",
                f"{median(durable_ratios):.0%} of the COPY ceiling (target >= 80%), "
                f"{median(ratios):.0%} of the temporary table (medians of {INGEST_ROUNDS} rounds)",
            ),
            (
                "  the same to a bare gRPC server",
                f"{median(sent):,.0f} pts/s",
                f"the client and gRPC alone (bench/grpc_echo.py): a batch's round trip "
                f"takes {median(wire_shares):.0%} of the time the COPY ceiling takes",
            ),
        ]
    return rows


async def latency_section(client: cairn.TrackingClient) -> list[Row]:
    experiment_id = await client.create_experiment("bench-latency")
    run_id = (await client.create_run(experiment_id)).info.run_id
    await log_metric_latency(client, run_id, 200)  # warm up
    bare, latency = [], []
    with grpc_echo() as port:
        await bare_unary_latency(port, 200)
        # Alternating short rounds, so that both see the same machine.
        calls = LATENCY_CALLS // LATENCY_ROUNDS
        for n in range(LATENCY_ROUNDS):
            bare += await bare_unary_latency(port, calls)
            latency += await log_metric_latency(client, run_id, calls, first_step=n * calls)
    return [
        (
            "bare gRPC unary round trip p50",
            f"{median(bare):.3f} ms",
            f"baseline (bench/grpc_echo.py); p99 {percentile(bare, 99):.3f} ms",
        ),
        (
            "log_metric round trip p50",
            f"{median(latency):.3f} ms",
            f"{median(latency) / median(bare):.2f}x the bare round trip (target <= 2x); "
            f"p99 {percentile(latency, 99):.3f} ms",
        ),
    ]


async def search_section(client: cairn.TrackingClient, database_url: str) -> list[Row]:
    search_experiment = await client.create_experiment("bench-search")
    await populate_search(client, search_experiment)
    cold_pages, _, _ = await search(client, search_experiment)
    # Autovacuum analyzes freshly loaded tables within about a minute; ANALYZE
    # gets to that steady state at once.
    await analyze(database_url)
    first_pages, full_scan, matched = await search(client, search_experiment)
    return [
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
    ]


async def history_section(client: cairn.TrackingClient, server: Server) -> list[Row]:
    experiment_id = await client.create_experiment("bench-history")
    run_id = (await client.create_run(experiment_id)).info.run_id
    seconds, rss_growth, points = await history(client, server, run_id)
    whole = await history_of_at_most(client, run_id, HISTORY_POINTS)
    sampled = await history_of_at_most(client, run_id, 1_000)
    return [
        (f"get_metric_history {points:,} points", f"{seconds:.2f} s", "target <= 3 s"),
        ("  server RSS growth meanwhile", f"{rss_growth:.1f} MiB", "target < 200 MiB"),
        (f"  the same, max_points={HISTORY_POINTS:,}", f"{whole:.2f} s", "as without it"),
        ("  the same, max_points=1,000", f"{sampled:.2f} s", "downsampled"),
    ]


SECTIONS = ("ingest", "latency", "search", "history")


async def main(sections: list[str]) -> None:
    rows: list[Row] = []
    with postgres() as database_url, serve(database_url, "tracking") as server:
        async with cairn.TrackingClient.insecure_connection(
            "127.0.0.1", server.port, timeout=600
        ) as client:
            if "ingest" in sections:
                rows += await ingest_section(client, database_url)
            if "latency" in sections:
                rows += await latency_section(client)
            if "search" in sections:
                rows += await search_section(client, database_url)
            if "history" in sections:
                rows += await history_section(client, server)
    print("cairn tracking benchmark (server, client and PostgreSQL on this machine)")
    report(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)}")
    chosen = parser.parse_args().sections
    if unknown := set(chosen) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    asyncio.run(main(chosen or list(SECTIONS)))
