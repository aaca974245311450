"""A filesystem artifact root the server cannot write refuses the server at start,
naming CAIRN_ARTIFACT_ROOT, rather than serving every upload UNAVAILABLE for ever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn_server import catalog
from cairn_server.artifacts import SPEC as ARTIFACTS
from cairn_server.common import server
from cairn_server.common.config import Config
from cairn_server.common.service import Unservable
from tests.conftest import new_project, with_overrides


async def _check(pool: asyncpg.Pool, config: Config) -> None:
    assert ARTIFACTS.servable is not None, "the artifacts service checks nothing at start"
    await ARTIFACTS.servable(pool, config)


async def test_a_server_whose_artifact_root_is_under_proc_does_not_start(
    config: Config, unique: str
) -> None:
    """The audit's root: before, the server reported SERVING and every upload answered
    UNAVAILABLE, "the artifact store's file system failed ...; call again"."""
    unusable = with_overrides(config, artifact_root=f"/proc/cairn-artifacts-{unique}")
    # A server that started would serve until stopped: the timeout fails the test.
    with pytest.raises(Unservable) as refused:
        async with asyncio.timeout(60):
            await server.run(unusable, catalog.select(["artifacts"]))
    message = str(refused.value)
    assert f"the artifact root /proc/cairn-artifacts-{unique} cannot be used" in message
    assert "set CAIRN_ARTIFACT_ROOT (--artifact-root) to a directory" in message


async def test_a_root_below_a_file_is_refused_with_the_reason(
    config: Config, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    root = tmp_path / "a-file" / "artifacts"
    with pytest.raises(Unservable) as refused:
        await _check(pool, with_overrides(config, artifact_root=str(root)))
    assert f"the artifact root {root} cannot be used (Not a directory" in str(refused.value)


async def test_the_default_root_is_named_with_the_data_dir_it_lies_in(
    config: Config, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """An empty CAIRN_ARTIFACT_ROOT means <CAIRN_DATA_DIR>/artifacts: the message says so,
    since the operator set neither path to the one refused."""
    (tmp_path / "data").write_bytes(b"")
    unusable = with_overrides(config, artifact_root="", data_dir=str(tmp_path / "data"))
    with pytest.raises(Unservable) as refused:
        await _check(pool, unusable)
    message = str(refused.value)
    assert f"the artifact root {tmp_path / 'data' / 'artifacts'} cannot be used" in message
    assert "(--artifact-root, by default <CAIRN_DATA_DIR>/artifacts)" in message


async def test_a_usable_root_is_made_and_left_as_it_was(
    config: Config, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The check writes a file as an upload would and removes it again: the janitor and
    listings find nothing it left."""
    root = tmp_path / "new" / "root"
    await _check(pool, with_overrides(config, artifact_root=str(root)))
    assert root.is_dir()
    assert [path for path in root.rglob("*") if not path.is_dir()] == []


async def test_the_s3_backend_is_not_checked_for_a_root_it_does_not_use(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    s3 = with_overrides(
        config,
        artifact_backend="s3",
        s3_endpoint="s3.invalid:9000",
        artifact_root=f"/proc/unused-{unique}",
    )
    await _check(pool, s3)


async def test_a_folder_of_the_root_linked_elsewhere_is_written_through(
    config: Config, server_port: int, unique: str, tmp_path: Path
) -> None:
    """A project's folder moved to another disk and linked back: every key under it
    resolved outside the root, and was refused as escaping it, INTERNAL."""
    project = await new_project(server_port, f"linked-{unique}")
    elsewhere = tmp_path / "another-disk"
    elsewhere.mkdir()
    objects = config.artifact_dir / "_objects"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / project).symlink_to(elsewhere, target_is_directory=True)
    try:
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as client:
            await client.upload("model.bin", b"weights")
            assert await client.read("model.bin") == b"weights"
    finally:
        (objects / project).unlink()
    assert [path.read_bytes() for path in elsewhere.rglob("*") if path.is_file()] == [b"weights"]
