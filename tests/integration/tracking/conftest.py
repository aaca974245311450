from collections.abc import AsyncIterator

import pytest

import cairn


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
