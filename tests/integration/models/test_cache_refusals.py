"""The model cache where the file system refuses a change: a cache this process may read
but not change is still served once verified, an edited entry that cannot be moved aside
(on Windows, a file of it is open) is never served, and a fill stats each stored file
once and seals the entry off the event loop, to its end even when the load is
cancelled meanwhile. The refusals are simulated: a read-only
mount needs privileges, and Windows' open files need Windows."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients import _file_batches
from cairn.exceptions import FailedPreconditionError
from cairn.models import _cache
from tests.conftest import on_event_loop
from tests.integration.models.conftest import World


async def _logged(world: World, tmp_path: Path) -> cairn.models.ModelInfo:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"threshold": 0.5}')
    (tmp_path / "model" / "weights.bin").write_bytes(b"w" * 1000)
    return await world.tracking.log_model(world.run_id, tmp_path / "model", "m")


async def test_a_cache_that_cannot_be_changed_is_served_once_verified(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await _logged(world, tmp_path)
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    # A copied cache: every file's times are later than its manifest's.
    for file in loaded.iterdir():
        os.utime(file)

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))

    monkeypatch.setattr(os, "utime", read_only)
    monkeypatch.setattr(Path, "chmod", read_only)
    monkeypatch.setattr(_cache, "_VERIFIED", {})
    monkeypatch.setattr(_cache, "_SETTLED_NS", 0)  # the copy is older than a clock tick
    hashed: list[Path] = []
    holds = _cache.holds

    def hashing(file: Path, expected: Any) -> bool:
        hashed.append(file)
        return holds(file, expected)

    monkeypatch.setattr(_cache, "holds", hashing)
    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert again == loaded
    assert (again / "config.json").read_text() == '{"threshold": 0.5}'
    assert sorted(file.name for file in hashed) == ["config.json", "weights.bin"]
    # Hashed once by this process, not at every load.
    await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert len(hashed) == 2


async def test_an_edited_entry_that_cannot_be_moved_aside_is_never_served(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await _logged(world, tmp_path)
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    config = loaded / "config.json"
    config.chmod(0o644)
    config.write_text('{"threshold": 0.9}')  # same length: only its sha256 tells
    rename = Path.rename

    def held_open(self: Path, target: Any) -> Any:
        if str(target).endswith(".stale"):  # moving the entry aside
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", held_open)
    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["path"] == str(world.cache / info.manifest_sha256)

    monkeypatch.setattr(Path, "rename", rename)  # the file was closed
    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    assert (again / "config.json").read_text() == '{"threshold": 0.5}'


@pytest.mark.parametrize(
    ("batch_bytes", "looked_up"),
    [(0, ["config.json", "weights.bin"]), (_file_batches.BATCH_BYTES, [])],
    ids=["each file alone", "in a batch"],
)
async def test_a_fill_stats_each_object_once_and_seals_off_the_event_loop(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_bytes: int,
    looked_up: list[str],
) -> None:
    """A file fetched alone is looked up once (stat), then downloaded; one of a batch not at all
    (DownloadFiles describes it)."""
    monkeypatch.setattr(_file_batches, "BATCH_BYTES", batch_bytes)
    info = await _logged(world, tmp_path)
    stats: list[str] = []
    stat = cairn.ArtifactClient.stat

    async def counted(self: cairn.ArtifactClient, path: str, **kwargs: Any) -> Any:
        stats.append(path)
        return await stat(self, path, **kwargs)

    sealed_on_loop: list[bool] = []
    seal = _cache._seal

    def sealing(*args: Any) -> None:
        sealed_on_loop.append(on_event_loop())
        seal(*args)

    monkeypatch.setattr(cairn.ArtifactClient, "stat", counted)
    monkeypatch.setattr(_cache, "_seal", sealing)
    await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    assert sorted(path.rsplit("/", 1)[-1] for path in stats) == looked_up
    assert sealed_on_loop == [False]


async def test_a_load_cancelled_while_its_entry_is_sealed_leaves_the_entry_whole(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await _logged(world, tmp_path)
    sealed, release, removing = threading.Event(), threading.Event(), threading.Event()
    seal, remove = _cache._seal, _cache.remove

    def held_after_sealing(*args: Any) -> None:
        seal(*args)
        sealed.set()
        release.wait(10)

    def removal(path: Path) -> None:
        removing.set()
        remove(path)

    monkeypatch.setattr(_cache, "_seal", held_after_sealing)
    monkeypatch.setattr(_cache, "remove", removal)
    loading = asyncio.ensure_future(
        world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    )
    assert await asyncio.to_thread(sealed.wait, 10)
    loading.cancel()
    # The scratch folder must not be removed while it is being put in place.
    assert not await asyncio.to_thread(removing.wait, 0.5)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await loading

    entry = world.cache / info.manifest_sha256
    assert (entry / "model" / "config.json").read_text() == '{"threshold": 0.5}'
    assert sorted(p.name for p in world.cache.iterdir()) == [entry.name]


async def test_an_entry_folder_without_its_manifest_is_replaced(
    world: World, tmp_path: Path
) -> None:
    info = await _logged(world, tmp_path)
    left = world.cache / info.manifest_sha256 / "model"
    left.mkdir(parents=True)  # what an interrupted rm -rf, say, leaves
    (left / "config.json").write_text("{}")

    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert (loaded / "config.json").read_text() == '{"threshold": 0.5}'
