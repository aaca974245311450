"""Presigned URLs, a run's artifacts through TrackingClient, and a model version whose
artifact names an uploaded object."""

import asyncio
import contextlib
import datetime
import hashlib
import json
import tempfile
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration

import cairn
from cairn import _headers
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from cairn.types import ModelArtifact, ModelVersion, RegisteredModel
from cairn_server.common.config import Config
from tests.conftest import new_project, serving
from tests.proxy import AnswerDroppingProxy


def _http(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None
) -> bytes:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        return response.read()


async def test_presigned_urls_need_the_s3_backend(store: cairn.ArtifactClient) -> None:
    if store.backend == "s3":  # type: ignore[attr-defined]
        return
    for method in ("GET", "PUT"):
        with pytest.raises(FailedPreconditionError) as raised:
            await store.presigned_url("x", method, content_type="text/plain")
        assert raised.value.reason == "PRESIGN_UNSUPPORTED"


async def test_presigned_get_and_put_on_s3(s3_store: cairn.ArtifactClient) -> None:
    store = s3_store
    await store.upload("shared.txt", b"read me directly")
    url = await store.presigned_url("shared.txt", expires_in=60)
    assert await asyncio.to_thread(_http, url.url) == b"read me directly"

    body = b"uploaded around the service"
    put = await store.presigned_url(
        "direct/upload.bin", "PUT", content_type="application/octet-stream"
    )
    assert put.headers == {"Content-Type": "application/octet-stream"} and put.upload_id
    await asyncio.to_thread(_http, put.url, "PUT", body, put.headers)
    with pytest.raises(NotFoundError):
        await store.stat("direct/upload.bin")  # not recorded before confirmation
    info = await store.confirm_upload("direct/upload.bin", _sha(body), upload_id=put.upload_id)
    assert (info.size, info.sha256) == (len(body), _sha(body))
    assert info.content_type == "application/octet-stream"
    assert await store.read("direct/upload.bin") == body
    with pytest.raises(NotFoundError) as raised:  # a confirmed upload is spent
        await store.confirm_upload("direct/upload.bin", upload_id=put.upload_id)
    assert raised.value.reason == "UPLOAD_NOT_FOUND"


async def test_a_url_used_again_after_confirmation_changes_nothing(
    s3_store: cairn.ArtifactClient,
) -> None:
    put = await s3_store.presigned_url("sealed.bin", "PUT")
    await asyncio.to_thread(_http, put.url, "PUT", b"confirmed", BINARY)
    await s3_store.confirm_upload("sealed.bin", upload_id=put.upload_id)
    await asyncio.to_thread(_http, put.url, "PUT", b"sent later", BINARY)  # the URL still works
    assert await s3_store.read("sealed.bin") == b"confirmed"


async def test_a_presigned_put_replaces_an_object_only_with_overwrite(
    s3_store: cairn.ArtifactClient,
) -> None:
    await s3_store.upload("kept.txt", b"original")
    with pytest.raises(AlreadyExistsError):
        await s3_store.presigned_url("kept.txt", "PUT")
    # An object that appears after the URL was made is protected all the same.
    put = await s3_store.presigned_url("raced.txt", "PUT")
    await s3_store.upload("raced.txt", b"first")
    await asyncio.to_thread(_http, put.url, "PUT", b"second", BINARY)
    with pytest.raises(AlreadyExistsError):
        await s3_store.confirm_upload("raced.txt", upload_id=put.upload_id)
    assert await s3_store.read("raced.txt") == b"first"
    replace = await s3_store.presigned_url("kept.txt", "PUT", overwrite=True)
    await asyncio.to_thread(_http, replace.url, "PUT", b"replaced", BINARY)
    await s3_store.confirm_upload("kept.txt", upload_id=replace.upload_id)
    assert await s3_store.read("kept.txt") == b"replaced"


