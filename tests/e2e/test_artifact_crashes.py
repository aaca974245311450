"""A server process killed with SIGKILL in the middle of uploads, on both backends:
after a restart the objects are as they were before the uploads began, and the
janitor leaves no byte of the cut uploads behind."""

import asyncio
import os
from pathlib import Path

import pgserver
import pytest
from minio import Minio
from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import NotFoundError, UnavailableError
from tests.conftest import eventually
from tests.e2e.conftest import ServerProcess, start_server

pytestmark = pytest.mark.e2e
BUCKET = "cairn-crashes"
MIB = 1024 * 1024


class Store:
    """What the backend holds: stored keys, and writes begun but not completed."""

    def __init__(self, backend: str, data_dir: Path, s3_endpoint: str, prefix: str) -> None:
        self.backend, self.data_dir, self.prefix = backend, data_dir, prefix
        self.env: dict[str, str] = {}
        if backend == "s3":
            self.s3 = Minio(
                s3_endpoint, access_key="test", secret_key="test", secure=False, region="us-east-1"
            )
            self.env = {
                "CAIRN_ARTIFACT_BACKEND": "s3",
                "CAIRN_S3_ENDPOINT": s3_endpoint,
                "CAIRN_S3_BUCKET": BUCKET,
                "CAIRN_S3_PREFIX": prefix,
                "CAIRN_S3_REGION": "us-east-1",
                "CAIRN_S3_ACCESS_KEY": "test",
                "CAIRN_S3_SECRET_KEY": "test",
                "CAIRN_S3_SECURE": "false",
            }

    def keys(self) -> list[str]:
        if self.backend == "s3":
            listed = self.s3.list_objects(BUCKET, prefix=f"{self.prefix}/", recursive=True)
            return sorted(o.object_name for o in listed)
        root = self.data_dir / "artifacts"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def unfinished(self) -> int:
        if self.backend == "s3":
            return len(self.s3._list_multipart_uploads(BUCKET, prefix=f"{self.prefix}/").uploads)
        return 0  # a cut write on disk is a file, counted by keys()


@pytest.fixture(params=["filesystem", "s3"])
def store(request, tmp_path: Path, s3_endpoint: str, unique: str) -> Store:
    return Store(request.param, tmp_path, s3_endpoint, f"crash-{unique}")


async def _cut_upload(
    client: cairn.ArtifactClient, path: str, overwrite: bool, sent, killed
) -> None:
    """Sends 12 MiB, then the rest once the server was killed (a client that does not
    know yet)."""

    async def requests():
        yield api.UploadRequest(
            header=api.UploadHeader(project=client.project, path=path, overwrite=overwrite)
        )
        for _ in range(12):  # more than one S3 part
            yield api.UploadRequest(chunk=os.urandom(MIB))
        sent.set()
        await killed.wait()
        yield api.UploadRequest(chunk=os.urandom(MIB))
        yield api.UploadRequest(finish=api.UploadFinish())

    await client._transport.client_stream(client._stub.Upload, requests())


def _janitor_passed(server: ServerProcess) -> bool:
    return any(line.get("event") == "janitor pass" for line in server.log_lines())


async def test_sigkill_during_a_new_upload_and_an_overwrite(store: Store) -> None:
    if store.backend == "s3" and not store.s3.bucket_exists(BUCKET):
        store.s3.make_bucket(BUCKET)
    server = start_server(store.data_dir, env=store.env)
    kept, old = os.urandom(2 * MIB), os.urandom(2 * MIB)
    host, port = server.address.split(":")
    try:
        async with cairn.ArtifactClient.insecure_connection(host, int(port)) as client:
            await client.upload("kept.bin", kept)
            await client.upload("model.bin", old)
            before = store.keys()
            sent, killed = [asyncio.Event(), asyncio.Event()], asyncio.Event()
            cut = [
                asyncio.ensure_future(_cut_upload(client, "new.bin", False, sent[0], killed)),
                asyncio.ensure_future(_cut_upload(client, "model.bin", True, sent[1], killed)),
            ]
            await asyncio.gather(*(event.wait() for event in sent))
            await eventually(
                lambda: len(store.keys()) + store.unfinished() >= len(before) + 2,
                what="both uploads writing to the backend",
            )
            server.process.kill()
            server.process.wait(timeout=10)
            killed.set()
            for upload in cut:  # the connection broke under them
                with pytest.raises(UnavailableError):
                    await upload
            assert len(store.keys()) + store.unfinished() > len(before)  # litter left
    finally:
        if server.process.poll() is None:
            server.process.kill()

    restarted = start_server(
        store.data_dir, env={**store.env, "CAIRN_ARTIFACT_JANITOR_MIN_AGE_SECONDS": "0"}
    )
    try:
        await eventually(lambda: _janitor_passed(restarted), what="the janitor's first pass")
        host, port = restarted.address.split(":")
        async with cairn.ArtifactClient.insecure_connection(host, int(port)) as client:
            assert await client.read("kept.bin") == kept
            assert await client.read("model.bin") == old
            with pytest.raises(NotFoundError):
                await client.stat("new.bin")
        assert store.keys() == before
        assert store.unfinished() == 0
    finally:
        assert restarted.terminate(timeout=30) == 0
        # The embedded PostgreSQL outlives a killed server, and pgserver then counts the
        # dead process as a user still: stop it here.
        postgres = pgserver.get_server(store.data_dir / "postgres", cleanup_mode=None)
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=postgres.pgdata, user=postgres.system_user)
