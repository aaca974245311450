"""Garbage collection and operations are the global admins' alone: a project admin
can neither start one nor read one."""

from __future__ import annotations

import datetime

import pytest

import cairn
from cairn.exceptions import PermissionDeniedError
from cairn.types import OperationState
from tests.integration.auth.conftest import World


def _operations(world: World, who: str) -> cairn.OperationsClient:
    return cairn.OperationsClient.insecure_connection("127.0.0.1", world.port, world.keys[who])


async def test_only_a_global_admin_starts_or_reads_garbage_collection(world: World) -> None:
    # A cut-off far back: no experiment or run other tests deleted goes. It still
    # drains locations already queued and prunes expired request ids.
    far_back = datetime.timedelta(days=3650)
    async with _operations(world, "global_admin") as root:
        started = await root.start_garbage_collection(far_back)
    for who in ("admin", "editor", "viewer"):
        async with _operations(world, who) as client:
            with pytest.raises(PermissionDeniedError) as denied:
                await client.start_garbage_collection(far_back)
            assert denied.value.reason == "PERMISSION_DENIED"
            with pytest.raises(PermissionDeniedError):
                await client.get_operation(started.name)
            with pytest.raises(PermissionDeniedError):
                await client.get_operations()
    # Not left running as the module's server stops: another test's server would take
    # it over, and drain the artifacts that test queued, in the middle of it.
    async with _operations(world, "global_admin") as root:
        done = await root.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED, done.errors
