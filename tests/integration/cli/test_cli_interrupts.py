"""Ctrl-C stops a `cairn` command with the status a shell gives an interrupted one
(130, 128 + SIGINT) and no traceback, so a script can tell it from a failed call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cairn
from cairn.types import Param
from tests.conftest import eventually
from tests.e2e.cli_helpers import blocked_writing_to_a_pipe, environment
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


@pytest.mark.parametrize("unbuffered", ["1", ""])
async def test_a_listing_blocked_on_a_full_pipe_ends_at_the_first_interrupt(
    server_port: int, unique: str, tmp_path: Path, unbuffered: str
) -> None:
    """Its write, inside the command's event loop, was retried after the signal, and
    asyncio's handler waited for the loop to cancel its task: a listing piped into a
    pager that stopped reading took a second Ctrl-C."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment = await tracking.create_experiment(f"blocked-{unbuffered}-{unique}")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.log_batch(run, params=[Param(f"p{n}", "v" * 400) for n in range(200)])
    env = environment(
        tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}", PYTHONUNBUFFERED=unbuffered
    )
    assert await _interrupted_while_blocked(["runs", "list", "-e", experiment, "-o", "json"], env)


# A command of the CLI's own machinery (call, write_text, main) that writes small parts
# for ever, inside its event loop: what its buffer holds once a write is interrupted must
# not hold the exit.
_SMALL_PARTS = """
import click
from cairn import cli
from cairn.cli import _root
from cairn.cli._calls import call
from cairn.cli._output import write_text

@click.command("parts")
def parts():
    async def work(client):
        while True:
            write_text("x" * 999 + "\\n")
    call(work)

_root.cli.add_command(parts)
cli.main(["parts"])
"""


@pytest.mark.parametrize("unbuffered", ["1", ""])
async def test_output_in_small_parts_blocked_on_a_full_pipe_ends_at_the_first_interrupt(
    tmp_path: Path, unbuffered: str
) -> None:
    """The interrupt stopped the write, but the flush at the end tried again what the
    buffer held, and waited for the reader for good."""
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1", PYTHONUNBUFFERED=unbuffered)
    assert await _interrupted_while_blocked(["-c", _SMALL_PARTS], env, program=sys.executable)


# A command whose Ctrl-C comes while it runs between awaits (here: waits for the signal
# without awaiting), then writes more than a pipe holds.
_INTERRUPTED_BEFORE_A_WRITE = """
import signal
import click
from cairn import cli
from cairn.cli import _root
from cairn.cli._calls import call
from cairn.cli._output import write_text

@click.command("late")
def late():
    async def work(client):
        signal.pause()
        write_text("x" * (4 << 20))
    call(work)

_root.cli.add_command(late)
cli.main(["late"])
"""


async def test_an_interrupt_between_awaits_ends_the_write_after_it(tmp_path: Path) -> None:
    """asyncio's handler cancelled the task, which would learn of it at its next await;
    the write before that waited on the full pipe for good, and a history of 30,000
    points piped into a pager that stopped reading took a second Ctrl-C."""
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1")
    command = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", _INTERRUPTED_BEFORE_A_WRITE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stderr is not None
    wchan = Path(f"/proc/{command.pid}/wchan")
    try:
        await eventually(lambda: wchan.read_text().endswith("pause"), what="it waits")
        command.send_signal(signal.SIGINT)  # its stdout left unread
        status = await asyncio.to_thread(command.wait, 20)
    finally:
        command.kill()
    assert status == 130
    assert b"Traceback" not in command.stderr.read()


# A command that writes while a timeout's cancel unwinds it: its task is cancelled, by
# no Ctrl-C.
_WRITES_AS_ITS_TIMEOUT_UNWINDS = """
import asyncio
import click
from cairn import cli
from cairn.cli import _root
from cairn.cli._calls import call
from cairn.cli._output import write_text

@click.command("timed")
def timed():
    async def work(client):
        try:
            async with asyncio.timeout(0.01):
                try:
                    await asyncio.Event().wait()  # until the timeout cancels it
                finally:
                    write_text("cleaning up\\n")
        except TimeoutError:
            raise click.ClickException("timed out") from None
    call(work)

_root.cli.add_command(timed)
cli.main(["timed"])
"""


def test_a_write_as_a_timeout_unwinds_the_command_is_no_interrupt(tmp_path: Path) -> None:
    """Any cancel of the task was taken for Ctrl-C: the write raised KeyboardInterrupt,
    and the command ended 130 with its own error unsaid."""
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-c", _WRITES_AS_ITS_TIMEOUT_UNWINDS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "cleaning up\n",
        "Error: timed out\n",
    )


async def _interrupted_while_blocked(
    argv: list[str], env: dict[str, str], program: str | None = None
) -> bool:
    """Whether the command, once its write waits on a pipe nobody reads, ends at one
    SIGINT with status 130 and no traceback."""
    command = await asyncio.to_thread(
        subprocess.Popen,
        [program or tool("cairn"), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stderr is not None
    try:
        await eventually(lambda: blocked_writing_to_a_pipe(command.pid), what="its write waits")
        command.send_signal(signal.SIGINT)  # its stdout left unread: the write stays blocked
        status = await asyncio.to_thread(command.wait, 20)
    finally:
        command.kill()
    return status == 130 and b"Traceback" not in command.stderr.read()


# A finder that sends the process SIGINT as gRPC is first looked for, while the command
# loads, then the console script's own lines (or a program's call of main).
_INTERRUPTED_LOADING = """
import os, signal, sys

class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupting())
sys.argv[1:] = ["experiments", "list"]
from cairn import cli
"""


def _interrupted_loading(tmp_path: Path, last_line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_LOADING + last_line],
        env=environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_interrupt_while_the_command_loads_ends_it_without_a_traceback(
    tmp_path: Path,
) -> None:
    """Loading the clients and gRPC takes about a third of a second, before the command's
    own handling of Ctrl-C begins: an interrupt then printed a KeyboardInterrupt traceback
    from whichever import it stopped."""
    ended = _interrupted_loading(tmp_path, "cli.console()\n")
    assert (ended.returncode, ended.stdout, ended.stderr) == (-signal.SIGINT, "", "")


def test_a_program_calling_main_gets_an_interrupt_while_it_loads_as_keyboard_interrupt(
    tmp_path: Path,
) -> None:
    """Not the console script's quiet end: that would kill a notebook's kernel."""
    script = "try:\n    cli.main()\nexcept KeyboardInterrupt:\n    print('caught')\n"
    ended = _interrupted_loading(tmp_path, script)
    assert (ended.returncode, ended.stdout) == (0, "caught\n"), ended.stderr
