from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn_server.common.config import Config
from tests.conftest import serving


@pytest.fixture
async def tracking(server_port: int) -> AsyncIterator[cairn.TrackingClient]:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        yield client


@pytest.fixture
async def experiment_id(tracking: cairn.TrackingClient, unique: str) -> str:
    return await tracking.create_experiment(f"exp-{unique}")


@pytest.fixture
async def run_id(tracking: cairn.TrackingClient, experiment_id: str) -> str:
    return (await tracking.create_run(experiment_id)).info.run_id


@pytest.fixture
async def small_messages(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """A tracking server whose largest message is 1 MiB, the least a server may be given."""
    async with serving(config, pool, ["tracking"], max_message_bytes=1024 * 1024) as port:
        yield port
