"""The janitor removes what crashed uploads and replaced objects leave behind, on both
backends, and never bytes an object or a live upload refers to."""

import asyncio
import hashlib
import io
import os
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest
from structlog.testing import capture_logs

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import NotFoundError
from cairn_server import catalog
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.s3 import S3Backend
from cairn_server.artifacts.store import ObjectStore
from cairn_server.artifacts.uploads import PendingUpload
from cairn_server.common import database
from cairn_server.common.errors import Aborted
from cairn_server.common.server import migrate
from tests.conftest import BUCKET, eventually, put_through, s3_client, with_overrides

MIB = 1024 * 1024
HELD = 6 * MIB  # what an upload sends before the sweep: on S3, a part and more


def _backend(store: cairn.ArtifactClient, config, s3_config) -> backends.Backend:
    return backends.from_config(s3_config if store.backend == "s3" else config)  # type: ignore[attr-defined]


async def _litter(
    store: cairn.ArtifactClient, objects: ObjectStore, backend: backends.Backend, config, s3_config
) -> PendingUpload:
    """What crashes leave: an upload recorded and never finished (a multipart upload on
    S3, a partial file on disk), bytes under a key nothing names, and on disk a
    temporary file of the old layout."""
    crashed = await objects.begin(store.project, "crashed.bin", overwrite=False)
    if store.backend == "s3":  # type: ignore[attr-defined]
        s3_client(s3_config)._create_multipart_upload(BUCKET, f"store/{crashed.storage_key}", {})
    else:
        await asyncio.to_thread(backend.write, crashed.storage_key, io.BytesIO(b"half"), "", 0)
        legacy = config.artifact_dir / store.project / "models"
        legacy.mkdir(parents=True)
        (legacy / f".upload-{uuid.uuid4().hex}").write_bytes(b"temporary")
    stray = backends.new_key(store.project, uuid.uuid4().hex)
    await asyncio.to_thread(backend.write, stray, io.BytesIO(b"stray"), "", 0)
    return crashed


async def test_the_janitor_removes_litter_once_it_is_old_enough(
    store: cairn.ArtifactClient, pool: asyncpg.Pool, config, s3_config, raw_objects
) -> None:
    kept = await store.upload("kept.bin", b"kept")
    replaced = await store.upload("replaced.bin", b"v1")
    await store.upload("replaced.bin", b"v2", overwrite=True)
    objects, backend = ObjectStore(pool), _backend(store, config, s3_config)
    crashed = await _litter(store, objects, backend, config, s3_config)
    litter = sorted(raw_objects())
    # kept, v2 (v1 went at the overwrite), the crashed upload, the stray bytes, and on
    # disk the old temporary file
    assert len(litter) == 4 + (store.backend == "filesystem")  # type: ignore[attr-defined]

    await Janitor(objects, backend, min_age=timedelta(hours=1)).sweep()
    # Too young: a live upload may still own any of it. (moto dates every multipart
    # upload in 2010, so on S3 this also shows a live upload's part is never aborted.)
    assert sorted(raw_objects()) == litter

    swept = await Janitor(objects, backend, min_age=timedelta(0)).sweep()
    assert swept.expired_uploads >= 1 and swept.unreferenced >= 1
    assert len(raw_objects()) == 2  # the bytes of kept.bin and of replaced.bin (v2)
    assert await store.read("kept.bin") == b"kept"
    assert await store.read("replaced.bin") == b"v2"
    assert (await store.stat("kept.bin")).uri == kept.uri != replaced.uri
    with pytest.raises(Aborted) as raised:  # the crashed upload cannot publish any more
        await objects.publish(crashed, 4, "0" * 64, "application/octet-stream")
    assert raised.value.reason == "UPLOAD_EXPIRED"


async def test_an_upload_the_janitor_expires_while_it_streams_is_upload_expired(
    store: cairn.ArtifactClient, pool: asyncpg.Pool, config, s3_config, raw_objects
) -> None:
    """An upload streaming past the janitor's threshold (a legal 1 s, or a day at the
    pace floor) lost its bytes under the writer: it failed INTERNAL on disk (its folder
    pruned) and UNAVAILABLE "call again" on S3 (its multipart upload aborted), where
    docs/artifacts.md promises ABORTED UPLOAD_EXPIRED."""
    body = os.urandom(11 * MIB)  # parts of 5 MiB on S3: the first sent before the sweep
    held, go_on = asyncio.Event(), asyncio.Event()

    async def requests() -> AsyncIterator[api.UploadRequest]:
        header = api.UploadHeader(project=store.project, path="long.bin", expected_size=len(body))
        yield api.UploadRequest(header=header)
        for start in range(0, HELD, MIB):
            yield api.UploadRequest(chunk=body[start : start + MIB])
        held.set()
        await go_on.wait()
        for start in range(HELD, len(body), MIB):
            yield api.UploadRequest(chunk=body[start : start + MIB])
        yield api.UploadRequest(finish=api.UploadFinish(sha256=hashlib.sha256(body).hexdigest()))

    uploading = asyncio.ensure_future(store._stub.Upload(requests()))
    await held.wait()
    await eventually(lambda: raw_objects() != [], what="the upload's bytes being written")
    objects, backend = ObjectStore(pool), _backend(store, config, s3_config)
    swept = await Janitor(objects, backend, min_age=timedelta(0)).sweep()
    assert swept.expired_uploads == 1
    go_on.set()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await uploading
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert "UPLOAD_EXPIRED" in str(raised.value.trailing_metadata())
    with pytest.raises(NotFoundError):
        await store.stat("long.bin")


