"""A project of the test's own with an experiment and a run, and the clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cairn
from tests.conftest import new_project


@dataclass
class World:
    port: int
    project: str
    tracking: cairn.TrackingClient
    registry: cairn.ModelRegistryAPIClient
    store: cairn.ArtifactClient
    experiment_id: str
    run_id: str
    cache: Path

    async def new_run(self) -> str:
        return (await self.tracking.create_run(self.experiment_id)).info.run_id


@pytest.fixture
async def world(server_port: int, unique: str, tmp_path: Path) -> AsyncIterator[World]:
    project = await new_project(server_port, f"m-{unique}")
    connect: dict[str, Any] = {"project": project, "timeout": None}
    async with (
        cairn.TrackingClient.insecure_connection("127.0.0.1", server_port, **connect) as tracking,
        cairn.ModelRegistryAPIClient.insecure_connection(
            "127.0.0.1", server_port, **connect
        ) as registry,
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port, **connect) as store,
    ):
        experiment_id = await tracking.create_experiment("models")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        yield World(
            server_port,
            project,
            tracking,
            registry,
            store,
            experiment_id,
            run_id,
            tmp_path / "cache",
        )
