"""Lineage in one call: what produced a model version (its run, the run's inputs and
params), and which runs of the project used an artifact, in any experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cairn.exceptions import InvalidArgumentError, NotFoundError
from cairn.registry.v1 import registry_service_pb2 as registry_api
from cairn.types import RunInput
from tests.conftest import repo_root
from tests.integration.models.conftest import World

MIGRATION = "services/registry/migrations/0011_run_ids_in_lower_case.sql"


async def test_what_produced_a_version(world: World, unique: str) -> None:
    name = f"lineage-{unique}"
    train = RunInput("cairn-artifacts://x/data/train.csv", "dataset", "train", context="training")
    await world.tracking.log_inputs(world.run_id, [train])
    await world.tracking.log_param(world.run_id, "lr", 0.1)
    await world.tracking.log_model(
        world.run_id, [1, 2], "model", flavor="pickle", registered_model_name=name
    )
    await world.registry.create_model_version(name, "s3://bucket/elsewhere")

    lineage = await world.registry.get_model_version_lineage(name, 1)
    assert lineage.model_version.version == 1
    assert lineage.run is not None and lineage.run.info.run_id == world.run_id
    assert lineage.inputs == [train]
    assert lineage.params == {"lr": "0.1"}

    orphan = await world.registry.get_model_version_lineage(name, 2)
    assert (orphan.run, orphan.inputs, orphan.params) == (None, [], {})


async def test_which_runs_used_an_artifact_across_experiments(world: World) -> None:
    dataset = await world.registry.create_artifact("clicks", "dataset", files=b"1,2\n")
    other_version = await world.registry.create_artifact("clicks", "dataset", files=b"3\n")
    other_experiment = await world.tracking.create_experiment("elsewhere")
    users = [
        world.run_id,
        (await world.tracking.create_run(other_experiment)).info.run_id,
    ]
    deleted = await world.new_run()
    for run_id in [*users, deleted]:
        await world.tracking.log_inputs(run_id, [dataset.as_input()])
    bystander = await world.new_run()
    await world.tracking.log_inputs(bystander, [other_version.as_input()])
    await world.tracking.delete_run(deleted)

    found = await world.tracking.get_runs_using(dataset.uri)

    assert sorted(r.info.run_id for r in found) == sorted([*users, deleted])
    active = await world.tracking.get_runs_using(dataset, run_view_type=1)
    assert sorted(r.info.run_id for r in active) == sorted(users)
    assert [r.info.run_id for r in await world.tracking.get_runs_using(other_version)] == [
        bystander
    ]
    assert await world.tracking.get_runs_using("cairn-artifacts://x/never-used") == []


async def test_versions_are_found_by_their_run(world: World, unique: str) -> None:
    name = f"by-run-{unique}"
    await world.tracking.log_model(
        world.run_id, [1], "model", flavor="pickle", registered_model_name=name
    )
    await world.tracking.log_model(
        await world.new_run(), [2], "model", flavor="pickle", registered_model_name=name
    )
    found = await world.registry.search_model_versions(f"run_id = '{world.run_id}'")
    assert [(v.version, v.run_id) for v in found] == [(1, world.run_id)]


async def test_a_version_naming_another_systems_run_has_no_run_here(
    world: World, unique: str
) -> None:
    """An imported version may name an MLflow or Kubeflow run id, which is no id of a
    Cairn run: the run is not found, as the docstring says, not an INVALID_ARGUMENT
    about a field the caller never sent."""
    name = f"imported-{unique}"
    await world.registry.create_registered_model(name)
    await world.registry.create_model_version(name, "s3://bucket/m", run_id="mlflow-run-abc")
    with pytest.raises(NotFoundError) as missing:
        await world.registry.get_model_version_lineage(name, 1)
    assert missing.value.reason == "RUN_NOT_FOUND"


async def test_a_version_given_its_run_id_in_capitals_is_found_by_its_run(
    world: World, unique: str
) -> None:
    """The tracking service takes a run id in either case; the registry stored it as
    given and compared exactly, so search_model_versions("run_id = '<id>'") missed a
    version registered with run_id=run_id.upper() that its lineage found. A Cairn run
    id is stored in lower case; another system's stays as given."""
    name = f"capitals-{unique}"
    await world.registry.create_registered_model(name)
    made = await world.registry.create_model_version(
        name, "s3://bucket/m", run_id=world.run_id.upper()
    )
    assert made.run_id == world.run_id
    found = await world.registry.search_model_versions(f"run_id = '{world.run_id}'")
    assert [v.version for v in found] == [1]
    foreign = await world.registry.create_model_version(name, "s3://bucket/m", run_id="MLflow-A")
    assert foreign.run_id == "MLflow-A"
    artifact = await world.registry.create_artifact("data", "dataset", run_id=world.run_id.upper())
    assert artifact.run_id == world.run_id


