"""A download aimed into an entry of the model cache is refused before anything is
fetched: a file written there makes the next load take the entry for edited and drop
it, the download with it. The rest of the cache's folder is the user's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import cairn
from cairn.exceptions import FailedPreconditionError
from tests.integration.models.conftest import World


async def _loaded(world: World, tmp_path: Path, name: str) -> tuple[str, Path]:
    """A model's URI, logged and registered as version 1 of name, and its cache entry."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"w" * 100)
    info = await world.tracking.log_model(
        world.run_id, tmp_path / "model", "m", registered_model_name=name
    )
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    return info.model_uri, world.cache / loaded.relative_to(world.cache).parts[0]


def _refused_in(cache: Path, raised: pytest.ExceptionInfo[FailedPreconditionError]) -> None:
    assert raised.value.reason == "LOCAL_PATH_CONFLICT"
    assert raised.value.metadata["cache_dir"] == str(cache)


async def test_a_model_download_into_a_cache_entry_is_refused_and_the_entry_kept(
    world: World, tmp_path: Path, unique: str
) -> None:
    uri, entry = await _loaded(world, tmp_path, unique)
    held = sorted(entry.rglob("*"))

    for source in (f"models:/{unique}/1", uri):
        with pytest.raises(FailedPreconditionError) as raised:
            await world.tracking.download_artifacts(source, entry, cache_dir=world.cache)
        _refused_in(world.cache, raised)

    assert sorted(entry.rglob("*")) == held
    loaded = Path(await world.tracking.load_model(uri, cache_dir=world.cache))
    assert loaded.is_relative_to(entry)


async def test_a_run_artifact_download_or_get_model_into_a_cache_entry_is_refused(
    world: World, tmp_path: Path, unique: str
) -> None:
    _, entry = await _loaded(world, tmp_path, unique)
    manager = cairn.ModelManager(world.registry, entry / "dl", cache_dir=world.cache)
    downloads: dict[str, Callable[[], Awaitable[object]]] = {
        "mine": lambda: world.tracking.download_artifacts(
            world.run_id, "m", entry / "mine", cache_dir=world.cache
        ),
        "dl": lambda: manager.get_model(unique, download_file=True),
    }

    for folder, download in downloads.items():
        with pytest.raises(FailedPreconditionError) as raised:
            await download()
        _refused_in(world.cache, raised)
        assert not (entry / folder).exists()


async def test_a_download_beside_the_entries_is_made(
    world: World, tmp_path: Path, unique: str
) -> None:
    uri, _ = await _loaded(world, tmp_path, unique)

    written = await world.tracking.download_artifacts(
        uri, world.cache / "mine", cache_dir=world.cache
    )

    assert Path(written) == world.cache / "mine" / "m"
    assert (Path(written) / "model" / "weights.bin").read_bytes() == b"w" * 100
