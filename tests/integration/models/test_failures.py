"""A model journey that fails part-way, or meets a changed copy: a download cut short by
a full disk leaves no model behind, an edit of the shared cache is never served, a
manifest naming a directory is refused before any byte moves, and a log_model that
stopped before its manifest can be run again."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import cairn
from cairn.exceptions import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
)
from cairn.models import MANIFEST
from tests.conftest import disk_full_after
from tests.integration.models.conftest import World

_WRITABLE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_copy_cut_short_leaves_the_earlier_one_and_no_part(
    world: World, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "a" / "model").mkdir(parents=True)
    (tmp_path / "a" / "model" / "weights.bin").write_bytes(b"a" * 3_000_000)
    (tmp_path / "b" / "model").mkdir(parents=True)
    (tmp_path / "b" / "model" / "weights.bin").write_bytes(b"b" * 3_000_000)
    first = await world.tracking.log_model(world.run_id, tmp_path / "a" / "model", "m")
    name = f"copied-{unique}"
    second = await world.tracking.log_model(
        await world.new_run(), tmp_path / "b" / "model", "m", registered_model_name=name
    )
    dst = tmp_path / "dst"
    await world.tracking.download_artifacts(first.model_uri, dst, cache_dir=world.cache)
    await world.tracking.load_model(second.model_uri, cache_dir=world.cache)  # cached whole
    earlier = _files(dst)
    manager = cairn.ModelManager(world.registry, tmp_path / "devo", cache_dir=world.cache)

    with disk_full_after(1_000_000):
        with pytest.raises(FailedPreconditionError) as copying:
            await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=world.cache)
        with pytest.raises(FailedPreconditionError) as devo:
            await manager.get_model(name, download_file=True)

    assert copying.value.reason == devo.value.reason == "LOCAL_WRITE_FAILED"
    assert copying.value.metadata["errno"] == "EFBIG"
    # The earlier download is whole and still marked complete; nothing half-written stays.
    assert _files(dst) == earlier
    assert sorted(p.name for p in dst.iterdir()) == ["m"]
    assert _files(tmp_path / "devo") == {}
    written = await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=world.cache)
    assert _files(Path(written)) == {
        "model/weights.bin": b"b" * 3_000_000,
        MANIFEST: (world.cache / second.manifest_sha256 / MANIFEST).read_bytes(),
    }


@pytest.mark.parametrize("where", ["a file", "under a file"])
async def test_a_download_path_a_file_holds_is_a_path_conflict(
    world: World, tmp_path: Path, unique: str, where: str
) -> None:
    """As download_artifacts to the same place says; get_model raised the bare
    FileExistsError or NotADirectoryError of making its download_path, then failed
    LOCAL_WRITE_FAILED ('File exists'), as if the disk had refused it."""
    (tmp_path / "w.onnx").write_bytes(b"w")
    (tmp_path / "a-file").write_bytes(b"f")
    name = f"to-a-file-{unique}"
    adding = cairn.ModelManager(world.registry, tmp_path / "devo", cache_dir=world.cache)
    await adding.add_model(name, "ONNX", tmp_path / "w.onnx")
    target = tmp_path / "a-file" if where == "a file" else tmp_path / "a-file" / "sub"
    manager = cairn.ModelManager(world.registry, target, cache_dir=world.cache)

    with pytest.raises(FailedPreconditionError) as refused:
        await manager.get_model(name, download_file=True)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["local_path"] == str(tmp_path / "a-file")
    assert (tmp_path / "a-file").read_bytes() == b"f"


async def test_an_edit_of_a_loaded_model_is_never_served_again(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"threshold": 0.5}')
    info = await world.tracking.log_model(world.run_id, tmp_path / "model", "m")

    config = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    config = config / "config.json"
    assert not config.stat().st_mode & _WRITABLE  # read-only: the cache is shared
    # Someone forces it (or is root), with the same length: the size check alone passes.
    config.chmod(0o644)
    config.write_text('{"threshold": 0.9}')

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    assert (again / "config.json").read_text() == '{"threshold": 0.5}'
    # A download is the user's own copy, to change at will.
    written = Path(await world.tracking.download_artifacts(info.model_uri, tmp_path / "dst"))
    assert (written / "model" / "config.json").stat().st_mode & stat.S_IWUSR


@pytest.mark.parametrize("change", ["a directory", "a larger object"])
async def test_a_manifest_entry_not_naming_the_logged_object_is_refused_first(
    world: World, tmp_path: Path, change: str
) -> None:
    (tmp_path / "m.txt").write_text("hello")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "model")
    base = info.artifact_uri.split("/", 3)[3]
    raw = json.loads(await world.store.read(f"{base}/{MANIFEST}"))
    if change == "a directory":
        await world.store.upload(f"{base}/blob/part0", b"z" * 1_000_000)
        raw["files"]["blob"] = {"size": 1, "sha256": "0" * 64}
    else:
        await world.store.upload(f"{base}/m.txt", b"z" * 1_000_000, overwrite=True)
    await world.store.upload(f"{base}/{MANIFEST}", json.dumps(raw).encode(), overwrite=True)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    expected = "INVALID_MODEL_MANIFEST" if change == "a directory" else "CHECKSUM_MISMATCH"
    assert raised.value.reason == expected
    assert [p.name for p in world.cache.iterdir()] == []  # nothing kept of it


async def test_a_version_whose_files_are_gone_says_so(world: World, tmp_path: Path) -> None:
    """It said its source held no model logged with log_model, as for a path that never
    held one, though the version was registered with one (its run purged, say)."""
    (tmp_path / "m.txt").write_text("weights")
    info = await world.tracking.log_model(
        world.run_id, tmp_path / "m.txt", "model", registered_model_name="files-gone"
    )
    run = await world.tracking.get_run(world.run_id)
    root = urlsplit(run.info.artifact_uri).path.strip("/")
    await world.store.delete(f"{root}/{info.artifact_path}", recursive=True)
    with pytest.raises(NotFoundError) as missing:
        await world.tracking.load_model("models:/files-gone/1", cache_dir=world.cache)
    assert missing.value.reason == "OBJECT_NOT_FOUND"
    assert "registered with a model logged with log_model, whose files are gone" in str(
        missing.value.message
    )


@pytest.mark.parametrize("reader", ["download_artifacts", "load_model"])
async def test_a_file_of_the_manifest_gone_from_the_store_is_named(
    world: World, tmp_path: Path, reader: str
) -> None:
    """It read "run <id> has no artifact at 'model'" (the folder the caller asked for,
    whose manifest is there), or named the store's path of the file, not the model's."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.txt").write_text("a")
    (tmp_path / "m" / "b.txt").write_text("b")
    info = await world.tracking.log_model(world.run_id, tmp_path / "m", "model")
    base = info.artifact_uri.split("/", 3)[3]
    await world.store.delete(f"{base}/m/b.txt")
    uri = f"runs:/{world.run_id}/model"
    with pytest.raises(DataLossError) as missing:
        if reader == "load_model":
            await world.tracking.load_model(uri, cache_dir=world.cache)
        else:
            await world.tracking.download_artifacts(uri, tmp_path / "out", cache_dir=world.cache)
    assert missing.value.reason == "OBJECT_BYTES_MISSING"
    assert missing.value.message == (
        f"'m/b.txt' of the model at {uri} is gone from the store: "
        "it was deleted since the model was logged"
    )
    assert missing.value.metadata["file"] == "m/b.txt"
    assert [p.name for p in world.cache.iterdir()] == []  # nothing kept of it


async def test_log_model_completes_what_an_earlier_attempt_left(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "m.txt").write_text("hello")
    # An earlier log_model stored the file, then lost its connection before the manifest.
    await world.tracking.log_artifact(world.run_id, tmp_path / "m.txt", "model")

    info = await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "model")

    loaded = await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert Path(loaded).read_text() == "hello"
    # Other bytes under a name no manifest covers: what to do is in the error.
    await world.tracking.log_artifact(world.run_id, tmp_path / "m.txt", "other")
    (tmp_path / "m.txt").write_text("hello, again")
    with pytest.raises(AlreadyExistsError) as raised:
        await world.tracking.log_model(world.run_id, tmp_path / "m.txt", "other")
    assert "stopped part-way" in raised.value.message
    assert "delete the directory" in raised.value.message
    assert raised.value.metadata["directory"].endswith("/artifacts/other")
