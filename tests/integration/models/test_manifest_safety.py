"""A manifest is read from the artifact service, where whoever may write the run can
change it: its paths never lead the client outside the model's directory, and a
malformed one is a DataLossError (INVALID_MODEL_MANIFEST), never a KeyError."""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cairn.exceptions import DataLossError, FailedPreconditionError, NotFoundError
from cairn.models import MANIFEST, Manifest
from cairn.models._manifest import MAX_MANIFEST_BYTES, entry_of
from tests.integration.models.conftest import World


def _store_path(artifact_uri: str) -> str:
    return artifact_uri.split("/", 3)[3]  # cairn-artifacts://<project>/<path>


async def _tampered(world: World, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    """A files model whose manifest was rewritten by change; its URI."""
    (tmp_path / "m.txt").write_text("hello")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "tampered")
    path = f"{_store_path(info.artifact_uri)}/{MANIFEST}"
    raw = json.loads(await world.store.read(path))
    change(raw)
    await world.store.upload(path, json.dumps(raw).encode(), overwrite=True)
    return info.model_uri


async def test_a_manifest_file_outside_the_cache_is_never_written(
    world: World, tmp_path: Path
) -> None:
    victim = tmp_path / "outside" / "pwned.txt"
    (tmp_path / "payload").write_bytes(b"attacker bytes")
    entry = entry_of(tmp_path / "payload")
    (tmp_path / "m.txt").write_text("hello")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "evil")
    base = _store_path(info.artifact_uri)
    # The bytes sit where joining the absolute path to the model's path leads.
    await world.store.upload(f"{base}/{str(victim).lstrip('/')}", b"attacker bytes")
    raw = json.loads(await world.store.read(f"{base}/{MANIFEST}"))
    raw["files"][str(victim)] = {"size": entry.size, "sha256": entry.sha256}
    await world.store.upload(f"{base}/{MANIFEST}", json.dumps(raw).encode(), overwrite=True)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    assert raised.value.reason == "INVALID_MODEL_MANIFEST"
    assert "not relative" in raised.value.message
    assert not victim.exists()
    with pytest.raises(DataLossError):
        await world.tracking.download_artifacts(info.model_uri, tmp_path / "dl")
    assert not victim.exists()


@pytest.mark.parametrize("option", ["/etc/passwd", "../../../etc/passwd", "m.txt\x00.x"])
async def test_the_files_flavor_returns_no_path_outside_the_model(
    world: World, tmp_path: Path, option: str
) -> None:
    """Refused before a byte is fetched: the path option was checked only as the model
    loaded, out of a cache entry already filled, and one holding a NUL raised a bare
    ValueError."""

    def escape(raw: dict[str, Any]) -> None:
        raw["options"]["path"] = option

    uri = await _tampered(world, tmp_path, escape)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(uri, cache_dir=world.cache)
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"
    assert not world.cache.exists() or not any(world.cache.iterdir())


async def test_a_pickle_path_option_outside_the_model_is_never_unpickled(
    world: World, tmp_path: Path
) -> None:
    info = await world.tracking.log_model(world.run_id, {"a": 1}, "pickled", flavor="pickle")
    path = f"{_store_path(info.artifact_uri)}/{MANIFEST}"
    raw = json.loads(await world.store.read(path))
    raw["options"]["path"] = "../../../elsewhere.pkl"
    await world.store.upload(path, json.dumps(raw).encode(), overwrite=True)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(info.model_uri, allow_pickle=True, cache_dir=world.cache)
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"


@pytest.mark.parametrize(
    "key",
    ["/etc/passwd", "a/../../x", "./m.txt", "a//b", "a\\b", "", MANIFEST, "sub/..", "a\x00b"],
)
def test_manifest_file_keys_must_be_plain_relative_paths(key: str) -> None:
    raw = {
        "flavor": "files",
        "options": {"path": "m.txt"},
        "files": {key: {"size": 1, "sha256": "0" * 64}},
        "python_version": "3.12.0",
        "format": 1,
    }
    with pytest.raises(DataLossError) as raised:
        Manifest.from_json(json.dumps(raw).encode(), "here")
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("options", ["path"]),
        ("flavor", 3),
        ("format", 2),
        ("format", None),
        ("files", {"m.txt": {"size": "1", "sha256": "0" * 64}}),
        ("files", {"m.txt": {"size": 1, "sha256": "nothex"}}),
        ("files", {"m.txt": [1]}),
        ("files", []),
        ("libraries", {"numpy": 2}),
        ("metadata", "text"),
        ("surprise", 1),
    ],
)
def test_a_malformed_manifest_is_a_data_loss_error(field: str, value: Any) -> None:
    raw = {
        "flavor": "files",
        "options": {"path": "m.txt"},
        "files": {"m.txt": {"size": 1, "sha256": "0" * 64}},
        "python_version": "3.12.0",
        "format": 1,
        field: value,
    }
    with pytest.raises(DataLossError) as raised:
        Manifest.from_json(json.dumps(raw).encode(), "here")
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"


