from collections.abc import AsyncIterator

import pytest

import cairn
from tests.conftest import new_project


@pytest.fixture
async def mr_client(server_port: int, unique: str) -> AsyncIterator[cairn.ModelRegistryAPIClient]:
    """A client in a project of its own, so lists see only this test's objects."""
    project = await new_project(server_port, f"p-{unique}")
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        yield client
