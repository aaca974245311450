"""A page of a registry list is bounded by its entries (tags and custom properties, a
model's latest versions' included) as well as by its bytes: items made of many short
entries are read in smaller pages, each whole, its token continuing after its last item.
Answers of many entries are built off the event loop.

The bound is lowered here (MAX_PAGE_LOAD_ENTRIES) so that a few small items pass it."""

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from cairn_server.common import answers
from cairn_server.registry import convert
from cairn_server.registry.store import listing
from tests.conftest import new_project

# Each item holds ENTRIES tags and properties (half each, artifacts properties only);
# a model's two latest versions hold as many each, so a model counts three times more.
ENTRIES = 20
ITEMS = 7


@pytest.fixture
async def stub(server_port: int) -> AsyncIterator[rpc.RegistryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield rpc.RegistryServiceStub(channel)


@pytest.fixture
async def project(server_port: int, unique: str) -> str:
    return await new_project(server_port, f"entries-{unique}")


def _tags(n: int) -> dict[str, str]:
    return {f"t{i:02}": "x" for i in range(n)}


def _properties(n: int) -> dict[str, common_pb2.Value]:
    return {f"p{i:02}": common_pb2.Value(string_value="x") for i in range(n)}


async def _model(stub: rpc.RegistryServiceStub, project: str, n: int) -> pb.RegisteredModel:
    """A model of ENTRIES entries with a latest version of as many in stages None and
    Staging (its listed entries: 3 * ENTRIES)."""
    half = ENTRIES // 2
    created = await stub.CreateRegisteredModel(
        api.CreateRegisteredModelRequest(
            registered_model=pb.RegisteredModel(
                project=project, name=f"m{n}", tags=_tags(half), custom_properties=_properties(half)
            )
        )
    )
    model = created.registered_model
    for stage in (pb.STAGE_UNSPECIFIED, pb.STAGE_STAGING):
        version = await _version(stub, project, model.id, f"s{stage}")
        if stage:
            await stub.TransitionModelVersionStage(
                api.TransitionModelVersionStageRequest(project=project, id=version.id, stage=stage)
            )
    return model


async def _version(
    stub: rpc.RegistryServiceStub, project: str, model_id: str, name: str
) -> pb.ModelVersion:
    half = ENTRIES // 2
    created = await stub.CreateModelVersion(
        api.CreateModelVersionRequest(
            model_version=pb.ModelVersion(
                project=project,
                registered_model_id=model_id,
                name=name,
                tags=_tags(half),
                custom_properties=_properties(half),
            )
        )
    )
    return created.model_version


async def _artifact(stub: rpc.RegistryServiceStub, project: str, n: int) -> pb.Artifact:
    created = await stub.CreateArtifact(
        api.CreateArtifactRequest(
            artifact=pb.Artifact(
                project=project,
                name=f"a{n}",
                uri=f"s3://bucket/a{n}",
                doc=pb.DocArtifactDetails(),
                custom_properties=_properties(ENTRIES),
            )
        )
    )
    return created.artifact


async def _pages(list_page: Callable[[str], Awaitable[Any]], field: str) -> list[list[str]]:
    """The ids of each page of a list, walked from its first page to its last."""
    pages, token = [], ""
    while True:
        answer = await list_page(token)
        pages.append([item.id for item in getattr(answer, field)])
        token = answer.next_page_token
        if not token:
            return pages


async def test_a_page_of_models_ends_at_its_entries_latest_versions_counted(
    stub: rpc.RegistryServiceStub, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_PAGE_LOAD_ENTRIES", 7 * ENTRIES)
    models = [(await _model(stub, project, n)).id for n in range(ITEMS)]

    async def page(token: str) -> api.ListRegisteredModelsResponse:
        return await stub.ListRegisteredModels(
            api.ListRegisteredModelsRequest(project=project, page_size=1000, page_token=token)
        )

    pages = await _pages(page, "registered_models")
    # Two models (6 * ENTRIES) fit, a third would not; counted without their latest
    # versions, seven would.
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert [model for p in pages for model in p] == models
    [first] = (await page("")).registered_models[:1]
    assert len(first.latest_versions) == 2
    assert len(first.latest_versions[1].tags) == ENTRIES // 2


async def test_a_page_of_versions_ends_at_its_entries(
    stub: rpc.RegistryServiceStub, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_PAGE_LOAD_ENTRIES", 3 * ENTRIES)
    model = await stub.CreateRegisteredModel(
        api.CreateRegisteredModelRequest(
            registered_model=pb.RegisteredModel(project=project, name="m")
        )
    )
    model_id = model.registered_model.id
    versions = [(await _version(stub, project, model_id, f"v{n}")).id for n in range(ITEMS)]

    async def page(token: str) -> api.ListModelVersionsResponse:
        return await stub.ListModelVersions(
            api.ListModelVersionsRequest(
                project=project, registered_model_id=model_id, page_size=1000, page_token=token
            )
        )

    pages = await _pages(page, "model_versions")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [version for p in pages for version in p] == versions


async def test_a_page_of_artifacts_ends_at_its_entries(
    stub: rpc.RegistryServiceStub, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_PAGE_LOAD_ENTRIES", 4 * ENTRIES)
    artifacts = [(await _artifact(stub, project, n)).id for n in range(ITEMS)]

    async def page(token: str) -> api.ListArtifactsResponse:
        return await stub.ListArtifacts(
            api.ListArtifactsRequest(project=project, page_size=1000, page_token=token)
        )

    pages = await _pages(page, "artifacts")
    assert [len(p) for p in pages] == [4, 3]
    assert [artifact for p in pages for artifact in p] == artifacts


async def test_an_answer_of_many_entries_is_built_off_the_event_loop(
    stub: rpc.RegistryServiceStub, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting the page's items happens on a worker thread (the answers builder, as
    tracking's): the loop, free meanwhile, answers other calls."""
    monkeypatch.setattr(answers, "ON_LOOP_ENTRIES", ENTRIES)
    built_on: list[str] = []
    to_message = convert.registered_model

    def registered_model(record: Any) -> pb.RegisteredModel:
        built_on.append(threading.current_thread().name)
        return to_message(record)

    monkeypatch.setattr(convert, "registered_model", registered_model)
    for n in range(3):
        await _model(stub, project, n)
    built_on.clear()  # creating converted each model too
    answer = await stub.ListRegisteredModels(api.ListRegisteredModelsRequest(project=project))
    assert len(answer.registered_models) == 3
    assert len(built_on) == 3
    assert threading.current_thread().name not in built_on