async def test_a_malformed_manifest_in_the_store_is_a_data_loss_error(
    world: World, tmp_path: Path
) -> None:
    def bad_options(raw: dict[str, Any]) -> None:
        raw["options"] = "m.txt"

    uri = await _tampered(world, tmp_path, bad_options)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(uri, cache_dir=world.cache)
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"


async def test_an_oversized_manifest_is_refused_before_it_is_read_whole(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "m.txt").write_text("hello")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "huge")
    path = f"{_store_path(info.artifact_uri)}/{MANIFEST}"
    await world.store.upload(path, b" " * (MAX_MANIFEST_BYTES + 1), overwrite=True)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"
    assert "larger than" in raised.value.message


async def test_an_oversized_manifest_where_a_model_is_logged_again_is_not_read_whole(
    world: World, tmp_path: Path
) -> None:
    """log_model read what lay at a model's manifest whole to compare it with the model
    logged again there: an object of any size, held in memory."""
    (tmp_path / "m.txt").write_text("hello")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "huge")
    path = f"{_store_path(info.artifact_uri)}/{MANIFEST}"
    await world.store.upload(path, b" " * (8 * MAX_MANIFEST_BYTES), overwrite=True)

    tracemalloc.start()
    try:
        with pytest.raises(DataLossError) as raised:
            await world.tracking.log_model(
                world.run_id, tmp_path / "m.txt", "huge", registered_model_name="huge"
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_MANIFEST_BYTES  # the object is 8 times that
    assert raised.value.reason == "INVALID_MODEL_MANIFEST"
    assert "larger than" in raised.value.message


async def test_files_this_machine_cannot_hold_apart_are_refused_before_a_byte(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model logged on Linux with "w.bin" and "W.bin", loaded on macOS (which opens
    both as one file): the load left one file where the manifest names two."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"lower")
    (model / "W.bin").write_bytes(b"UPPER")
    info = await world.tracking.log_model(world.run_id, model, "twins")
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(FailedPreconditionError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert raised.value.reason == "LOCAL_PATH_CONFLICT"
    assert not any(p.is_file() and p.name != MANIFEST for p in world.cache.rglob("*.bin"))


async def test_a_users_own_file_of_the_manifests_name_makes_no_model_of_its_folder(
    world: World, tmp_path: Path
) -> None:
    """A folder of data holding a cairn-model.json of the user's (no manifest any Cairn
    wrote) downloaded by its run form, but by its URI was DataLossError
    INVALID_MODEL_MANIFEST, "log the model again": both forms now fetch its files, and
    loading it is NotFoundError, as for a folder without the file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / MANIFEST).write_text('{"user": "config"}')
    (data / "x.csv").write_text("1,2")
    await world.tracking.log_artifacts(world.run_id, data, "data")

    by_run = Path(await world.tracking.download_artifacts(world.run_id, "data", tmp_path / "a"))
    uri = f"runs:/{world.run_id}/data"
    by_uri = Path(await world.tracking.download_artifacts(uri, tmp_path / "b"))

    for fetched in (by_run, by_uri):
        assert (fetched / MANIFEST).read_text() == '{"user": "config"}'
        assert (fetched / "x.csv").read_text() == "1,2"
    with pytest.raises(NotFoundError) as no_model:  # as of a folder without the file
        await world.tracking.load_model(uri, cache_dir=world.cache)
    assert no_model.value.reason == "OBJECT_NOT_FOUND"

    # A manifest a Cairn wrote, broken, or bytes that are no JSON: a damaged model.
    broken = await _tampered(world, tmp_path, lambda raw: raw.pop("files"))
    (tmp_path / "m.txt").write_text("hello")
    damaged = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "damaged")
    manifest = f"{_store_path(damaged.artifact_uri)}/{MANIFEST}"
    await world.store.upload(manifest, b'{"format": 1, "fla\x00', overwrite=True)
    for model_uri in (broken, damaged.model_uri):
        with pytest.raises(DataLossError) as refused:
            await world.tracking.download_artifacts(model_uri, tmp_path / "c")
        assert refused.value.reason == "INVALID_MODEL_MANIFEST"
