"""SIGTERM while downloads wait on an object store that stopped answering: the process
exits within its grace period, as Kubernetes expects, not once the store's timeout
lets the threads waiting on it go."""

import asyncio
from pathlib import Path

import pytest
from minio import Minio

import cairn
from tests.conftest import eventually
from tests.e2e.conftest import start_server
from tests.proxy import StallingProxy

pytestmark = pytest.mark.e2e
BUCKET = "cairn-silent-exit"
GRACE_SECONDS = 1
# Far past the grace period: an exit that waits for the store's timeout fails the test.
STORE_TIMEOUT_SECONDS = 300
# The grace period, the second background work gets past it, and closing the pool.
EXIT_SECONDS = GRACE_SECONDS + 7


async def test_sigterm_exits_within_the_grace_period_while_calls_wait_on_a_silent_store(
    tmp_path: Path, s3_endpoint: str, fresh_url: str, unique: str
) -> None:
    s3 = Minio(s3_endpoint, access_key="test", secret_key="test", secure=False)
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    host, port = s3_endpoint.split(":")
    proxy = StallingProxy(host, int(port))
    await proxy.start()
    env = {
        "CAIRN_DATABASE_URL": fresh_url,  # no cluster of its own to make
        "CAIRN_ARTIFACT_BACKEND": "s3",
        "CAIRN_S3_ENDPOINT": f"127.0.0.1:{proxy.port}",
        "CAIRN_S3_BUCKET": BUCKET,
        "CAIRN_S3_PREFIX": unique,
        "CAIRN_S3_REGION": "us-east-1",
        "CAIRN_S3_ACCESS_KEY": "test",
        "CAIRN_S3_SECRET_KEY": "test",
        "CAIRN_S3_SECURE": "false",
        "CAIRN_S3_TIMEOUT_SECONDS": str(STORE_TIMEOUT_SECONDS),
        "CAIRN_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    server = await asyncio.to_thread(start_server, tmp_path, "artifacts", env=env)
    address, server_port = server.address.split(":")
    reads: list[asyncio.Future[bytes]] = []
    try:
        async with cairn.ArtifactClient.insecure_connection(address, int(server_port)) as client:
            await client.upload("model.bin", b"stored before the store went silent")
            proxy.stall()
            reads += [asyncio.ensure_future(client.read("model.bin", timeout=60)) for _ in range(3)]
            await eventually(lambda: proxy.unanswered >= 3, what="the reads waiting on the store")
            assert await asyncio.to_thread(server.terminate, EXIT_SECONDS) == 0
    finally:
        server.process.kill()
        await asyncio.gather(*reads, return_exceptions=True)
        await proxy.close()
    assert server.log_lines()[-1]["event"] == "stopped"
