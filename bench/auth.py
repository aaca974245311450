"""`make bench-auth`: what requiring API keys costs a call.

The same log_metric round trip against two servers on one database: one with
CAIRN_AUTH=none (the baseline) and one with CAIRN_AUTH=api_key, where a call checks
its key against a check cached until auth data changes (services/auth/cache.py), or
looks it up (one indexed query that also yields the caller's role in the project).
The first admin key comes from `cairn keys create --admin`, as a deployment's would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import cairn
from bench.harness import BIN, median, percentile, postgres, report, serve
from bench.tracking import log_metric_latency

CALLS = 3000


def bootstrap_key(database_url: str) -> str:
    created = subprocess.run(
        [str(BIN / "cairn"), "keys", "create", "--admin", "--user", "bench", "--expires", "1y"],
        env={**os.environ, "CAIRN_DATABASE_URL": database_url, "CAIRN_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip()


async def latency(port: int, key: str | None) -> list[float]:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, key) as client:
        experiment_id = await client.create_experiment(f"bench-auth-{uuid.uuid4().hex}")
        run_id = (await client.create_run(experiment_id)).info.run_id
        await log_metric_latency(client, run_id, 200)  # warm up
        return await log_metric_latency(client, run_id, CALLS)


async def measure(database_url: str) -> dict[str, list[float]]:
    key = bootstrap_key(database_url)
    results: dict[str, list[float]] = {}
    # Alternate the two servers so drift in the machine's load touches both alike.
    for _ in range(2):
        with serve(database_url, "tracking") as open_server:
            results.setdefault("none", []).extend(await latency(open_server.port, None))
        with serve(database_url, "tracking", auth="api_key") as guarded:
            results.setdefault("api_key", []).extend(await latency(guarded.port, key))
    return results


def main() -> None:
    with postgres() as database_url:
        results = asyncio.run(measure(database_url))
    base, keyed = results["none"], results["api_key"]
    print("cairn auth benchmark (server, client and PostgreSQL on this machine)")
    report(
        [
            (
                "log_metric p50, CAIRN_AUTH=none",
                f"{median(base):.2f} ms",
                f"p99 {percentile(base, 99):.2f} ms; baseline",
            ),
            (
                "log_metric p50, CAIRN_AUTH=api_key",
                f"{median(keyed):.2f} ms",
                f"p99 {percentile(keyed, 99):.2f} ms; "
                f"+{median(keyed) - median(base):.2f} ms per call",
            ),
        ]
    )


if __name__ == "__main__":
    main()
