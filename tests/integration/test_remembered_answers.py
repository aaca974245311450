"""What a request id keeps of a write's answer is bounded: an answer holding a large
stored object (a model whose latest versions carry big tags, an experiment of many tags)
is kept as a stub naming the object, and the write's repeat under the same request id
gets the object as it is now, read again, without applying the write twice. Smaller
answers are kept, and repeated, exactly."""

import secrets
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pool, field_mask_pb2
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cairn.registry.v1 import registry_pb2 as reg
from cairn.registry.v1 import registry_service_pb2 as reg_api
from cairn.registry.v1 import registry_service_pb2_grpc as reg_rpc
from cairn.tracking.v1 import tracking_pb2 as trk
from cairn.tracking.v1 import tracking_service_pb2 as trk_api
from cairn.tracking.v1 import tracking_service_pb2_grpc as trk_rpc
from cairn.types._registry import registered_model_from_proto
from cairn.types._tracking import run_from_proto
from cairn_server import catalog
from cairn_server.common.idempotency import MAX_REMEMBERED_ANSWER_BYTES, READS
from tests.conftest import new_project

# The longest tag value: 20 of them (160 KB) pass the bound twice over.
BIG_VALUE_CHARS = 8000


def _big_values(n: int) -> list[tuple[str, str]]:
    return [(f"t{i:02}", secrets.token_hex(BIG_VALUE_CHARS // 2)) for i in range(n)]


def _id(request_id: str) -> list[tuple[str, str]]:
    return [("x-cairn-request-id", request_id)]


async def _remembered_bytes(pool: asyncpg.Pool, schema: str, request_id: str) -> int:
    """The bytes the schema's requests table keeps for request_id, in all its columns."""
    row = await pool.fetchrow(f"SELECT * FROM {schema}.requests WHERE request_id = $1", request_id)
    assert row is not None, f"{request_id} not recorded"
    return sum(len(value) for value in row.values() if isinstance(value, bytes))


async def _refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = rpc_status.from_call(raised.value)
    assert status is not None, raised.value.details()
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Unpack(info))
    return raised.value.code(), info.reason


@pytest.fixture
async def channel(server_port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield channel


@pytest.fixture
async def project(server_port: int, unique: str) -> str:
    return await new_project(server_port, f"answers-{unique}")


async def _model_with_big_versions(stub: reg_rpc.RegistryServiceStub, project: str) -> str:
    """A model whose latest version carries 160 KB of tags (the model's answers hold it)."""
    created = await stub.CreateRegisteredModel(
        reg_api.CreateRegisteredModelRequest(
            registered_model=reg.RegisteredModel(project=project, name="big")
        )
    )
    model_id = created.registered_model.id
    await stub.CreateModelVersion(
        reg_api.CreateModelVersionRequest(
            model_version=reg.ModelVersion(
                project=project,
                registered_model_id=model_id,
                name="v1",
                tags=dict(_big_values(20)),
            )
        )
    )
    return model_id


def _describe(project: str, model_id: str, text: str) -> reg_api.UpdateRegisteredModelRequest:
    return reg_api.UpdateRegisteredModelRequest(
        registered_model=reg.RegisteredModel(project=project, id=model_id, description=text),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )


async def test_an_update_of_a_model_with_big_versions_keeps_a_bounded_answer(
    channel: grpc.aio.Channel, pool: asyncpg.Pool, project: str, unique: str
) -> None:
    """Before, the request id kept the whole 160 KB answer of a 100-byte request."""
    stub = reg_rpc.RegistryServiceStub(channel)
    model_id = await _model_with_big_versions(stub, project)
    request = _describe(project, model_id, "first")
    first = await stub.UpdateRegisteredModel(request, metadata=_id(f"describe-{unique}"))
    assert first.ByteSize() > 2 * MAX_REMEMBERED_ANSWER_BYTES
    assert await _remembered_bytes(pool, "registry", f"describe-{unique}") <= (
        MAX_REMEMBERED_ANSWER_BYTES
    )
    await stub.SetRegisteredModelTag(
        reg_api.SetRegisteredModelTagRequest(
            project=project, registered_model_id=model_id, key="since", value="then"
        )
    )
    now = await stub.GetRegisteredModel(
        reg_api.GetRegisteredModelRequest(project=project, id=model_id)
    )
    again = await stub.UpdateRegisteredModel(request, metadata=_id(f"describe-{unique}"))
    assert again.registered_model == now.registered_model  # as it is now, tag included
    after = await stub.GetRegisteredModel(
        reg_api.GetRegisteredModelRequest(project=project, id=model_id)
    )
    assert after == now  # not updated again (its update_time would have moved)
    other = _describe(project, model_id, "other")
    assert await _refusal(
        stub.UpdateRegisteredModel(other, metadata=_id(f"describe-{unique}"))
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )


async def test_the_repeat_of_a_big_answer_whose_object_is_gone_is_not_found(
    channel: grpc.aio.Channel, project: str, unique: str
) -> None:
    stub = reg_rpc.RegistryServiceStub(channel)
    model_id = await _model_with_big_versions(stub, project)
    request = _describe(project, model_id, "first")
    await stub.UpdateRegisteredModel(request, metadata=_id(f"gone-{unique}"))
    await stub.DeleteRegisteredModel(
        reg_api.DeleteRegisteredModelRequest(project=project, id=model_id)
    )
    assert await _refusal(stub.UpdateRegisteredModel(request, metadata=_id(f"gone-{unique}"))) == (
        grpc.StatusCode.NOT_FOUND,
        "REGISTERED_MODEL_NOT_FOUND",
    )


async def test_a_small_answer_is_kept_and_repeated_exactly(
    channel: grpc.aio.Channel, pool: asyncpg.Pool, project: str, unique: str
) -> None:
    stub = reg_rpc.RegistryServiceStub(channel)
    created = await stub.CreateRegisteredModel(
        reg_api.CreateRegisteredModelRequest(
            registered_model=reg.RegisteredModel(project=project, name="small")
        )
    )
    model_id = created.registered_model.id
    request = _describe(project, model_id, "first")
    first = await stub.UpdateRegisteredModel(request, metadata=_id(f"small-{unique}"))
    kept = await pool.fetchval(
        "SELECT response FROM registry.requests WHERE request_id = $1", f"small-{unique}"
    )
    assert kept == first.SerializeToString()
    await stub.UpdateRegisteredModel(_describe(project, model_id, "second"))
    again = await stub.UpdateRegisteredModel(request, metadata=_id(f"small-{unique}"))
    assert again == first  # the first answer, though the model changed since


async def test_a_rename_of_an_experiment_with_big_tags_keeps_a_bounded_answer(
    channel: grpc.aio.Channel, pool: asyncpg.Pool, project: str, unique: str
) -> None:
    """Before, the request id kept the whole 160 KB answer of a 60-byte request."""
    stub = trk_rpc.TrackingServiceStub(channel)
    tags = [trk.Tag(key=key, value=value) for key, value in _big_values(20)]
    created = await stub.CreateExperiment(
        trk_api.CreateExperimentRequest(project=project, name=f"e-{unique}", tags=tags)
    )
    experiment_id = created.experiment.experiment_id

    def rename(name: str) -> trk_api.RenameExperimentRequest:
        return trk_api.RenameExperimentRequest(
            project=project, experiment_id=experiment_id, new_name=name
        )

    first = await stub.RenameExperiment(rename(f"b-{unique}"), metadata=_id(f"rename-{unique}"))
    assert first.ByteSize() > 2 * MAX_REMEMBERED_ANSWER_BYTES
    assert await _remembered_bytes(pool, "tracking", f"rename-{unique}") <= (
        MAX_REMEMBERED_ANSWER_BYTES
    )
    await stub.RenameExperiment(rename(f"c-{unique}"))
    again = await stub.RenameExperiment(rename(f"b-{unique}"), metadata=_id(f"rename-{unique}"))
    now = await stub.GetExperiment(
        trk_api.GetExperimentRequest(project=project, experiment_id=experiment_id)
    )
    assert now.experiment.name == f"c-{unique}"  # not renamed back to b
    assert again.experiment == now.experiment


async def test_a_run_created_with_big_tags_is_repeated_as_it_is_now(
    channel: grpc.aio.Channel, pool: asyncpg.Pool, project: str, unique: str
) -> None:
    """A create's answer is as large as its request, which the largest message bounds:
    kept as a stub too, named by fields nested in the answer (run.info.run_id)."""
    stub = trk_rpc.TrackingServiceStub(channel)
    experiment = await stub.CreateExperiment(
        trk_api.CreateExperimentRequest(project=project, name=f"runs-{unique}")
    )
    tags = [trk.Tag(key=key, value=value) for key, value in _big_values(20)]
    request = trk_api.CreateRunRequest(
        project=project, experiment_id=experiment.experiment.experiment_id, tags=tags
    )
    first = await stub.CreateRun(request, metadata=_id(f"run-{unique}"))
    assert await _remembered_bytes(pool, "tracking", f"run-{unique}") <= (
        MAX_REMEMBERED_ANSWER_BYTES
    )
    run_id = first.run.info.run_id
    await stub.SetTag(
        trk_api.SetTagRequest(project=project, run_id=run_id, tag=trk.Tag(key="k", value="v"))
    )
    again = await stub.CreateRun(request, metadata=_id(f"run-{unique}"))
    now = await stub.GetRun(trk_api.GetRunRequest(project=project, run_id=run_id))
    assert again.run == now.run
    runs = await stub.SearchRuns(
        trk_api.SearchRunsRequest(
            project=project, experiment_ids=[experiment.experiment.experiment_id]
        )
    )
    assert [r.info.run_id for r in runs.runs] == [run_id]  # created once


async def _kept(pool: asyncpg.Pool, schema: str, request_id: str) -> bytes:
    return bytes(
        await pool.fetchval(
            f"SELECT response FROM {schema}.requests WHERE request_id = $1", request_id
        )
    )


async def test_a_stub_is_the_answer_a_client_of_the_release_before_can_read(
    channel: grpc.aio.Channel, pool: asyncpg.Pool, project: str, unique: str
) -> None:
    """A server of the release before answers a repeat with what the id keeps, as it
    is (during an update, after a rollback): the stub is the answer without its lists
    and maps. Kept as the naming fields alone, it broke the clients' conversions: a
    run of status UNSPECIFIED (create_run raised KeyError), a model of state
    UNSPECIFIED (ValueError)."""
    tracking = trk_rpc.TrackingServiceStub(channel)
    experiment = await tracking.CreateExperiment(
        trk_api.CreateExperimentRequest(project=project, name=f"kept-{unique}")
    )
    tags = [trk.Tag(key=key, value=value) for key, value in _big_values(20)]
    first = await tracking.CreateRun(
        trk_api.CreateRunRequest(
            project=project, experiment_id=experiment.experiment.experiment_id, tags=tags
        ),
        metadata=_id(f"kept-run-{unique}"),
    )
    kept_run = trk_api.CreateRunResponse.FromString(
        await _kept(pool, "tracking", f"kept-run-{unique}")
    ).run
    assert kept_run.info == first.run.info and not kept_run.data.tags
    assert run_from_proto(kept_run).info == run_from_proto(first.run).info

    registry = reg_rpc.RegistryServiceStub(channel)
    model_id = await _model_with_big_versions(registry, project)
    described = await registry.UpdateRegisteredModel(
        _describe(project, model_id, "kept"), metadata=_id(f"kept-model-{unique}")
    )
    kept_model = reg_api.UpdateRegisteredModelResponse.FromString(
        await _kept(pool, "registry", f"kept-model-{unique}")
    ).registered_model
    assert not kept_model.latest_versions
    model = registered_model_from_proto(kept_model)
    assert (model.name, model.description, model.state) == (
        described.registered_model.name,
        "kept",
        registered_model_from_proto(described.registered_model).state,
    )


def test_every_recorded_write_whose_answer_can_pass_the_bound_reads_it_again() -> None:
    """A recorded write answering a stored object that can be larger than a request id
    keeps declares the read that answers its repeat; each such read takes the request
    its declaration makes and answers the object in the field the write does."""
    pool = descriptor_pool.Default()
    # Answers whose every field is bounded by validation well under the bound.
    small = {
        "UpdateRun",  # a RunInfo: names, ids and a URI of at most a few KB
        "CreateProject",  # name and description (10,000 characters at most)
        "UpdateProject",
        "StartGarbageCollection",  # a newly started operation
    }
    for spec in catalog.select([]):
        if not spec.records_requests:
            continue
        service = pool.FindServiceByName(spec.full_name)
        for method in service.methods:
            name = method.name
            if method.client_streaming:
                continue  # never recorded (Upload: its publication is)
            if name.startswith(READS) or name in spec.not_recorded or name in small:
                continue
            objects = [f for f in method.output_type.fields if f.message_type is not None]
            if not objects:
                continue  # empty answers, counts
            assert name in spec.rereads, f"{spec.full_name}/{name}"
            reread = spec.rereads[name]
            get = service.FindMethodByName(reread.get)
            assert [f.name for f in get.output_type.fields] == [
                f.name for f in method.output_type.fields
            ], name
            for path in reread.names:  # each a field of the answer and of get's request
                assert _field_at(method.output_type, path) in get.input_type.fields_by_name


def _field_at(descriptor: Descriptor, path: str) -> str:
    """The last name of path, once found in messages of type descriptor."""
    *outer, last = path.split(".")
    for name in outer:
        descriptor = descriptor.fields_by_name[name].message_type
    assert last in descriptor.fields_by_name, path
    return last
