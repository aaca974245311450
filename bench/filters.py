"""`make bench-filters`: what one search filter costs the database, in time and memory.

10,000 runs with five metrics, params and tags each (written in SQL, statistics
gathered) are searched with filters of growing size, one call at a time, then twelve
of the largest at once. For each: the call's time, and the peak private memory
(RssAnon) of the PostgreSQL backends serving it, sampled every 5 ms. The baseline, in
the same run: a one-term filter.

A role-level statement_timeout of 20 s bounds a run against a version without the
pool's own guards (the services' guard, when present, replaces it), and twelve at once
are sent only if no single call took over 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import asyncpg

import cairn
from cairn.exceptions import CairnError

from .harness import postgres, report, serve

RUNS = 10_000
SAFETY_TIMEOUT = "20s"
# Searches by run id timed one after another, for their median.
RUN_ID_CALLS = 50
# Twelve calls at once are sent only when each single call answered within this: twelve
# runaway backends of a version without guards would exhaust the machine.
SAFE_SINGLE_SECONDS = 5.0
_SEED = [
    ("latest_metrics (run_id, key, value, step, timestamp_ms)", "m", "random(), 0, 0"),
    ("params (run_id, key, value)", "p", "'v' || (random() * 4)::int"),
    ("tags (run_id, key, value)", "t", "'x' || (random() * 7)::int"),
]


def _terms(count: int) -> str:
    return " AND ".join(["metrics.m1 > 0"] * count)


def _widest() -> str:
    """Twelve keys OR-ed under 31 levels of parentheses, and 50 more terms."""
    entities = ("metrics", "params", "tags")
    keys = [f"{entity}.{entity[0]}{i}" for i in range(4) for entity in entities]
    either = " OR ".join(f"{key} IS NOT NULL" for key in keys)
    return "(" * 31 + either + ")" * 31 + " AND " + " AND ".join(["metrics.m0 >= 0"] * 50)


async def seed(database_url: str, experiment_id: str, runs: int = RUNS) -> None:
    """runs runs in the experiment (of project "default"), each with five metrics
    m0..m4, params p0..p4 and tags t0..t4; written in SQL, as going through the API
    would take most of a minute. Statistics are gathered, as a live database has them."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO tracking.runs
                   (run_id, project, experiment_id, run_name, status, start_time, artifact_uri)
               SELECT gen_random_uuid(), 'default', $1, 'r' || i, 3, i, ''
               FROM generate_series(1, $2) AS i""",
            int(experiment_id),
            runs,
        )
        for table, prefix, value in _SEED:
            await conn.execute(
                f"""INSERT INTO tracking.{table}
                    SELECT r.run_id, '{prefix}' || k, {value}
                    FROM tracking.runs r, generate_series(0, 4) AS k
                    WHERE r.experiment_id = $1""",
                int(experiment_id),
            )
        # Statistics first: run_bytes plans its look-ups once for all the runs, and on
        # statistics of a table few runs filled (a test's one run of 90,000 tags) it
        # scanned the whole table for every run.
        await conn.execute(
            "ANALYZE tracking.runs, tracking.latest_metrics, tracking.params, tracking.tags"
        )
        # Every run's total, as writes through the service keep it.
        await conn.execute(
            """UPDATE tracking.run_sizes s SET bytes = tracking.run_bytes(s.run_id)
               FROM tracking.runs r WHERE r.run_id = s.run_id AND r.experiment_id = $1""",
            int(experiment_id),
        )
    finally:
        await conn.close()


async def cap_statements(database_url: str) -> None:
    """The role's statement timeout, which every connection opened from now on has
    unless it sets its own."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"ALTER ROLE CURRENT_USER SET statement_timeout = '{SAFETY_TIMEOUT}'")
    finally:
        await conn.close()


class BackendMemory:
    """The peak RssAnon of the database's other client backends while active; the list
    of backends is read again at every sample, so connections opened meanwhile count."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self.peak_kib = 0

    async def __aenter__(self) -> BackendMemory:
        self._conn = await asyncpg.connect(self._url)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._conn.close()

    async def _sample(self) -> None:
        while True:
            rows = await self._conn.fetch(
                """SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'
                   AND datname = current_database() AND pid <> pg_backend_pid()"""
            )
            for row in rows:
                self.peak_kib = max(self.peak_kib, _rss_anon_kib(row["pid"]))
            await asyncio.sleep(0.005)


def _rss_anon_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


async def measure(
    database_url: str, client: cairn.TrackingClient, experiment_id: str, text: str, calls: int
) -> tuple[float, int, str]:
    """Slowest call's seconds, peak backend memory (KiB) and the outcome of calls at once."""

    async def one() -> tuple[float, str]:
        started = time.perf_counter()
        try:
            page = await client.search_runs([experiment_id], text, max_results=100)
            outcome = f"{len(page)} runs"
        except CairnError as error:
            outcome = f"{error.code.name} {error.reason}"
        return time.perf_counter() - started, outcome

    async with BackendMemory(database_url) as memory:
        results = await asyncio.gather(*(one() for _ in range(calls)))
    return max(s for s, _ in results), memory.peak_kib, results[0][1]


async def main() -> None:
    print(f"search filters over {RUNS:,} runs (time of the slowest call, peak backend RssAnon)")
    with postgres() as database_url:
        await cap_statements(database_url)
        with serve(database_url, "tracking") as server:
            await _run_cases(database_url, server.port)


async def _run_cases(database_url: str, port: int) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client:
        experiment_id = await client.create_experiment("bench-filters")
        await seed(database_url, experiment_id)
        rows, slowest_single = [], 0.0
        for name, text, calls in _CASES:
            if calls > 1 and slowest_single > SAFE_SINGLE_SECONDS:
                rows.append((name, "skipped", "one call alone was too costly to send 12"))
                continue
            await measure(database_url, client, experiment_id, _terms(1), 1)  # warm
            seconds, peak_kib, outcome = await measure(
                database_url, client, experiment_id, text, calls
            )
            slowest_single = max(slowest_single, seconds if calls == 1 else 0.0)
            rows.append((name, f"{seconds:.3f} s", f"{peak_kib / 1024:8.1f} MiB  {outcome}"))
        rows.extend(await _by_run_ids(client, experiment_id))
    report(rows)


async def _by_run_ids(
    client: cairn.TrackingClient, experiment_id: str
) -> list[tuple[str, str, str]]:
    """MLflow's way to fetch a table's runs, `attributes.run_id IN (...)` of 20 ids,
    beside the one-term filter: the median of RUN_ID_CALLS calls one after another."""
    page = await client.search_runs([experiment_id], "", max_results=20)
    ids = ", ".join(f"'{run.info.run_id}'" for run in page)
    cases = (
        ("1 term, median", _terms(1)),
        ("run_id IN 20 ids, median", f"attributes.run_id IN ({ids})"),
    )
    return [
        (name, f"{await _median_ms(client, experiment_id, text):.2f} ms", "")
        for name, text in cases
    ]


async def _median_ms(client: cairn.TrackingClient, experiment_id: str, text: str) -> float:
    times = []
    for _ in range(RUN_ID_CALLS):
        started = time.perf_counter()
        await client.search_runs([experiment_id], text, max_results=100)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


_CASES = [
    ("1 term (baseline)", _terms(1), 1),
    ("50 terms, one key", _terms(50), 1),
    ("100 terms, one key", _terms(100), 1),
    ("200 terms, one key", _terms(200), 1),
    ("12 keys, nested, 50 terms", _widest(), 1),
    ("200 terms, 12 calls at once", _terms(200), 12),
]


if __name__ == "__main__":
    asyncio.run(main())
