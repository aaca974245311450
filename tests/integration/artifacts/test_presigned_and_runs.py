"""Presigned URLs, a run's artifacts through TrackingClient, and a model version whose
artifact names an uploaded object."""

import asyncio
import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

import cairn
from cairn.exceptions import DataLossError, FailedPreconditionError, NotFoundError
from cairn.types import ModelArtifact, ModelVersion, RegisteredModel


def _http(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None
) -> bytes:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        return response.read()


async def test_presigned_get_and_put_on_s3(store: cairn.ArtifactClient) -> None:
    if store.backend != "s3":
        with pytest.raises(FailedPreconditionError) as raised:
            await store.presigned_url("x", "PUT", content_type="text/plain")
        assert raised.value.reason == "PRESIGN_UNSUPPORTED"
        return
    await store.upload("shared.txt", b"read me directly")
    url = await store.presigned_url("shared.txt", expires_in=60)
    assert await asyncio.to_thread(_http, url.url) == b"read me directly"

    body = b"uploaded around the service"
    put = await store.presigned_url(
        "direct/upload.bin", "PUT", content_type="application/octet-stream"
    )
    assert put.headers == {"Content-Type": "application/octet-stream"}
    with pytest.raises(NotFoundError):
        await store.stat("direct/upload.bin")  # not recorded before confirmation
    await asyncio.to_thread(_http, put.url, "PUT", body, put.headers)
    info = await store.confirm_upload("direct/upload.bin", hashlib.sha256(body).hexdigest())
    assert (info.size, info.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert await store.read("direct/upload.bin") == body

    await asyncio.to_thread(_http, put.url, "PUT", b"tampered", put.headers)
    with pytest.raises(DataLossError):
        await store.confirm_upload("direct/upload.bin", hashlib.sha256(body).hexdigest())
    with pytest.raises(NotFoundError):
        await store.confirm_upload("never/uploaded.bin")


async def test_presigned_get_of_a_missing_object_is_not_found(store: cairn.ArtifactClient) -> None:
    if store.backend == "s3":
        with pytest.raises(NotFoundError):
            await store.presigned_url("missing.txt")


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


async def test_a_model_version_from_uploaded_files(server_port: int, unique: str) -> None:
    async with (
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port) as artifacts,
        cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", server_port) as registry,
    ):
        stored = await artifacts.upload(f"models/{unique}/model.onnx", b"onnx-bytes")
        model = await registry.upsert_registered_model(RegisteredModel(f"uploaded-{unique}"))
        version = await registry.upsert_model_version(ModelVersion("v1"), model.id)
        artifact = await registry.upsert_model_artifact(
            ModelArtifact("model", uri=stored.uri, model_format_name="onnx"), version.id
        )
        assert artifact.uri == stored.uri
        assert await registry.get_model_version_download_uri(model.name, 1) == stored.uri