async def test_a_presigned_put_is_checked_before_it_is_published(
    s3_store: cairn.ArtifactClient,
) -> None:
    await s3_store.upload("checked.csv", b"old,bytes")
    body = b"a,b\n1,2\n"
    put = await s3_store.presigned_url(
        "checked.csv", "PUT", content_type="text/csv", overwrite=True
    )
    await asyncio.to_thread(_http, put.url, "PUT", body, {"Content-Type": "text/plain"})
    with pytest.raises(FailedPreconditionError) as wrong_type:
        await s3_store.confirm_upload("checked.csv", upload_id=put.upload_id)
    assert wrong_type.value.reason == "CONTENT_TYPE_MISMATCH"
    put = await s3_store.presigned_url(
        "checked.csv", "PUT", content_type="text/csv", overwrite=True
    )
    await asyncio.to_thread(_http, put.url, "PUT", b"tampered", put.headers)
    with pytest.raises(DataLossError) as wrong_bytes:
        await s3_store.confirm_upload("checked.csv", _sha(body), upload_id=put.upload_id)
    assert wrong_bytes.value.reason == "CHECKSUM_MISMATCH"
    assert await s3_store.read("checked.csv") == b"old,bytes"
    with pytest.raises(NotFoundError) as nothing:
        put = await s3_store.presigned_url("never/uploaded.bin", "PUT")
        await s3_store.confirm_upload("never/uploaded.bin", upload_id=put.upload_id)
    assert nothing.value.reason == "OBJECT_NOT_FOUND"


@pytest.mark.parametrize("sent", ["text/plain; x=" + "y" * 600, "text/plain\x01x"])
async def test_a_content_type_the_put_chose_is_held_to_the_rule_of_every_upload(
    s3_store: cairn.ArtifactClient, sent: str
) -> None:
    """A URL made with no content type took whatever the PUT sent as the object's: 614
    characters, or a control character, where every other upload's is printable ASCII
    of at most 255. Refused as a verdict on what was sent: the upload is spent."""
    put = await s3_store.presigned_url("typed.bin", "PUT")
    await asyncio.to_thread(_http, put.url, "PUT", b"bytes", {"Content-Type": sent})
    with pytest.raises(FailedPreconditionError) as refused:
        await s3_store.confirm_upload("typed.bin", upload_id=put.upload_id)
    assert refused.value.reason == "CONTENT_TYPE_INVALID"
    with pytest.raises(NotFoundError):
        await s3_store.stat("typed.bin")
    with pytest.raises(NotFoundError) as spent:
        await s3_store.confirm_upload("typed.bin", upload_id=put.upload_id)
    assert spent.value.reason == "UPLOAD_NOT_FOUND"


