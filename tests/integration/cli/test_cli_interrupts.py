"""Ctrl-C stops a `cairn` command with the status a shell gives an interrupted one
(130, 128 + SIGINT) and no traceback, so a script can tell it from a failed call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cairn
from cairn.types import Param
from tests.conftest import eventually
from tests.e2e.cli_helpers import PIPE_BYTES, environment, waiting_in_pipe
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


async def test_a_listing_blocked_on_a_full_pipe_ends_at_the_first_interrupt(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    """Its write, inside the command's event loop, was retried after the signal, and
    asyncio's handler waited for the loop to cancel its task: a listing piped into a
    pager that stopped reading took a second Ctrl-C."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment = await tracking.create_experiment(f"blocked-{unique}")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.log_batch(run, params=[Param(f"p{n}", "v" * 400) for n in range(200)])
    listing = await asyncio.to_thread(
        subprocess.Popen,
        [tool("cairn"), "runs", "list", "-e", experiment, "-o", "json"],
        env=environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert listing.stdout is not None and listing.stderr is not None
    pipe = listing.stdout.fileno()
    try:
        await eventually(lambda: waiting_in_pipe(pipe) >= PIPE_BYTES, what="the pipe full")
        listing.send_signal(signal.SIGINT)  # its stdout left unread: the write stays blocked
        assert await asyncio.to_thread(listing.wait, 20) == 130
    finally:
        listing.kill()
    assert b"Traceback" not in listing.stderr.read()
