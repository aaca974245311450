"""A bare gRPC server for the tracking benchmark's round-trip floor: LogMetric and
LogBatch answer at once, with no interceptor, validation or database. What one unary
call costs between two Python processes here (on uvloop, as `cairn serve` runs).

Run as `python -m bench.grpc_echo`; it prints its port, then serves until killed.
"""

from __future__ import annotations

import sys

import grpc
import uvloop

from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn_server.common.server import generic_handlers_only


class Echo(rpc.TrackingServiceServicer):
    async def LogMetric(
        self, request: api.LogMetricRequest, context: grpc.aio.ServicerContext
    ) -> api.LogMetricResponse:
        return api.LogMetricResponse()

    async def LogBatch(
        self, request: api.LogBatchRequest, context: grpc.aio.ServicerContext
    ) -> api.LogBatchResponse:
        return api.LogBatchResponse()


async def serve() -> None:
    server = grpc.aio.server()
    # Registered as `cairn serve` registers its services (one pending request for all
    # methods, not one per method): the floor, not a server doing more work per call.
    rpc.add_TrackingServiceServicer_to_server(Echo(), generic_handlers_only(server))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve())
