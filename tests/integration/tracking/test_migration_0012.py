"""Migration 0012 on rows stored before it: artifact locations in one spelling, and
runs named by MLflow's tag mlflow.runName."""

from __future__ import annotations

import random
import uuid

import asyncpg

import cairn
from tests.conftest import repo_root

MIGRATION = "services/tracking/migrations/0012_one_spelling_and_run_name_tags.sql"


async def _migrate(pool: asyncpg.Pool) -> None:
    """The file again, as the runner applies it (in the schema, in a transaction); it
    leaves rows already written so as they are."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL search_path TO tracking")
        await conn.execute((repo_root() / MIGRATION).read_text())


async def test_locations_stored_in_other_spellings_are_written_in_one(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    experiment_id = await tracking.create_experiment(f"spelled-{unique}")
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    location = f"cairn-artifacts://default/odd-{unique}"
    odd = f" \tCairn-Artifacts://default/odd-\t{unique}"  # as CreateExperiment once took it
    await pool.execute(
        "UPDATE tracking.experiments SET artifact_location = $2 WHERE experiment_id = $1",
        int(experiment_id),
        odd,
    )
    await pool.execute(
        "UPDATE tracking.runs SET artifact_uri = $2 WHERE run_id = $1",
        uuid.UUID(run_id),
        f"{odd}/{run_id}/artifacts",
    )
    await _migrate(pool)
    assert (await tracking.get_experiment(experiment_id)).artifact_location == location
    run = await tracking.get_run(run_id)
    assert run.info.artifact_uri == f"{location}/{run_id}/artifacts"


async def test_a_run_tagged_with_its_name_takes_it(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    experiment_id = (await tracking.get_run(run_id)).info.experiment_id
    other = await tracking.create_run(experiment_id)
    unseen = await tracking.create_run(experiment_id)  # a space of no width: no name
    for run, value in (
        (run_id, "from-the-tag"),
        (other.info.run_id, " not a name "),
        (unseen.info.run_id, "name\u200b"),
    ):
        await pool.execute(
            "INSERT INTO tracking.tags (run_id, key, value) VALUES ($1, 'mlflow.runName', $2)",
            uuid.UUID(run),
            value,
        )
    before = await pool.fetchval(
        "SELECT bytes FROM tracking.run_sizes WHERE run_id = $1", uuid.UUID(run_id)
    )
    await _migrate(pool)
    renamed = await tracking.get_run(run_id)
    assert renamed.info.run_name == "from-the-tag" and "mlflow.runName" not in renamed.data.tags
    after = await pool.fetchval(
        "SELECT bytes FROM tracking.run_sizes WHERE run_id = $1", uuid.UUID(run_id)
    )
    assert before - after == len("mlflow.runName") + len("from-the-tag") + 32
    kept = await tracking.get_run(other.info.run_id)  # no name: it stays a tag
    assert kept.data.tags["mlflow.runName"] == " not a name "
    assert (await tracking.get_run(unseen.info.run_id)).data.tags["mlflow.runName"] == "name\u200b"
    await tracking.delete_tag(other.info.run_id, "mlflow.runName")  # and delete_tag drops it
    assert "mlflow.runName" not in (await tracking.get_run(other.info.run_id)).data.tags


async def test_a_location_of_any_length_allowed_is_indexed(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """2,000 characters of 3 bytes each (that do not compress) passed the 2,704 bytes of
    an index entry of the whole location: CreateExperiment answered INTERNAL, and the
    migration failed on such a location stored before."""
    rng = random.Random(7)
    name = "".join(chr(0x4E00 + rng.randrange(20_000)) for _ in range(2000))
    location = f"cairn-artifacts://default/{unique}/{name}"
    experiment_id = await tracking.create_experiment(f"long-{unique}", artifact_location=location)
    assert (await tracking.get_experiment(experiment_id)).artifact_location == location
    await pool.execute("DROP INDEX tracking.experiments_by_location")
    await _migrate(pool)  # made again over the stored location
    assert await pool.fetchval("SELECT to_regclass('tracking.experiments_by_location')")
