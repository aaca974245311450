"""`cairn operations` reading an operation that failed, the real executable against the
tests' server."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import uuid
from pathlib import Path

import asyncpg

from cairn_server.operations.model import Kind, Lease, State
from cairn_server.operations.store import OperationStore
from tests.e2e.cli_helpers import environment, run_cairn

# No server hosts this step, so the tests' servers leave the operation alone.
STEPS = ["cli-test"]


async def test_get_reads_a_failed_operation_with_status_0_and_wait_exits_1(
    server_port: int, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """`get` exited 1 for a failed operation, so a script could not tell a failed read
    from the read of a failed operation; docs/cli.md gives status 1 to waits only."""
    store, server = OperationStore(pool), uuid.uuid4()
    operation = await store.create(
        Kind.GARBAGE_COLLECTION, {}, STEPS, server, datetime.timedelta(seconds=30)
    )
    lease = Lease(operation.operation_id, server, operation.attempts)
    await store.finish(lease, State.FAILED, ["the step broke"])
    env = environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}")

    async def cairn(*argv: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the server answers on this test's event loop.
        return await asyncio.to_thread(run_cairn, *argv, "--output", "json", env=env)

    read = await cairn("operations", "get", operation.name)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["state"] == "FAILED"
    waited = await cairn("operations", "wait", operation.name)
    assert waited.returncode == 1 and json.loads(waited.stdout)["errors"] == ["the step broke"]
