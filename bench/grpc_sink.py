"""A bare gRPC server for the artifacts benchmark's ceiling: Upload drops what it gets,
Download sends the asked length from memory. No hashing, no disk, no database: what
grpc.aio alone moves between two Python processes here.

Run as `python -m bench.grpc_sink [OPTIONS_JSON]`; it prints its port, then serves until
killed. OPTIONS_JSON, a list of [name, value] pairs, adds server options (to try tunings).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator

import grpc
import uvloop

from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc

CHUNK = 1024 * 1024


class Sink(rpc.ArtifactServiceServicer):
    async def Upload(
        self, request_iterator: AsyncIterator[api.UploadRequest], context: grpc.aio.ServicerContext
    ) -> api.UploadResponse:
        async for _ in request_iterator:
            pass
        return api.UploadResponse()

    async def Download(
        self, request: api.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api.DownloadResponse]:
        chunk = os.urandom(CHUNK)
        for _ in range(request.length // CHUNK):
            yield api.DownloadResponse(chunk=chunk)


async def serve() -> None:
    extra = [tuple(option) for option in json.loads(sys.argv[1])] if len(sys.argv) > 1 else []
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * CHUNK), *extra])
    rpc.add_ArtifactServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve())