async def test_a_filter_finds_a_version_by_its_run_id_in_capitals_too(
    world: World, unique: str
) -> None:
    """Stored in lower case, a version registered with its run id in capitals was no
    longer found by the id as given (MLflow compares the id as stored, which was the
    one given)."""
    name = f"asked-{unique}"
    await world.registry.create_registered_model(name)
    await world.registry.create_model_version(name, "s3://bucket/m", run_id=world.run_id.upper())
    await world.registry.create_artifact("cap", "dataset", run_id=world.run_id.upper())
    upper = world.run_id.upper()
    for wanted in (f"run_id = '{upper}'", f"run_id IN ('{upper}', 'other')"):
        found = await world.registry.search_model_versions(f"name = '{name}' AND {wanted}")
        assert [v.version for v in found] == [1], wanted
    request = registry_api.ListArtifactsRequest(
        project=world.registry.project, filter=f"name = 'cap' AND run_id = '{upper}'"
    )
    reply = await world.registry._stub.ListArtifacts(request)
    assert [a.name for a in reply.artifacts] == ["cap"]


async def test_run_ids_stored_in_capitals_before_are_lowered_by_the_migration(
    world: World, unique: str, pool: asyncpg.Pool
) -> None:
    """Versions and artifacts stored with a Cairn run id in capitals before it was
    lowered on write are found by it once the migration runs, and so are those a server
    of the version before writes after it (a rolling update: they stayed in capitals,
    missed by run_id for good); another system's id of 32 characters that are not all
    hexadecimal digits is kept."""
    name = f"before-{unique}"
    await world.registry.create_registered_model(name)
    await world.registry.create_model_version(name, "s3://bucket/m", run_id=world.run_id)
    await world.registry.create_model_version(name, "s3://bucket/m", run_id="X" * 32)
    await world.registry.create_artifact("data", "dataset", run_id=world.run_id)
    in_capitals = [
        "UPDATE model_versions SET source_run_id = upper(source_run_id) WHERE project = $1",
        "UPDATE artifacts SET source_run_id = upper(source_run_id) WHERE project = $1",
    ]
    async with pool.acquire() as conn, conn.transaction():  # as the runner applies it
        await conn.execute("SET LOCAL search_path TO registry")
        await conn.execute(  # the schema as it was before the migration
            "DROP TRIGGER model_versions_run_id_in_lower_case ON model_versions; "
            "DROP TRIGGER artifacts_run_id_in_lower_case ON artifacts; "
            "DROP FUNCTION run_id_in_lower_case()"
        )
        for statement in in_capitals:
            await conn.execute(statement, world.project)
        assert await conn.fetchval(
            "SELECT count(*) FROM model_versions WHERE source_run_id = $1", world.run_id.upper()
        )
        await conn.execute((repo_root() / MIGRATION).read_text())
    found = await world.registry.search_model_versions(f"name = '{name}'")
    assert sorted((v.version, v.run_id) for v in found) == [(1, world.run_id), (2, "X" * 32)]
    assert (await world.registry.get_artifact("data")).run_id == world.run_id

    for statement in in_capitals:  # an old server's writes, after the migration
        await pool.execute(statement.replace("UPDATE ", "UPDATE registry."), world.project)
    found = await world.registry.search_model_versions(f"run_id = '{world.run_id}'")
    assert [v.version for v in found] == [1]
    assert (await world.registry.get_artifact("data")).run_id == world.run_id


@pytest.mark.parametrize(
    "not_a_uri", [None, 42, Path("/x"), b"s3://b/o"], ids=["None", "int", "Path", "bytes"]
)
async def test_get_runs_using_refuses_what_names_no_uri(world: World, not_a_uri: Any) -> None:
    """get_runs_using(None), of a number, a local Path or bytes raised a bare
    AttributeError ('... has no attribute uri'); start_run(used_artifacts=[...]) did
    too. Each is an InvalidArgumentError naming the argument, and no run is made."""
    with pytest.raises(InvalidArgumentError) as refused:
        await world.tracking.get_runs_using(not_a_uri)
    assert [field for field, _ in refused.value.field_violations] == ["uri"]
    with pytest.raises(InvalidArgumentError) as unused:
        world.tracking.start_run(
            world.experiment_id, used_artifacts=[RunInput("s3://b/d"), not_a_uri]
        )
    assert [field for field, _ in unused.value.field_violations] == ["used_artifacts[1]"]
    runs = await world.tracking.search_runs(world.experiment_id, run_view_type="ALL")
    assert [r.info.run_id for r in runs] == [world.run_id]


async def test_get_runs_using_a_model_info_asks_for_its_artifact_uri(world: World) -> None:
    """A ModelInfo is asked for by its artifact_uri (as docs/models.md says), not its
    model_uri: the runs that logged the model's files as an input."""
    info = await world.tracking.log_model(world.run_id, [1], "model", flavor="pickle")
    user = await world.new_run()
    await world.tracking.log_inputs(user, [RunInput(info.artifact_uri, "model")])
    assert [r.info.run_id for r in await world.tracking.get_runs_using(info)] == [user]
