"""Registry writes racing each other on one model: each answer is what some order of the
calls gives, and never INTERNAL. A model's transitions follow one another, an alias
is set against neither a version nor a model being deleted, and two writes taking each
other's unique name or external id at once are ALREADY_EXISTS, never ABORTED."""

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

import cairn
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from cairn_server.registry.store.common import take_turn_for_external_id
from cairn_server.registry.store.models import take_turns_renaming
from tests.conftest import (
    another_transaction,
    eventually,
    holds_up_another,
    new_project,
    status_codes,
)

ROUNDS = 60


@pytest.fixture
async def stub(server_port: int) -> AsyncIterator[rpc.RegistryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield rpc.RegistryServiceStub(channel)


async def _model(stub: rpc.RegistryServiceStub, project: str, name: str) -> pb.RegisteredModel:
    model = pb.RegisteredModel(project=project, name=name)
    request = api.CreateRegisteredModelRequest(registered_model=model)
    return (await stub.CreateRegisteredModel(request)).registered_model


async def _version(
    stub: rpc.RegistryServiceStub, model: pb.RegisteredModel, external_id: str = ""
) -> pb.ModelVersion:
    version = pb.ModelVersion(
        project=model.project,
        registered_model_id=model.id,
        source_uri="s3://bucket/model",
        external_id=external_id,
    )
    request = api.CreateModelVersionRequest(model_version=version)
    return (await stub.CreateModelVersion(request)).model_version


def _set_alias(model: pb.RegisteredModel, version: pb.ModelVersion, alias: str) -> object:
    return api.SetRegisteredModelAliasRequest(
        project=model.project, registered_model_id=model.id, alias=alias, version=version.version
    )


async def test_versions_moved_to_production_at_once_leave_one_there(
    stub: rpc.RegistryServiceStub, server_port: int, unique: str
) -> None:
    """Each call archives the versions in the stage before it: whichever comes last is
    the one in Production."""
    project = await new_project(server_port, f"transitions-{unique}")
    for round_ in range(10):
        model = await _model(stub, project, f"m{round_}")
        versions = [await _version(stub, model) for _ in range(4)]
        codes = await status_codes(
            *(
                stub.TransitionModelVersionStage(
                    api.TransitionModelVersionStageRequest(
                        project=project,
                        id=version.id,
                        stage=pb.STAGE_PRODUCTION,
                        archive_existing_versions=True,
                    )
                )
                for version in versions
            )
        )
        assert set(codes) == {grpc.StatusCode.OK}
        request = api.ListModelVersionsRequest(project=project, registered_model_id=model.id)
        listed = (await stub.ListModelVersions(request)).model_versions
        stages = Counter(version.stage for version in listed)
        assert stages == {pb.STAGE_PRODUCTION: 1, pb.STAGE_ARCHIVED: 3}


async def test_an_alias_set_while_its_version_is_deleted_is_set_or_not_found(
    stub: rpc.RegistryServiceStub, server_port: int, unique: str
) -> None:
    project = await new_project(server_port, f"alias-version-{unique}")
    model = await _model(stub, project, "m")
    for round_ in range(ROUNDS):
        version = await _version(stub, model)
        delete = api.DeleteModelVersionRequest(project=project, id=version.id)
        set_code, delete_code = await status_codes(
            stub.SetRegisteredModelAlias(_set_alias(model, version, f"a{round_ % 3}")),
            stub.DeleteModelVersion(delete),
        )
        assert set_code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
        assert delete_code == grpc.StatusCode.OK
    request = api.GetRegisteredModelRequest(project=project, id=model.id)
    assert not (await stub.GetRegisteredModel(request)).registered_model.aliases


async def test_an_alias_set_while_its_model_is_deleted_is_set_or_not_found(
    stub: rpc.RegistryServiceStub, server_port: int, unique: str
) -> None:
    project = await new_project(server_port, f"alias-model-{unique}")
    for round_ in range(ROUNDS):
        model = await _model(stub, project, f"m{round_}")
        version = await _version(stub, model)
        delete = api.DeleteRegisteredModelRequest(project=project, id=model.id)
        set_code, delete_code = await status_codes(
            stub.SetRegisteredModelAlias(_set_alias(model, version, "champion")),
            stub.DeleteRegisteredModel(delete),
        )
        assert set_code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
        assert delete_code == grpc.StatusCode.OK


async def test_copies_to_a_missing_model_at_once_each_make_a_version(
    server_port: int, unique: str
) -> None:
    """copy_model_version creates its destination when missing, as MLflow's does; copies
    racing to create it all go on to add their versions."""
    project = await new_project(server_port, f"copies-{unique}")
    clients = [
        cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", server_port, project=project)
        for _ in range(4)
    ]
    try:
        await clients[0].create_registered_model("source")
        await clients[0].create_model_version("source", "s3://bucket/model")
        for round_ in range(ROUNDS // 4):
            copies = await asyncio.gather(
                *(c.copy_model_version("models:/source/1", f"copy-{round_}") for c in clients)
            )
            assert sorted(int(copy.version) for copy in copies) == [1, 2, 3, 4]  # type: ignore[arg-type]
    finally:
        for client in clients:
            await client.close()


async def test_versions_taking_each_others_external_ids_at_once_are_already_exists(
    stub: rpc.RegistryServiceStub, pool: asyncpg.Pool, server_port: int, unique: str
) -> None:
    """Each update freed its own id, then waited for the other's, and PostgreSQL aborted
    one of the two as a deadlock: ABORTED (TRANSACTION_CONFLICT, "call again"), which
    could only end in ALREADY_EXISTS, as either order answers. The other update is a
    transaction here, held open half done."""
    project = await new_project(server_port, f"swap-ids-{unique}")
    model = await _model(stub, project, "m")
    first = await _version(stub, model, external_id="x")
    second = await _version(stub, model, external_id="y")
    async with another_transaction(pool) as other:
        changes = {"external_id": "moving"}
        await take_turn_for_external_id(other, "model_versions", project, int(second.id), changes)
        await _set_external_id(other, second, "moving")
        version = pb.ModelVersion(project=project, id=first.id, external_id="y")
        request = api.UpdateModelVersionRequest(
            model_version=version, update_mask=FieldMask(paths=["external_id"])
        )
        update = asyncio.ensure_future(status_codes(stub.UpdateModelVersion(request)))
        await eventually(lambda: holds_up_another(other), what="the update waiting")
        # The other update's second half: PostgreSQL found the deadlock here and
        # aborted the server's call; now the server's waits its turn, and x is taken.
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await _set_external_id(other, second, "x")
    assert await update == [grpc.StatusCode.ALREADY_EXISTS]


async def test_an_update_finding_its_rows_id_changed_under_its_lock_never_deadlocks(
    stub: rpc.RegistryServiceStub, pool: asyncpg.Pool, server_port: int, unique: str
) -> None:
    """A Kubeflow-style update sends every field, the external id as it read it: when it
    reads the id, unchanged, it takes no turn, and another change of the id may commit
    before it has the row's lock. Under the lock, the id it sends changes the row's.
    Before, it then waited for its turn holding the row, while a third change, whose
    turn it was, waited for the row: PostgreSQL aborted the update as a deadlock,
    ABORTED TRANSACTION_CONFLICT. Now it lets the row go and asks again, turn first."""
    project = await new_project(server_port, f"stale-id-{unique}")
    model = await _model(stub, project, "m")
    version = await _version(stub, model, external_id="a")
    async with pool.acquire() as first_change, another_transaction(pool) as third_change:
        async with first_change.transaction():
            changes = {"external_id": "b"}
            await take_turn_for_external_id(
                first_change, "model_versions", project, int(version.id), changes
            )
            await _set_external_id(first_change, version, "b")
            sent = pb.ModelVersion(
                project=project, id=version.id, description="new", external_id="a"
            )
            request = api.UpdateModelVersionRequest(
                model_version=sent, update_mask=FieldMask(paths=["description", "external_id"])
            )
            update = asyncio.ensure_future(status_codes(stub.UpdateModelVersion(request)))
            await eventually(lambda: holds_up_another(first_change), what="the update waiting")
            changes = {"external_id": "c"}
            third = asyncio.ensure_future(
                take_turn_for_external_id(
                    third_change, "model_versions", project, int(version.id), changes
                )
            )
            pid = third_change.get_server_pid()
            await eventually(
                lambda: _waits_for_a_lock(first_change, pid), what="the third change waiting"
            )
        await third  # its turn, as the first change commits
        await _set_external_id(third_change, version, "c")
    assert await update == [grpc.StatusCode.OK]
    stored = await stub.GetModelVersion(api.GetModelVersionRequest(project=project, id=version.id))
    assert (stored.model_version.description, stored.model_version.external_id) == ("new", "a")


async def _waits_for_a_lock(conn: asyncpg.Connection, pid: int) -> bool:
    wait = await conn.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(wait == "Lock")


async def _set_external_id(conn: asyncpg.Connection, version: pb.ModelVersion, to: str) -> None:
    await conn.execute(
        "UPDATE registry.model_versions SET external_id = $2 WHERE id = $1", int(version.id), to
    )


async def test_models_renamed_into_each_others_names_at_once_are_already_exists(
    stub: rpc.RegistryServiceStub, pool: asyncpg.Pool, server_port: int, unique: str
) -> None:
    """Each rename could update its own row, then wait for the other's to give its name
    up, and PostgreSQL would abort one of the two as a deadlock: ABORTED. The other
    rename is a transaction here, held open half done."""
    project = await new_project(server_port, f"swap-names-{unique}")
    first = await _model(stub, project, "first")
    second = await _model(stub, project, "second")
    async with another_transaction(pool) as other:
        await take_turns_renaming(other, project)
        await _rename(other, second, "moving")
        request = api.RenameRegisteredModelRequest(project=project, id=first.id, new_name="second")
        rename = asyncio.ensure_future(status_codes(stub.RenameRegisteredModel(request)))
        await eventually(lambda: holds_up_another(other), what="the rename waiting")
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await _rename(other, second, "first")
    assert await rename == [grpc.StatusCode.ALREADY_EXISTS]


async def _rename(conn: asyncpg.Connection, model: pb.RegisteredModel, name: str) -> None:
    await conn.execute(
        "UPDATE registry.registered_models SET name = $2 WHERE id = $1", int(model.id), name
    )


class _SourceDeletedOnceCopied(cairn.ModelRegistryAPIClient):
    """Deletes the version being copied as soon as its copy is made: a delete racing
    `copy_model_version`, landing at the worst moment."""

    async def create_model_version(self, name, *args, **kwargs):
        made = await super().create_model_version(name, *args, **kwargs)
        if name == "copy":
            await self.delete_model_version("source", 1)
        return made


async def test_a_copy_whose_source_is_deleted_meanwhile_still_points_at_its_files(
    server_port: int, unique: str
) -> None:
    """The copy read where its original's files are only once it was made, by the
    original's name: a delete in between failed the copy NOT_FOUND and left the version
    it had made, with no model artifact, which no load could follow."""
    project = await new_project(server_port, f"copy-deleted-{unique}")
    async with _SourceDeletedOnceCopied.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        await client.create_registered_model("source")
        await client.create_model_version("source", "s3://bucket/model")
        copied = await client.copy_model_version("models:/source/1", "copy")
        files = await client.get_model_artifacts(copied.id)
        assert [artifact.uri for artifact in files] == ["s3://bucket/model"]
        assert await client.get_model_version_download_uri("copy", 1) == "s3://bucket/model"


@pytest.mark.parametrize("write", ["rename", "delete", "delete-version"])
async def test_a_write_by_name_finds_the_model_renamed_meanwhile_gone(
    stub: rpc.RegistryServiceStub, server_port: int, pool: asyncpg.Pool, unique: str, write: str
) -> None:
    """The registry looked the name up, then wrote the model by its id: a rename that
    committed while the write waited for the model's row left it acting on the model
    under its new name (a second rename of "m" acknowledged, the renamed model deleted,
    or its version, by the name it no longer had)."""
    project = await new_project(server_port, f"named-{write}-{unique}")
    model = await _model(stub, project, "m")
    await _version(stub, model)
    calls = {
        "rename": lambda: stub.RenameRegisteredModel(
            api.RenameRegisteredModelRequest(project=project, name="m", new_name="b")
        ),
        "delete": lambda: stub.DeleteRegisteredModel(
            api.DeleteRegisteredModelRequest(project=project, name="m")
        ),
        "delete-version": lambda: stub.DeleteModelVersion(
            api.DeleteModelVersionRequest(project=project, registered_model_name="m", version=1)
        ),
    }
    async with pool.acquire() as conn:
        renaming = conn.transaction()
        await renaming.start()
        await conn.execute(
            "UPDATE registry.registered_models SET name = 'a' WHERE id = $1", int(model.id)
        )
        waiting = asyncio.ensure_future(calls[write]())
        await eventually(lambda: holds_up_another(conn), what="the write waits for the model")
        await renaming.commit()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await waiting
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    found = api.FindRegisteredModelRequest(project=project, name="a")
    kept = (await stub.FindRegisteredModel(found)).registered_model
    versions = await stub.ListModelVersions(
        api.ListModelVersionsRequest(project=project, registered_model_id=kept.id)
    )
    assert (kept.id, [v.version for v in versions.model_versions]) == (model.id, [1])
