"""The CLI's output through a pipe: a reader that leaves before all is written makes
the command fail (status 1), one large answer too; listings are printed as their pages
arrive, project members too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

import cairn
from cairn.types import ProjectRole
from tests.conftest import eventually
from tests.e2e.cli_helpers import PIPE_BYTES, environment, run_cairn, waiting_in_pipe
from tests.e2e.conftest import tool


@pytest.mark.parametrize("unbuffered", ["1", ""])
@pytest.mark.parametrize("output", ["table", "json"])
async def test_a_reader_gone_during_one_large_answer_fails_the_command(
    server_port: int, unique: str, tmp_path: Path, output: str, unbuffered: str
) -> None:
    """A describe is one write, larger than the pipe. The reader left while it waited:
    unbuffered (PYTHONUNBUFFERED), the kernel took part of it, the rest was dropped
    without a word, and status 0 told a script all was well."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        run = (await tracking.create_run(await tracking.create_experiment(unique))).info.run_id
        await tracking.log_batch(
            run, params=[cairn.types.Param(f"p{n}", "v" * 400) for n in range(200)]
        )
    describe = await asyncio.to_thread(
        subprocess.Popen,
        [tool("cairn"), "runs", "describe", run, "-o", output],
        env=environment(
            tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}", PYTHONUNBUFFERED=unbuffered
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert describe.stdout is not None and describe.stderr is not None
    pipe = describe.stdout.fileno()
    await eventually(lambda: waiting_in_pipe(pipe) >= PIPE_BYTES, what="the pipe full")
    os.read(pipe, 100)  # as `head -c 100` does, then leaves
    describe.stdout.close()
    assert await asyncio.to_thread(describe.wait, 60) == 1
    assert describe.stderr.read() == b""  # quietly, as for `| head`


async def test_project_members_are_printed_as_their_pages_arrive(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    """They were all read before the first was printed: a member added once the
    listing began printing, on its second page, was not listed."""
    project = f"members-{unique}"
    async with cairn.AuthClient.insecure_connection("127.0.0.1", server_port) as auth:
        await auth.create_project(project)
        # A page and one more; user ids long enough that the page outgrows a pipe.
        for n in range(1001):
            await auth.add_user_project_role(f"u{n:04}-{'x' * 100}", project, ProjectRole.VIEWER)
        listing = await asyncio.to_thread(
            subprocess.Popen,
            [tool("cairn"), "projects", "members", project, "-o", "json"],
            env=environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}"),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listing.stdout is not None
        first = await asyncio.to_thread(listing.stdout.readline)
        await auth.add_user_project_role("zz-late", project, ProjectRole.VIEWER)
    rest = await asyncio.to_thread(listing.stdout.read)
    assert await asyncio.to_thread(listing.wait, 60) == 0
    members = [member["user_id"] for member in json.loads(first + rest)]
    assert len(members) == 1002 and members[-1] == "zz-late"


def test_a_local_error_naming_a_hostile_path_is_one_line(tmp_path: Path) -> None:
    done = run_cairn(
        "sync",
        str(tmp_path / "no\nsuch\u202efile"),
        env=environment(tmp_path, CAIRN_ADDRESS="cairn.invalid:1"),
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "\u202e" not in done.stderr
    assert "no\\x0asuch\\u202efile" in done.stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
async def test_a_listing_in_an_encoding_with_a_byte_order_mark_has_one(
    server_port: int, unique: str, tmp_path: Path, encoding: str
) -> None:
    """Its parts are written apart; each began with a mark of its own, which made the
    JSON unreadable."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        await tracking.create_experiment(f"marked-{unique}")
    env = environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{server_port}", PYTHONIOENCODING=encoding)
    listing = await asyncio.to_thread(
        subprocess.run,
        [
            tool("cairn"),
            "experiments",
            "list",
            "--filter",
            f"name = 'marked-{unique}'",
            "-o",
            "json",
        ],
        env=env,
        capture_output=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert [e["name"] for e in json.loads(listing.stdout.decode(encoding))] == [f"marked-{unique}"]
