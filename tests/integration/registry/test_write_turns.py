"""Writes to one model hold at most a quarter of the pool's connections, waiting their
turn in the server: waiting in PostgreSQL for a transaction holding the model, each held
a connection, and every other call of the server waited for the pool until it was
UNAVAILABLE (DATABASE_BUSY)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import grpc
import pytest

import cairn
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from cairn.types import RegisteredModel
from cairn_server.common.config import Config
from tests.conftest import answered_beside_waiters, serving_on_own_pool

POOL_SIZE = 8


def _client_writes(
    client: cairn.ModelRegistryAPIClient, model: RegisteredModel
) -> Awaitable[object]:
    """The writes to model, each with a request id of the client's."""
    name = model.name
    return asyncio.gather(
        *(client.create_model_version(name, f"s3://b/{n}") for n in range(POOL_SIZE)),
        *(client.set_registered_model_tag(name, f"t{n}", "v") for n in range(POOL_SIZE)),
    )


def _raw_writes(stub: rpc.RegistryServiceStub, model: RegisteredModel) -> Awaitable[object]:
    """The same writes as a client of another language may send them: without request
    ids (before 0b50611a, such writes took no turn)."""
    model_id = model.id or ""
    return asyncio.gather(
        *(
            stub.CreateModelVersion(
                api.CreateModelVersionRequest(
                    model_version=pb.ModelVersion(
                        project="default", registered_model_id=model_id, name=f"v{n}"
                    )
                )
            )
            for n in range(POOL_SIZE)
        ),
        *(
            stub.SetRegisteredModelTag(
                api.SetRegisteredModelTagRequest(
                    project="default", registered_model_id=model_id, key=f"t{n}", value="v"
                )
            )
            for n in range(POOL_SIZE)
        ),
    )


@pytest.mark.parametrize("raw", [False, True], ids=["by the client", "raw"])
async def test_writes_waiting_for_a_model_another_transaction_holds_leave_the_pool_to_others(
    config: Config, pool: asyncpg.Pool, unique: str, raw: bool
) -> None:
    name = f"held-{unique}"
    async with (
        serving_on_own_pool(config, ["registry"], POOL_SIZE, db_acquire_timeout_seconds=1) as port,
        cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", port) as client,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        model = await client.create_registered_model(name)
        other = await client.create_registered_model(f"other-{unique}")
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(  # as a delete of the model does, until it commits
                "SELECT FROM registry.registered_models WHERE id = $1::bigint FOR UPDATE",
                int(model.id or 0),
            )
            stub = rpc.RegistryServiceStub(channel)
            writes = _raw_writes(stub, model) if raw else _client_writes(client, model)
            found, waiting = await answered_beside_waiters(  # get_... was UNAVAILABLE
                pool, POOL_SIZE // 4, client.get_registered_model(other.name), "writes waiting"
            )

        await writes
        versions = await client.search_model_versions(f"name = '{name}'")
        tags = (await client.get_registered_model(name)).tags

    assert found.id == other.id
    assert waiting == POOL_SIZE // 4  # the client names the model by its id
    assert sorted(version.version or 0 for version in versions) == list(range(1, POOL_SIZE + 1))
    assert tags == {f"t{n}": "v" for n in range(POOL_SIZE)}
