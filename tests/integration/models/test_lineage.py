"""Lineage in one call: what produced a model version (its run, the run's inputs and
params), and which runs of the project used an artifact, in any experiment."""

from __future__ import annotations

import pytest

from cairn.exceptions import NotFoundError
from cairn.types import RunInput
from tests.integration.models.conftest import World


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
