"""UploadFiles stores a batch of small files in one call, all of them or none, once per
request id (docs/artifacts.md, "Trees"); `upload_tree` sends a tree's small files so,
and file by file to a server of a release before it."""

import asyncio
import hashlib
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

import cairn
from cairn import _backoff
from cairn._headers import REQUEST_ID_HEADER
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc
from cairn.exceptions import (
    AbortedError,
    AlreadyExistsError,
    CairnError,
    DataLossError,
    InvalidArgumentError,
    from_grpc_error,
)
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common.config import Config
from tests.conftest import eventually, holds_up_another, new_project
from tests.integration.artifacts.conftest import count_calls, store_through
from tests.proxy import StallingProxy

Files = list[tuple[str, bytes]]


def _request(project: str, files: Files, overwrite: bool = False) -> api.UploadFilesRequest:
    return api.UploadFilesRequest(
        project=project,
        overwrite=overwrite,
        files=[
            api.FileContent(path=path, content=content, sha256=hashlib.sha256(content).hexdigest())
            for path, content in files
        ],
    )


async def _send(
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    request: api.UploadFilesRequest,
    request_id: str | None = None,
) -> api.UploadFilesResponse:
    try:
        return await stub.UploadFiles(
            request, metadata=[(REQUEST_ID_HEADER, request_id or uuid.uuid4().hex)]
        )
    except grpc.RpcError as error:
        raise from_grpc_error(error) from None


async def _paths(client: cairn.ArtifactClient) -> list[str]:
    return [info.path for info in await client.list("", recursive=True)]


async def test_each_file_is_stored_whole_and_answered_in_the_order_given(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
) -> None:
    files = [("t/b", b"second"), ("t/a", b"first"), ("t/deep/empty", b"")]

    answer = await _send(stub, _request(store.project, files))

    assert [(each.path, each.size) for each in answer.objects] == [
        (path, len(content)) for path, content in files
    ]
    for (path, content), each in zip(files, answer.objects, strict=True):
        assert each.sha256 == hashlib.sha256(content).hexdigest()
        assert each.content_type == "application/octet-stream"
        assert await store.read(path) == content


async def test_a_repeat_answers_what_the_first_stored_and_stores_nothing_again(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub, raw_objects
) -> None:
    request = _request(store.project, [("r/a", b"a"), ("r/b", b"b")])
    request_id = uuid.uuid4().hex
    first = await _send(stub, request, request_id)
    await store.delete("r/a")

    repeat = await _send(stub, request, request_id)

    assert repeat == first
    assert await _paths(store) == ["r/b"]  # r/a, deleted since, is not stored again
    await eventually(lambda: len(raw_objects()) == 1, what="r/a's bytes removed")


async def test_a_file_that_does_not_match_its_sha256_stores_none_of_the_call(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub, raw_objects
) -> None:
    request = _request(store.project, [("c/a", b"a"), ("c/b", b"b")])
    request.files[1].content = b"not b"

    with pytest.raises(DataLossError) as refused:
        await _send(stub, request)

    assert refused.value.reason == "CHECKSUM_MISMATCH"
    assert await _paths(store) == []
    assert raw_objects() == []


async def test_a_path_taken_refuses_the_whole_call_and_its_bytes_are_removed(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub, raw_objects
) -> None:
    await store.upload("t/b", b"there before")
    files = [("t/a", b"a"), ("t/b", b"b"), ("t/c", b"c")]

    with pytest.raises(AlreadyExistsError) as refused:
        await _send(stub, _request(store.project, files))

    assert refused.value.reason == "OBJECT_ALREADY_EXISTS"
    assert refused.value.metadata == {"path": "t/b"}
    assert await _paths(store) == ["t/b"]
    assert await store.read("t/b") == b"there before"
    await eventually(lambda: len(raw_objects()) == 1, what="the call's own bytes removed")


async def test_overwrite_replaces_each_object_and_lets_its_old_bytes_go(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub, raw_objects
) -> None:
    await store.upload("o/a", b"old")

    await _send(stub, _request(store.project, [("o/a", b"new"), ("o/b", b"b")], overwrite=True))

    assert await store.read("o/a") == b"new"
    await eventually(lambda: len(raw_objects()) == 2, what="the old bytes of o/a removed")


def _twice(request: api.UploadFilesRequest) -> None:
    request.files.append(request.files[0])


def _too_many(request: api.UploadFilesRequest) -> None:
    request.files.extend(
        api.FileContent(path=f"many/{n}", sha256=hashlib.sha256(b"").hexdigest())
        for n in range(100)
    )


def _first_file(field: str, value: str) -> Callable[[api.UploadFilesRequest], None]:
    return lambda request: setattr(request.files[0], field, value)


