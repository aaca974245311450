"""The registry is served only with messages that carry any model within its limits: a
model comes with its latest version of each stage, and each of those five objects may
hold 1 MiB of properties and tags beside its texts and aliases."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from cairn_server import catalog
from cairn_server.common import config as config_module
from cairn_server.common import server
from cairn_server.common.config import Config
from cairn_server.common.service import Unservable
from cairn_server.registry import SPEC as REGISTRY
from cairn_server.registry import validation
from tests.conftest import new_project, serving, with_overrides

LEAST = validation.LEAST_MESSAGE_BYTES
MOST_ANSWERED = validation.MAX_MODEL_ANSWER_BYTES
WIDE = "\U00020000"  # a letter of 4 bytes in UTF-8: texts at their limits, at their largest
STAGES = [pb.STAGE_UNSPECIFIED, pb.STAGE_STAGING, pb.STAGE_PRODUCTION, pb.STAGE_ARCHIVED]


async def _refusal(config: Config, max_message_bytes: int) -> str:
    """The message a registry server of max_message_bytes does not start with."""
    changed = with_overrides(config, max_message_bytes=max_message_bytes)
    with pytest.raises(Unservable) as refused:
        # A server that started would serve until stopped: the timeout fails the test.
        async with asyncio.timeout(60):
            await server.run(changed, catalog.select(["registry"]))
    return str(refused.value)


async def test_a_registry_whose_messages_cannot_carry_a_model_does_not_start(
    config: Config, pool: asyncpg.Pool
) -> None:
    """With CAIRN_MAX_MESSAGE_BYTES of 1 MiB the registry started, and a model holding
    tags within its limits could be stored but never read, found by name or listed:
    gRPC's RESOURCE_EXHAUSTED "Sent message larger than max", with no reason."""
    message = await _refusal(config, 1024 * 1024)
    assert "CAIRN_MAX_MESSAGE_BYTES=1048576" in message
    assert f"its latest version of each stage, up to {MOST_ANSWERED} bytes" in message
    assert f"serve the registry with CAIRN_MAX_MESSAGE_BYTES of at least {LEAST}" in message
    assert f"CAIRN_MAX_MESSAGE_BYTES={LEAST - 1}" in await _refusal(config, LEAST - 1)
    # The setting's own help (docs/configuration.md's table) names the same least value.
    assert f"nor the registry below {LEAST} " in config_module.table_markdown()
    assert REGISTRY.servable is not None
    await REGISTRY.servable(pool, with_overrides(config, max_message_bytes=LEAST))


@pytest.fixture
async def least_messages(
    config: Config, pool: asyncpg.Pool
) -> AsyncIterator[rpc.RegistryServiceStub]:
    """A registry served with the least messages it takes, and a stub that takes answers
    of any size (gRPC's default is 4 MiB)."""
    async with (
        serving(config, pool, ["registry"], max_message_bytes=LEAST) as port,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
        ) as channel,
    ):
        yield rpc.RegistryServiceStub(channel)


def _filled(salt: str) -> tuple[dict[str, common_pb2.Value], dict[str, str]]:
    """256 properties and 256 tags of 4-byte characters, 1 MiB together as object_bytes
    counts them: properties of the longest int varint, tags of the rest."""
    keys = [f"{salt}{n:03}" + WIDE * 240 for n in range(validation.MAX_TAGS)]
    properties = {key: common_pb2.Value(int_value=-(2**63)) for key in keys}
    room = validation.MAX_OBJECT_BYTES - sum(len(key.encode()) + 8 for key in keys)
    room -= sum(len(key.encode()) for key in keys)
    each, left = divmod(room, len(keys))
    tags = {key: WIDE * (each // 4) + "x" * (each % 4) for key in keys}
    tags[keys[0]] += "x" * left
    assert validation.object_bytes({k: -1 for k in properties}, tags) == validation.MAX_OBJECT_BYTES
    return properties, tags


def _text(salt: str, characters: int) -> str:
    return salt + WIDE * (characters - len(salt))


async def _model_at_the_limits(stub: rpc.RegistryServiceStub, project: str) -> pb.RegisteredModel:
    """A model and its latest version of each stage, each at every limit in 4-byte
    characters, the model's 256 aliases of 255 characters on those versions."""
    properties, tags = _filled("m")
    model = pb.RegisteredModel(
        project=project,
        name=_text("", validation.MAX_NAME_LENGTH),
        description=_text("", validation.MAX_TEXT_LENGTH),
        owner=_text("", validation.MAX_TEXT_LENGTH),
        external_id=_text("m", validation.MAX_NAME_LENGTH),
        custom_properties=properties,
        tags=tags,
    )
    created = await stub.CreateRegisteredModel(
        api.CreateRegisteredModelRequest(registered_model=model)
    )
    model = created.registered_model
    for n, stage in enumerate(STAGES):
        version = await _version_at_the_limits(stub, model, str(n))
        if stage != pb.STAGE_UNSPECIFIED:
            await stub.TransitionModelVersionStage(
                api.TransitionModelVersionStageRequest(project=project, id=version.id, stage=stage)
            )
        for a in range(n * 64, (n + 1) * 64):
            alias = api.SetRegisteredModelAliasRequest(
                project=project,
                registered_model_id=model.id,
                alias=_text(f"{a:03}", validation.MAX_ALIAS_LENGTH),
                version=version.version,
            )
            await stub.SetRegisteredModelAlias(alias)
    return model


async def _version_at_the_limits(
    stub: rpc.RegistryServiceStub, model: pb.RegisteredModel, salt: str
) -> pb.ModelVersion:
    properties, tags = _filled(f"v{salt}")
    version = pb.ModelVersion(
        project=model.project,
        registered_model_id=model.id,
        name=_text(salt, validation.MAX_NAME_LENGTH),
        author=_text("", validation.MAX_TEXT_LENGTH),
        description=_text("", validation.MAX_TEXT_LENGTH),
        source_run_id=_text("", validation.MAX_TEXT_LENGTH),
        source_uri=_text("s3://", validation.MAX_URI_LENGTH),
        external_id=_text(f"v{salt}", validation.MAX_NAME_LENGTH),
        custom_properties=properties,
        tags=tags,
    )
    request = api.CreateModelVersionRequest(model_version=version)
    return (await stub.CreateModelVersion(request)).model_version


async def test_a_model_at_the_limits_is_read_through_the_least_messages(
    least_messages: rpc.RegistryServiceStub, server_port: int, unique: str
) -> None:
    """LEAST_MESSAGE_BYTES carries the largest model answer there is: a model at every
    limit with 4 latest versions at every limit is read by id, by name, and on a page
    (below about 6.2 MiB, each was RESOURCE_EXHAUSTED)."""
    project = await new_project(server_port, f"least-{unique}")
    model = await _model_at_the_limits(least_messages, project)
    request = api.GetRegisteredModelRequest(project=project, id=model.id)
    answer = await least_messages.GetRegisteredModel(request)
    # What is read is at the limits the bound is computed from, not well short of them.
    assert MOST_ANSWERED - 64 * 1024 < answer.ByteSize() <= MOST_ANSWERED
    assert len(answer.registered_model.latest_versions) == len(STAGES)
    assert len(answer.registered_model.aliases) == validation.MAX_ALIASES
    page = await least_messages.ListRegisteredModels(
        api.ListRegisteredModelsRequest(project=project)
    )
    assert page.registered_models == [answer.registered_model]
    found = api.FindRegisteredModelRequest(project=project, name=model.name)
    assert (await least_messages.FindRegisteredModel(found)).registered_model.id == model.id
