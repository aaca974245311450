"""Ctrl-C stops a `cairn` command with the status a shell gives an interrupted one
(130, 128 + SIGINT) and no traceback, so a script can tell it from a failed call."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.e2e.cli_helpers import environment
from tests.e2e.conftest import tool
from tests.proxy import StallingProxy


@pytest.fixture
async def silent_server() -> AsyncIterator[StallingProxy]:
    """An address that takes connections and never answers: a call to it waits."""
    proxy = StallingProxy("127.0.0.1", 9)
    proxy.stall()
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_an_interrupted_command_ends_with_status_130(
    silent_server: StallingProxy, tmp_path: Path
) -> None:
    """It ended "Aborted!" with status 1, the status of a call that failed."""
    env = environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{silent_server.port}")
    command = await asyncio.create_subprocess_exec(
        tool("cairn"),
        "experiments",
        "list",
        "--timeout",
        "60",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await eventually(lambda: silent_server.unanswered > 0)  # its call is under way
    command.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(command.communicate(), 30)
    assert command.returncode == 130, stderr
    assert b"Traceback" not in stderr