@pytest.mark.parametrize(
    ("spoil", "field", "reason"),
    [
        (_twice, "files[1].path", "INVALID_PATH"),
        (_too_many, "files", "INVALID_ARGUMENT"),
        (lambda request: request.ClearField("files"), "files", "INVALID_ARGUMENT"),
        (_first_file("path", "../up"), "files[0].path", "INVALID_PATH"),
        (_first_file("sha256", ""), "files[0].sha256", "INVALID_ARGUMENT"),
        (_first_file("sha256", "xyz"), "files[0].sha256", "INVALID_ARGUMENT"),
        (_first_file("content_type", "t\u00e9xt"), "files[0].content_type", "INVALID_ARGUMENT"),
    ],
    ids=["path-twice", "too-many", "none", "path", "no-sha256", "bad-sha256", "content-type"],
)
async def test_a_call_refused_names_its_field(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    spoil,
    field: str,
    reason: str,
) -> None:
    request = _request(store.project, [("f/a", b"a")])
    spoil(request)

    with pytest.raises(InvalidArgumentError) as refused:
        await _send(stub, request)

    assert refused.value.reason == reason
    assert [violation for violation, _ in refused.value.field_violations] == [field]
    assert await _paths(store) == []


async def test_a_write_failing_midway_stores_nothing_and_leaves_no_bytes(
    server_port: int, config: Config, unique: str
) -> None:
    """On the filesystem backend, half the folders keys go to are files here: the writes
    under them fail, those under the others succeed, and their bytes are removed once
    every write ended."""
    project = await new_project(server_port, f"fb-{unique}")
    root = config.artifact_dir / "_objects" / project
    root.mkdir(parents=True)
    blockers = {root / f"{n:02x}" for n in range(0, 256, 2)}
    for blocker in blockers:
        blocker.write_bytes(b"")
    files = [(f"w/{n:03}", bytes([n])) for n in range(40)]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        with pytest.raises(CairnError):
            await _send(stub, _request(project, files))

    def written() -> list[Path]:
        return [path for path in root.rglob("*") if path.is_file() and path not in blockers]

    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        assert await _paths(client) == []
    await eventually(lambda: written() == [], what="the bytes the call wrote removed")


async def test_a_tree_goes_file_by_file_to_a_server_without_upload_files(
    store: cairn.ArtifactClient, tmp_path: Path, server_port: int, s3_server_port: int
) -> None:
    """A server of a release before answers UploadFiles UNIMPLEMENTED, as gRPC answers
    a method it does not serve: the tree goes up as before, each file an upload."""
    port = server_port if store.backend == "filesystem" else s3_server_port  # type: ignore[attr-defined]
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        _answer_unimplemented(store, channel)

        stored = await store.upload_tree("old", tmp_path)

    assert [info.path for info in stored] == ["old/a", "old/b", "old/c"]
    assert not store._uploads._batches_offered.standing
    assert await store.read("old/b") == b"b"