async def test_a_confirmation_whose_upload_the_janitor_expires_is_told_it_is_gone(
    s3_store: cairn.ArtifactClient,
    pool: asyncpg.Pool,
    config,
    s3_config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its bytes gone from under its copy, it said OBJECT_NOT_FOUND, "nothing was
    uploaded yet", which docs/artifacts.md says leaves the URL usable: a PUT through it
    again was never confirmed (UPLOAD_NOT_FOUND), as no confirmation could be."""
    store, body = s3_store, os.urandom(50_000)
    put = await store.presigned_url("k.bin", "PUT", content_type="application/octet-stream")
    await put_through(put.url, body, put.headers)
    copying, go_on = threading.Event(), threading.Event()
    copy = S3Backend.copy

    def held(self: S3Backend, source: str, target: str) -> str:
        copying.set()
        go_on.wait(30)
        return copy(self, source, target)

    monkeypatch.setattr(S3Backend, "copy", held)
    confirming = asyncio.ensure_future(store.confirm_upload("k.bin", upload_id=put.upload_id))
    assert await asyncio.to_thread(copying.wait, 30)
    await pool.execute(
        """UPDATE artifacts.uploads SET url_expire_time = now() - interval '2 hours'
           WHERE upload_id = $1""",
        uuid.UUID(put.upload_id),
    )
    objects, backend = ObjectStore(pool), _backend(store, config, s3_config)
    swept = await Janitor(objects, backend, min_age=timedelta(minutes=1)).sweep()
    assert swept.expired_uploads == 1
    go_on.set()
    with pytest.raises(NotFoundError) as raised:
        await confirming
    assert raised.value.reason == "UPLOAD_NOT_FOUND"


async def test_bytes_that_cannot_be_removed_hold_up_nothing_else(own_postgres, config) -> None:
    """On a database of its own: garbage another test left would be counted too."""
    backend = backends.from_config(config)  # a key S3 refuses needs a policy moto lacks
    stuck = backends.new_key("stuck", uuid.uuid4().hex)
    (config.artifact_dir / stuck).mkdir(parents=True)  # a folder: unlink refuses it
    (config.artifact_dir / stuck / "inside").write_bytes(b"x")
    strays = [backends.new_key("stuck", uuid.uuid4().hex) for _ in range(2)]
    for key in strays:
        await asyncio.to_thread(backend.write, key, io.BytesIO(b"stray"), "", 0)
    pool = await database.create_pool(own_postgres.get_uri(), config)
    try:
        await migrate(pool, catalog.select(["artifacts"]))
        janitor = Janitor(ObjectStore(pool), backend, timedelta(hours=1))
        async with pool.acquire() as conn:
            for key in [stuck, *strays]:  # the stuck key is the oldest garbage
                await conn.execute("INSERT INTO artifacts.garbage (storage_key) VALUES ($1)", key)
            swept = await janitor.sweep()
            left = {
                row["storage_key"] for row in await conn.fetch("SELECT * FROM artifacts.garbage")
            }
        assert swept.removed == 2
        assert left == {stuck}
        assert not any((config.artifact_dir / key).exists() for key in strays)
        (config.artifact_dir / stuck / "inside").unlink()  # now it can go
        (config.artifact_dir / stuck).rmdir()
        assert await janitor.collect_garbage() == 1
    finally:
        await database.close_pool(pool)


async def test_a_bucket_not_made_yet_gives_the_janitor_nothing_to_do(
    own_postgres, s3_config
) -> None:
    """A fresh deployment: the bucket is made by the first upload, and until then the
    janitor's passes find nothing, without an error in the log. On a database of its
    own, as a fresh deployment's: garbage other tests left would be swept against it."""
    fresh = with_overrides(s3_config, s3_bucket=f"fresh-{uuid.uuid4().hex[:12]}")
    pool = await database.create_pool(own_postgres.get_uri(), fresh)
    try:
        await migrate(pool, catalog.select(["artifacts"]))
        with capture_logs() as logged:
            swept = await Janitor(
                ObjectStore(pool), backends.from_config(fresh), min_age=timedelta(0)
            ).sweep()
    finally:
        await database.close_pool(pool)
    assert swept.aborted_writes == swept.removed == 0
    assert [e for e in logged if e["log_level"] in ("warning", "error")] == []
    assert not s3_client(fresh).bucket_exists(fresh.s3_bucket)