@pytest.mark.parametrize(
    "expires_in",
    [-1, 3601, 7 * 24 * 3600, 9223372036854775807 // 10**9],
    ids=["negative", "past-the-limit", "seven-days", "huge"],
)
async def test_presigned_url_lifetimes_are_bounded(
    s3_store: cairn.ArtifactClient, expires_in: int
) -> None:
    await s3_store.upload("short-lived.txt", b"x")
    with pytest.raises(InvalidArgumentError) as raised:
        await s3_store.presigned_url("short-lived.txt", expires_in=expires_in)
    assert "CAIRN_PRESIGN_MAX_SECONDS" in raised.value.message


async def test_concurrent_confirmations_publish_once(s3_store: cairn.ArtifactClient) -> None:
    put = await s3_store.presigned_url("twice.bin", "PUT", overwrite=True)
    await asyncio.to_thread(_http, put.url, "PUT", b"once", BINARY)
    outcomes = await asyncio.gather(
        *(s3_store.confirm_upload("twice.bin", upload_id=put.upload_id) for _ in range(4)),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 3, outcomes
    assert all(isinstance(o, NotFoundError) and o.reason == "UPLOAD_NOT_FOUND" for o in refused)
    assert await s3_store.read("twice.bin") == b"once"


async def test_a_confirmation_whose_answer_is_lost_is_answered_with_what_it_published(
    s3_store: cairn.ArtifactClient, s3_server_port: int
) -> None:
    put = await s3_store.presigned_url("lost-answer.bin", "PUT")
    await asyncio.to_thread(_http, put.url, "PUT", b"direct", BINARY)
    async with _losing_one_answer(s3_server_port, s3_store.project) as (store, proxy):
        info = await store.confirm_upload("lost-answer.bin", upload_id=put.upload_id)
    assert proxy.dropped == 1  # and the retry got the object, not UPLOAD_NOT_FOUND
    assert info.size == 6 and await s3_store.read("lost-answer.bin") == b"direct"


async def test_a_presigned_put_whose_answer_is_lost_is_the_same_upload(
    s3_store: cairn.ArtifactClient, s3_server_port: int
) -> None:
    async with _losing_one_answer(s3_server_port, s3_store.project) as (store, proxy):
        put = await store.presigned_url("lost-url.bin", "PUT")
    assert proxy.dropped == 1
    await asyncio.to_thread(_http, put.url, "PUT", b"via the url", BINARY)
    info = await s3_store.confirm_upload("lost-url.bin", upload_id=put.upload_id)
    assert info.size == len(b"via the url")


@pytest.mark.parametrize(
    "again",
    [{"path": "other.csv"}, {"content_type": "application/json"}, {"overwrite": True}],
    ids=["path", "content-type", "overwrite"],
)
async def test_a_request_id_of_another_presigned_put_is_refused(
    s3_store: cairn.ArtifactClient, again: dict
) -> None:
    """Only another path was refused: a repeat asking for another content type got the
    first upload signed with its own type (a PUT with it, then its confirmation, failed
    CONTENT_TYPE_MISMATCH), and one asking to overwrite got an upload that may not."""
    once = [(_headers.REQUEST_ID_HEADER, uuid.uuid4().hex)]
    first = {"path": "data.csv", "content_type": "text/csv", "overwrite": False}

    def request(**fields) -> api.CreatePresignedUrlRequest:
        return api.CreatePresignedUrlRequest(
            project=s3_store.project, method="PRESIGN_METHOD_PUT", **fields
        )

    call = s3_store._stub.CreatePresignedUrl
    made = await s3_store._transport.unary(call, request(**first), metadata=once)
    repeat = await s3_store._transport.unary(call, request(**first), metadata=once)
    assert repeat.upload_id == made.upload_id  # the same request: the same upload
    with pytest.raises(InvalidArgumentError) as refused:
        await s3_store._transport.unary(call, request(**{**first, **again}), metadata=once)
    assert refused.value.reason == "REQUEST_ID_REUSED"


async def test_a_repeated_presigned_put_keeps_its_upload_as_long_as_its_url(
    s3_store: cairn.ArtifactClient, pool: asyncpg.Pool
) -> None:
    """A repeat asking for a longer lifetime got the first upload, with a URL of that
    lifetime, while the upload kept the first call's: once the janitor expired it, the
    URL still took bytes no confirmation could publish any more. A call refused for
    asking another upload under the id extended it all the same."""
    once = [(_headers.REQUEST_ID_HEADER, uuid.uuid4().hex)]

    def request(seconds: int) -> api.CreatePresignedUrlRequest:
        return api.CreatePresignedUrlRequest(
            project=s3_store.project,
            path="long.bin",
            method="PRESIGN_METHOD_PUT",
            expires_in=Duration(seconds=seconds),
        )

    call = s3_store._stub.CreatePresignedUrl
    made = await s3_store._transport.unary(call, request(60), metadata=once)
    repeat = await s3_store._transport.unary(call, request(3000), metadata=once)
    assert repeat.upload_id == made.upload_id and "X-Amz-Expires=3000&" in repeat.url

    async def seconds_left() -> float:
        return await pool.fetchval(
            """SELECT extract(epoch FROM url_expire_time - now()) FROM artifacts.uploads
               WHERE upload_id = $1""",
            uuid.UUID(made.upload_id),
        )

    assert await seconds_left() > 2900
    other = request(3500)
    other.path = "other.bin"
    with pytest.raises(InvalidArgumentError) as refused:
        await s3_store._transport.unary(call, other, metadata=once)
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert await seconds_left() < 3100


async def test_a_lifetime_under_a_second_is_rounded_up(s3_store: cairn.ArtifactClient) -> None:
    await s3_store.upload("brief.txt", b"x")
    url = await s3_store.presigned_url("brief.txt", expires_in=0.25)
    assert "X-Amz-Expires=1&" in url.url


async def test_the_default_lifetime_is_the_servers_within_a_shorter_cap(
    s3_config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """The client asked for an hour by default, which a server capping URLs at less (as
    docs/artifacts.md advises) refused: every call without expires_in failed."""
    async with serving(s3_config, pool, ["artifacts"], presign_max_seconds=600) as port:
        project = await new_project(port, f"cap-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project
        ) as client:
            await client.upload("capped.txt", b"x")
            url = await client.presigned_url("capped.txt")
            assert "X-Amz-Expires=600&" in url.url
            assert await asyncio.to_thread(_http, url.url) == b"x"


@pytest.mark.parametrize(
    "duration",
    [Duration(seconds=9223372036854775807), Duration(seconds=1, nanos=1_000_000_000)],
    ids=["huge", "nanos-of-a-second"],
)
async def test_a_duration_no_wire_duration_can_be_is_invalid(
    s3_store: cairn.ArtifactClient, duration: Duration
) -> None:
    """Nanos of a second or more (a Duration's are less) were taken as one more second,
    where the operations service refuses them."""
    request = api.CreatePresignedUrlRequest(
        project=s3_store.project, path="x", method="PRESIGN_METHOD_GET", expires_in=duration
    )
    with pytest.raises(InvalidArgumentError) as raised:
        await s3_store._transport.unary(s3_store._stub.CreatePresignedUrl, request)
    assert raised.value.field_violations[0][0] == "expires_in"


async def test_presigned_get_of_a_missing_object_is_not_found(
    s3_store: cairn.ArtifactClient,
) -> None:
    with pytest.raises(NotFoundError):
        await s3_store.presigned_url("missing.txt")


@contextlib.asynccontextmanager
async def _losing_one_answer(port: int, project: str):
    """A client through a proxy that will lose the next answer the server sends."""
    proxy = AnswerDroppingProxy(port)
    await proxy.start()
    try:
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", proxy.port, project=project
        ) as store:
            proxy.drop_next()
            yield store, proxy
    finally:
        await proxy.close()


# moto reads a PUT without Content-Type as a form and stores an empty object.
BINARY = {"Content-Type": "application/octet-stream"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_run_artifacts_through_the_tracking_client(
    server_port: int, unique: str, tmp_path
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"artifacts-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        model_dir = tmp_path / "model"
        (model_dir / "sub").mkdir(parents=True)
        (model_dir / "weights.bin").write_bytes(b"w" * 1000)
        (model_dir / "sub" / "config.json").write_text("{}")
        (tmp_path / "notes.md").write_text("# notes")
        await tracking.log_artifacts(run_id, model_dir, "model")
        await tracking.log_artifact(run_id, tmp_path / "notes.md")
        await tracking.log_text(run_id, "hello", "texts/hello.txt")
        await tracking.log_dict(run_id, {"lr": 0.1}, "params.json")
        top = await tracking.list_artifacts(run_id)
        assert [(a.path, a.is_dir) for a in top] == [
            ("model", True),
            ("notes.md", False),
            ("params.json", False),
            ("texts", True),
        ]
        assert [a.path for a in await tracking.list_artifacts(run_id, "model")] == [
            "model/sub",
            "model/weights.bin",
        ]
        one = await tracking.download_artifacts(run_id, "model/sub/config.json", tmp_path / "one")
        assert Path(one).read_text() == "{}"
        tree = await tracking.download_artifacts(run_id, "model", tmp_path / "tree")
        assert sorted(p.name for p in (tmp_path / "tree" / "model").rglob("*") if p.is_file()) == [
            "config.json",
            "weights.bin",
        ]
        assert tree.endswith("model")
        params = await tracking.download_artifacts(run_id, "params.json", tmp_path / "p")
        assert json.loads(Path(params).read_text()) == {"lr": 0.1}


async def test_a_listed_path_is_normalised_as_a_downloaded_one_is(
    server_port: int, unique: str
) -> None:
    """list_artifacts sent its path as given: `./a/b`, `a//b` and `a/x/../b`, which
    MLflow lists as `a/b` and download_artifacts reads so, were INVALID_ARGUMENT naming
    `prefix`, a field the caller never passed, after calls had been sent."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"listed-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.log_text(run_id, "x", "a/b/c.txt")
        for spelled in ("a/b", "./a/b", "a//b", "a/b/.", "a/x/../b", "a/b/"):
            listed = await tracking.list_artifacts(run_id, spelled)
            assert [entry.path for entry in listed] == ["a/b/c.txt"], spelled
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.list_artifacts(run_id, "../x")
        assert refused.value.field_violations[0][0] == "path"


async def test_log_dict_stores_values_json_cannot_encode_as_strings(
    server_port: int, unique: str, tmp_path
) -> None:
    """MLflow stringifies what JSON can't encode; log_dict raised TypeError on a numpy
    float32, a numpy int64 or a date, and YAML's RepresenterError on the numpy ones."""
    values = {"acc": np.float32(0.93), "n": np.int64(3), "day": datetime.date(2026, 12, 4)}
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"log-dict-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.log_dict(run_id, values, "metrics.json")
        await tracking.log_dict(run_id, values, "metrics.yaml")
        as_json = await tracking.download_artifacts(run_id, "metrics.json", tmp_path / "j")
        as_yaml = await tracking.download_artifacts(run_id, "metrics.yaml", tmp_path / "y")
    assert json.loads(Path(as_json).read_text()) == {"acc": "0.93", "n": "3", "day": "2026-12-04"}
    # YAML has a date of its own, so only the numpy values become strings.
    assert yaml.safe_load(Path(as_yaml).read_text()) == {
        "acc": "0.93",
        "n": "3",
        "day": datetime.date(2026, 12, 4),
    }


async def test_run_artifacts_are_named_placed_and_fetched_as_mlflow_does(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    """Three differences from MLflow, each of which lost or refused a user's files:
    download_artifacts wrote a/model.txt and b/model.txt both to dst/model.txt, the
    second over the first; log_artifact of a directory raised IsADirectoryError; and
    log_text refused `./x.txt`, `d//x.txt` and `d/../x.txt`, which MLflow normalises."""
    folder = tmp_path / "states"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "s.txt").write_text("deep")
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"as-mlflow-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        for text, name in (("A", "a/model.txt"), ("B", "b/model.txt")):
            await tracking.log_text(run_id, text, name)
        written = [
            await tracking.download_artifacts(run_id, name, tmp_path / "dst")
            for name in ("a/model.txt", "/./b//model.txt")
        ]
        assert written == [str(tmp_path / "dst" / d / "model.txt") for d in "ab"]
        assert [Path(path).read_text() for path in written] == ["A", "B"]
        for above in (
            lambda: tracking.download_artifacts(run_id, "a/../../x", tmp_path / "dst"),
            lambda: tracking.log_text(run_id, "x", "../x.txt"),
            lambda: tracking.log_artifact(run_id, folder, "d/../.."),
            lambda: tracking.log_artifacts(run_id, folder, ".."),
        ):
            with pytest.raises(InvalidArgumentError, match="above the run's artifacts"):
                await above()

        stored = await tracking.log_artifact(run_id, folder, "./dirs/")
        assert isinstance(stored, list)
        assert [info.path.rsplit("/artifacts/", 1)[1] for info in stored] == [
            "dirs/states/deep/s.txt"
        ]
        for name in ("./x.txt", "n//x.txt", "n/./y.txt", "gone/../z.txt"):
            await tracking.log_text(run_id, name, name)
        listed = await tracking.list_artifacts(run_id, "n")
        assert [a.path for a in listed] == ["n/x.txt", "n/y.txt"]
        top = {a.path for a in await tracking.list_artifacts(run_id)}
        assert {"x.txt", "z.txt", "dirs"} <= top and "gone" not in top


@pytest.mark.parametrize("artifact_file", ["", "/", "model/", "model//", ".", "model/.."])
async def test_an_artifact_file_naming_no_file_is_refused_before_anything_is_sent(
    server_port: int, unique: str, tmp_path, artifact_file: str
) -> None:
    """log_text(run, "oops", "") stored an object at the run's artifact root itself, and
    log_dict(run, {...}, "model/") one at the path of the folder model: the run's
    listing showed 'model' twice, and download_artifacts(run, "") fetched the 4-byte
    file instead of the run's folder, download_artifacts(run, "model") the dict's JSON
    instead of the folder holding model/w.txt. MLflow refuses both names."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"no-file-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.log_text(run_id, "weights", "model/w.txt")
        writes = [
            lambda: tracking.log_text(run_id, "oops", artifact_file),
            lambda: tracking.log_dict(run_id, {"x": 1}, artifact_file),
            lambda: tracking.log_image(run_id, np.zeros((2, 2), np.uint8), artifact_file),
            # Refused before the run is looked up: nothing is sent.
            lambda: tracking.log_text("0" * 32, "oops", artifact_file),
        ]
        for write in writes:
            with pytest.raises(InvalidArgumentError) as refused:
                await write()
            assert refused.value.field_violations[0][0] == "artifact_file"
            assert "must not be empty, end with '/' or name their root" in refused.value.message
        assert [(a.path, a.is_dir) for a in await tracking.list_artifacts(run_id)] == [
            ("model", True)
        ]
        whole = await tracking.download_artifacts(run_id, "", tmp_path / "all")
        assert (Path(whole) / "model" / "w.txt").read_text() == "weights"


async def test_a_missing_run_artifact_is_named_as_the_caller_named_it(
    server_port: int, unique: str, tmp_path
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"missing-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        with pytest.raises(NotFoundError) as raised:
            await tracking.download_artifacts(run_id, "nosuch/", tmp_path)
        assert raised.value.reason == "OBJECT_NOT_FOUND"
        assert raised.value.message == f"run {run_id} has no artifact at 'nosuch'"
        with pytest.raises(NotFoundError) as raised:
            await tracking.download_artifacts(run_id, "", tmp_path)
        assert raised.value.message == f"run {run_id} has no artifacts"
        # So by its runs:/ URI, which named the store's path (experiments/<id>/...).
        with pytest.raises(NotFoundError) as raised:
            await tracking.download_artifacts(f"runs:/{run_id}/nosuch", tmp_path)
        assert raised.value.reason == "OBJECT_NOT_FOUND"
        assert raised.value.message == f"run {run_id} has no artifact at 'nosuch'"


@pytest.mark.parametrize("named", ["by run id", "by URI"])
async def test_a_failed_download_to_no_destination_leaves_no_temporary_folder(
    server_port: int, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: str
) -> None:
    """With no dst_path the download goes to a new temporary folder, which a failure
    left behind, empty, each time."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"no-dst-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        with pytest.raises(NotFoundError):
            if named == "by URI":
                await tracking.download_artifacts(f"runs:/{run_id}/nosuch")
            else:
                await tracking.download_artifacts(run_id, "nosuch")
        assert list(scratch.iterdir()) == []
        (tmp_path / "a.txt").write_text("a")
        await tracking.log_artifact(run_id, tmp_path / "a.txt")
        fetched = await tracking.download_artifacts(run_id, "a.txt")
        assert Path(fetched).parent.parent == scratch  # a success keeps its folder


async def test_a_model_version_from_uploaded_files(server_port: int, unique: str) -> None:
    async with (
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port) as artifacts,
        cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", server_port) as registry,
    ):
        stored = await artifacts.upload(f"models/{unique}/model.onnx", b"onnx-bytes")
        model = await registry.upsert_registered_model(RegisteredModel(f"uploaded-{unique}"))
        assert model.id is not None
        version = await registry.upsert_model_version(ModelVersion("v1"), model.id)
        artifact = await registry.upsert_model_artifact(
            ModelArtifact("model", uri=stored.artifact_uri, model_format_name="onnx"), version.id
        )
        assert artifact.uri == stored.artifact_uri == f"cairn-artifacts://default/{stored.path}"
        assert await registry.get_model_version_download_uri(model.name, 1) == stored.artifact_uri


async def test_reads_take_an_objects_artifact_uri(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    """The URI docs/artifacts.md says to share names the object to every read, also from
    a client of another project."""
    other = await new_project(server_port, f"reader-{unique}")
    async with (
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port) as artifacts,
        cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=other
        ) as elsewhere,
    ):
        stored = await artifacts.upload(f"shared/{unique}/notes.txt", b"shared bytes")
        uri = stored.artifact_uri
        for client in (artifacts, elsewhere):
            assert await client.read(uri) == b"shared bytes"
            assert b"".join([c async for c in client.open(uri)]) == b"shared bytes"
            assert (await client.stat(uri)).sha256 == stored.sha256
            written = await client.download(uri, tmp_path / client.project)
            assert written.read_bytes() == b"shared bytes"
        tree = await elsewhere.download(
            f"cairn-artifacts://default/shared/{unique}", tmp_path / "tree"
        )
        assert (tree / "notes.txt").read_bytes() == b"shared bytes"
