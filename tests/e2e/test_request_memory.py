"""Many calls at once, each of a message near the largest: the server reads each once
it has room for it, so what it holds stays within CAIRN_REQUEST_MEMORY_BYTES,
whatever one client sends at once (docs/deploy.md, "Memory")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

import cairn
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
from tests.e2e.conftest import start_server

ROOM = 64 * 1024 * 1024
CALLS = 60
MIB = 1024 * 1024


def _peak_memory(pid: int) -> int:
    """The most resident memory the process has held, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _large_batch(run_id: str) -> tracking_service_pb2.LogBatchRequest:
    """A batch of 14 MB, each value within its own bound, the whole past its run's."""
    return tracking_service_pb2.LogBatchRequest(
        project="default",
        run_id=run_id,
        params=[tracking_pb2.Param(key=f"p{i}", value="x" * 6000) for i in range(1000)],
        tags=[tracking_pb2.Tag(key=f"t{i}", value="y" * 8000) for i in range(1000)],
    )


async def _code(call: grpc.aio.UnaryUnaryCall) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_flood_of_large_calls_holds_what_the_room_allows(
    tmp_path: Path, fresh_url: str
) -> None:
    """60 calls of 14 MB at once made the server hold 670 MB more (150 took 3.5
    GB): gRPC read each whole before any handler ran."""
    env = {"CAIRN_DATABASE_URL": fresh_url, "CAIRN_REQUEST_MEMORY_BYTES": str(ROOM)}
    server = start_server(tmp_path, env=env)
    try:
        async with cairn.TrackingClient.insecure_connection(*server.address.split(":")) as c:
            run_id = (await c.create_run(await c.create_experiment("flood"))).info.run_id
        request = _large_batch(run_id)
        before = _peak_memory(server.process.pid)
        options = [("grpc.max_send_message_length", 64 * MIB)]
        async with grpc.aio.insecure_channel(server.address, options=options) as channel:
            stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
            calls = [_code(stub.LogBatch(request, timeout=300)) for _ in range(CALLS)]
            codes = await asyncio.gather(*calls)
        grown = _peak_memory(server.process.pid) - before
        # Each read and refused: more than the run may hold (docs/tracking.md, "Limits").
        assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
        # The room, what each waiting call's window lets its client send ahead
        # (request_room.LOOKAHEAD_BYTES), and the slack of Python's allocator.
        assert grown < ROOM + 200 * MIB, f"grew {grown // MIB} MiB"
    finally:
        assert server.terminate(timeout=30) == 0
