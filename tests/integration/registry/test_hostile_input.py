"""Input a client may send on purpose or by accident: each answer is a clear error with
a stable reason (or the object asked for), never INTERNAL and never another row."""

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from tests.conftest import new_project


@pytest.fixture
async def stub(server_port: int) -> AsyncIterator[rpc.RegistryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield rpc.RegistryServiceStub(channel)


async def _refusal(call) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = rpc_status.from_call(raised.value)
    assert status is not None, raised.value.details()
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Unpack(info))
    return raised.value.code(), info.reason


async def _create_model(stub, project: str, name: str, **fields) -> pb.RegisteredModel:
    model = pb.RegisteredModel(project=project, name=name, **fields)
    request = api.CreateRegisteredModelRequest(registered_model=model)
    return (await stub.CreateRegisteredModel(request)).registered_model


async def test_ids_in_other_digits_name_no_model(stub, server_port, unique) -> None:
    """Only ASCII digits spell an id: "²" and "①" are digits to str.isdigit() but not to
    int(), and Arabic-Indic digits are to both, so they used to be INTERNAL or reach the
    model of the ASCII number."""
    project = await new_project(server_port, f"ids-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in model_id)
    for spelling in ("\u00b2", "\u2460", arabic_indic, f"0{model_id}"):
        request = api.GetRegisteredModelRequest(project=project, id=spelling)
        refused = await _refusal(stub.GetRegisteredModel(request))
        assert refused == (grpc.StatusCode.NOT_FOUND, "REGISTERED_MODEL_NOT_FOUND"), spelling
    got = await stub.GetRegisteredModel(api.GetRegisteredModelRequest(project=project, id=model_id))
    assert got.registered_model.name == "m"
