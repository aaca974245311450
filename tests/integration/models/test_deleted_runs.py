"""A deleted run, or a run of a deleted experiment, takes no artifact and no model, as
it takes no metric: what was stored there would go with the run at the next garbage
collection, a model version registered from it too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from cairn.exceptions import FailedPreconditionError, NotFoundError
from cairn.models._paths import MANIFEST
from tests.conftest import another_transaction, eventually, holds_up_another
from tests.integration.models.conftest import World

Write = Callable[[World, str, Path], Awaitable[object]]


async def _log_artifact(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_artifact(run_id, folder / "f.txt", "files")


async def _log_artifacts(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_artifacts(run_id, folder, "tree")


async def _log_text(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_text(run_id, "text", "notes.txt")


async def _log_dict(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_dict(run_id, {"a": 1}, "config.json")


async def _log_table(world: World, run_id: str, folder: Path) -> None:
    await world.tracking.log_table(run_id, {"a": [1, 2]}, "table.json")


async def _log_image(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_image(run_id, [[0.0, 1.0]], key="image", step=0)


async def _log_model(world: World, run_id: str, folder: Path) -> object:
    return await world.tracking.log_model(
        run_id, folder / "f.txt", "model", registered_model_name="from-a-deleted-run"
    )


WRITES = [_log_artifact, _log_artifacts, _log_text, _log_dict, _log_table, _log_image, _log_model]


@pytest.mark.parametrize("write", WRITES, ids=lambda write: write.__name__.lstrip("_"))
@pytest.mark.parametrize("deleted", ["run", "experiment"])
async def test_a_deleted_run_takes_no_artifact_or_model(
    world: World, tmp_path: Path, write: Write, deleted: str
) -> None:
    (tmp_path / "f.txt").write_text("weights")
    await world.tracking.log_text(world.run_id, "kept", "before.txt")
    if deleted == "run":
        await world.tracking.delete_run(world.run_id)
    else:
        await world.tracking.delete_experiment(world.experiment_id)

    with pytest.raises(FailedPreconditionError) as refused:
        await write(world, world.run_id, tmp_path)

    assert refused.value.reason == f"{deleted.upper()}_DELETED"
    assert [a.path for a in await world.tracking.list_artifacts(world.run_id)] == ["before.txt"]
    with pytest.raises(NotFoundError):
        await world.registry.get_registered_model("from-a-deleted-run")
    # Restored, it takes them again.
    if deleted == "run":
        await world.tracking.restore_run(world.run_id)
    else:
        await world.tracking.restore_experiment(world.experiment_id)
    await write(world, world.run_id, tmp_path)


async def test_a_run_deleted_while_its_model_goes_up_gets_no_version(
    world: World, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    """The run was checked once, before the files: deleted while they went up, it had a
    version registered of them, which the next collection broke (its files gone with
    the run, its manifest left)."""
    (tmp_path / "f.txt").write_text("weights")
    run = await world.tracking.get_run(world.run_id)
    root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{world.project}/")
    manifest = f"{world.project}/{root}/model/{MANIFEST}"  # the last file to go up
    async with another_transaction(pool) as holder:
        await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", manifest)
        logging = asyncio.ensure_future(
            world.tracking.log_model(
                world.run_id, tmp_path / "f.txt", "model", registered_model_name="raced"
            )
        )
        await eventually(lambda: holds_up_another(holder), what="the manifest's publication")
        await world.tracking.delete_run(world.run_id)
    with pytest.raises(FailedPreconditionError) as refused:
        await logging
    assert refused.value.reason == "RUN_DELETED"
    with pytest.raises(NotFoundError):
        await world.registry.get_registered_model("raced")
