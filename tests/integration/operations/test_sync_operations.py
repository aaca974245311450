"""Garbage collection through the sync facade, from a worker thread as a script calls."""

from __future__ import annotations

import asyncio
import datetime

from cairn import sync
from cairn.types import Operation, OperationState


async def test_start_list_and_wait_without_await(server_port: int) -> None:
    def scenario() -> tuple[Operation, list[Operation], list[str]]:
        seen: list[str] = []
        with sync.Client(f"http://127.0.0.1:{server_port}") as client:
            # A cut-off far back: no experiment or run other tests deleted goes. It still
            # drains locations already queued and prunes expired request ids.
            started = client.operations.start_garbage_collection(datetime.timedelta(days=3650))
            done = client.operations.wait_operation(
                started.name, timeout=30, on_progress=lambda op: seen.append(op.state.value)
            )
            listed = list(client.operations.list_operations(page_size=2).limit(5))
        return done, listed, seen

    done, listed, seen = await asyncio.to_thread(scenario)
    assert done.state is OperationState.SUCCEEDED
    assert seen[-1] == "SUCCEEDED"
    assert done.name in [o.name for o in listed]