async def test_a_tree_with_a_large_file_among_small_ones_answers_in_path_order(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A file of the direct threshold goes alone, beside the batch of the small files
    around it: the tree answered it first."""
    store.direct_threshold = 64 * 1024
    (tmp_path / "a.json").write_bytes(b"{}")
    (tmp_path / "m.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "z.txt").write_bytes(b"z")

    stored = await store.upload_tree("mixed", tmp_path)

    assert [info.path for info in stored] == ["mixed/a.json", "mixed/m.bin", "mixed/z.txt"]


async def test_a_file_that_grew_past_a_message_since_it_was_listed_goes_up_alone(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A log still written to as its tree goes up: read whole into its batch, it made a
    message larger than the server takes, and the whole tree failed."""
    for name in ("a", "log", "z"):
        (tmp_path / name).write_bytes(name.encode())
    grown = b"log" + os.urandom(17 * 1024 * 1024)

    def progress(done: int, total: int) -> None:
        if not done:  # at the start, once the tree was listed
            (tmp_path / "log").write_bytes(grown)

    stored = await store.upload_tree("g", tmp_path, progress=progress)

    assert [info.path for info in stored] == ["g/a", "g/log", "g/z"]
    assert stored[1].size == len(grown)
    assert await store.read("g/log") == grown


async def test_a_client_told_there_is_no_upload_files_asks_again_later(
    store: cairn.ArtifactClient,
    tmp_path: Path,
    server_port: int,
    s3_server_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server upgraded in place, or the next replica of a rolling update, serves
    UploadFiles after all: a client that heard UNIMPLEMENTED sends its trees file by
    file for NOT_OFFERED_SECONDS, then asks again, where it used to for as long as it
    lived."""
    port = server_port if store.backend == "filesystem" else s3_server_port  # type: ignore[attr-defined]
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    served = store._uploads._batches._stub
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        _answer_unimplemented(store, channel)
        await store.upload_tree("old", tmp_path)
    store._uploads._batches._stub = served
    upgraded = count_calls(store._uploads._batches, "UploadFiles")

    await store.upload_tree("soon", tmp_path)
    assert upgraded.calls == 0  # within NOT_OFFERED_SECONDS: not asked

    later = _backoff.monotonic() + _backoff.NOT_OFFERED_SECONDS
    monkeypatch.setattr(_backoff, "monotonic", lambda: later)
    stored = await store.upload_tree("later", tmp_path)

    assert upgraded.calls == 1  # both files in one batch
    assert [info.path for info in stored] == ["later/a", "later/b"]
    assert await store.read("later/b") == b"b"


def _answer_unimplemented(store: cairn.ArtifactClient, channel: grpc.aio.Channel) -> None:
    """Has store's batches go to a method the server does not serve, as one of a
    release before UploadFiles would not."""
    unknown = channel.unary_unary(
        "/cairn.artifacts.v1.ArtifactService/UploadFilesOfALaterRelease",
        request_serializer=api.UploadFilesRequest.SerializeToString,
        response_deserializer=api.UploadFilesResponse.FromString,
    )
    store._uploads._batches._stub = type("Older", (), {"UploadFiles": unknown})()


async def test_a_tree_sent_file_by_file_counts_what_it_stored_when_one_fails(
    store: cairn.ArtifactClient, tmp_path: Path, server_port: int, s3_server_port: int
) -> None:
    """To a server without UploadFiles a batch's files go one by one: c, removed, failed
    the tree after a and b were stored, which it said were not."""
    port = server_port if store.backend == "filesystem" else s3_server_port  # type: ignore[attr-defined]
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())

    def progress(done: int, total: int) -> None:
        (tmp_path / "c").unlink(missing_ok=True)

    warm = tmp_path.parent / f"{tmp_path.name}-warm"
    warm.mkdir()
    for name in ("x", "y"):
        (warm / name).write_bytes(name.encode())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        _answer_unimplemented(store, channel)
        await store.upload_tree("warm", warm)  # which finds the server without it
        with pytest.raises(cairn.exceptions.FailedPreconditionError) as raised:
            await store.upload_tree("old", tmp_path, progress=progress)

    assert raised.value.reason == "LOCAL_READ_FAILED"
    assert await _paths(store) == ["old/a", "old/b", "warm/x", "warm/y"]
    assert "2 of the tree's 3 files are stored" in str(raised.value)


# Whether a session holds project $1's publishes lock (publication.PUBLISHES_OF_PROJECT),
# an advisory lock whose 64-bit key pg_locks shows as two 32-bit halves.
_PROJECT_LOCKED = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted
  AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 1)"""


async def test_a_batch_holds_no_lock_of_its_project_while_its_bytes_are_written(
    s3_config: Config, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    """It held its project's publishes lock, and a database connection, for as long as
    the store took: a garbage collection's drain waited behind it, and every upload of
    the project behind that. Its uploads are recorded instead, as an upload's are."""
    host, port = s3_config.s3_endpoint.split(":")
    proxy = StallingProxy(host, int(port))
    await proxy.start()
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    try:
        async with store_through(
            s3_config, pool, proxy.port, f"held-{unique}", s3_timeout_seconds=2.0
        ) as client:
            proxy.stall()
            uploading = asyncio.ensure_future(client.upload_tree("t", tmp_path, timeout=30))

            async def begun() -> bool:
                return await pool.fetchval(_UPLOADS_OF, client.project) == 2

            await eventually(begun, what="the batch's uploads begun")
            assert await pool.fetchval(_PROJECT_LOCKED, client.project) == 0
            proxy.resume()  # the write that met the stall fails; the call is sent again
            stored = await uploading
            assert [info.path for info in stored] == ["t/a", "t/b"]
            assert await pool.fetchval(_UPLOADS_OF, client.project) == 0
    finally:
        await proxy.close()


_UPLOADS_OF = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"


async def test_a_batch_whose_uploads_expired_as_it_waited_stores_none_and_names_a_file(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    pool: asyncpg.Pool,
) -> None:
    """The janitor expired the call's uploads while its publication waited for a path
    another publication held: it stores none of its files, and says which upload went,
    as an upload does (the batch's error named none)."""
    files = [("e/a", b"a"), ("e/b", b"b")]
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{store.project}/e/b"
        )
        sending = asyncio.ensure_future(_send(stub, _request(store.project, files)))
        await eventually(lambda: holds_up_another(holder), what="the batch's publication")
        assert await ObjectStore(pool).expire_uploads(timedelta(0)) >= 2
    with pytest.raises(AbortedError) as expired:
        await sending

    assert expired.value.reason == "UPLOAD_EXPIRED"
    assert expired.value.metadata == {"path": "e/a"}
    assert await _paths(store) == []
    garbage = await pool.fetchval(
        "SELECT count(*) FROM artifacts.garbage WHERE storage_key LIKE $1",
        f"_objects/{store.project}/%",
    )
    assert garbage == 2  # the expiry's: its bytes go at the janitor's next pass
