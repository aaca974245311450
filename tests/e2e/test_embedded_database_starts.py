"""The embedded PostgreSQL starts after the ways a start or a server can end badly: the
whole process tree killed while the first start creates the cluster, a postmaster.pid
whose pid another process took after a crash, a server killed alone, Ctrl-C during the
first start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from pgserver._commands import POSTGRES_BIN_PATH
from pgserver.utils import ensure_prefix_permissions

import cairn
from tests.conftest import eventually
from tests.e2e.conftest import (
    ServerProcess,
    free_port,
    run_tool,
    spawn_server,
    start_server,
    tool,
)

pytestmark = pytest.mark.e2e


def _building_cluster(root: psutil.Process) -> bool:
    """Whether initdb runs the PostgreSQL that builds the cluster (bootstrap, then
    single-user mode), having written the directory's first files, PG_VERSION among
    them. Its earlier runs only probe settings; a signal to those goes unnoticed."""
    try:
        return any(
            {"--boot", "--single"} & set(" ".join(proc.cmdline()).split())
            for proc in root.children(recursive=True)
        )
    except psutil.Error:
        return False


def _postgres_of(data_dir: Path) -> list[psutil.Process]:
    """The PostgreSQL processes working in data_dir; their postmaster leaves the
    server's process tree when it starts."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(data_dir / "postgres") in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)


def _kill_tree(server: ServerProcess, data_dir: Path) -> None:
    """As a container's kill does: the server, its children and its PostgreSQL at once."""
    root = psutil.Process(server.process.pid)
    _kill([root, *root.children(recursive=True), *_postgres_of(data_dir)])
    server.process.wait(timeout=30)


async def _serves(server: ServerProcess) -> str:
    async with cairn.Client(f"http://{server.address}", timeout=30) as client:
        experiment = await client.tracking.create_experiment("after")
        await client.tracking.create_run(experiment)
        return experiment


async def _next_start_serves(data_dir: Path, earlier_log: str) -> None:
    """Starts the server again on data_dir (the earlier start's log kept aside as
    earlier_log), checks that it serves, and stops it."""
    (data_dir / "server.log").rename(data_dir / earlier_log)
    server = await asyncio.to_thread(start_server, data_dir)
    try:
        await _serves(server)
    finally:
        _stop(server, data_dir)


def _stop(server: ServerProcess, data_dir: Path) -> None:
    try:
        assert server.terminate(timeout=60) == 0, server.log_path.read_text()
    finally:
        _kill(_postgres_of(data_dir))


async def test_a_first_start_killed_with_its_children_while_initdb_runs_is_completed_by_the_next(
    tmp_path: Path,
) -> None:
    """Before, initdb's half-made cluster stayed in place and every later start failed
    ("unexpected CalledProcessError", or "unexpected AssertionError: _lines ..."
    once PostgreSQL had run in it). Nothing can have been stored in it."""
    first = await asyncio.to_thread(spawn_server, tmp_path)
    root = psutil.Process(first.process.pid)
    await eventually(lambda: _building_cluster(root), 60, "initdb building the cluster")
    _kill_tree(first, tmp_path)
    await _next_start_serves(tmp_path, "killed.log")


async def test_a_stale_postmaster_pid_whose_pid_another_process_took_is_set_aside(
    tmp_path: Path,
) -> None:
    """Before, every start failed with "[Errno 111] Connection refused": the pid alive
    was taken for PostgreSQL up."""
    server = await asyncio.to_thread(start_server, tmp_path)
    experiment = await _serves(server)
    _kill_tree(server, tmp_path)
    pid_file = tmp_path / "postgres" / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    unrelated = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        # Pids are reused: this process holds the dead postmaster's number now.
        pid_file.write_text("\n".join([str(unrelated.pid), *lines[1:]]) + "\n")
        (tmp_path / "server.log").rename(tmp_path / "killed.log")
        server = await asyncio.to_thread(start_server, tmp_path)
        try:
            async with cairn.Client(f"http://{server.address}", timeout=30) as client:
                assert (await client.tracking.get_experiment(experiment)).name == "after"
        finally:
            _stop(server, tmp_path)
        held = psutil.Process(unrelated.pid).status()
        assert held != psutil.STATUS_ZOMBIE, "the unrelated process was signalled"
    finally:
        unrelated.kill()
        await unrelated.wait()


async def test_after_a_server_killed_the_next_to_exit_stops_the_database(
    tmp_path: Path,
) -> None:
    """pgserver stops the cluster when the last process on its list of users exits. A
    server killed stayed on it for good, so no clean exit after stopped PostgreSQL."""
    server = await asyncio.to_thread(start_server, tmp_path)
    server.process.kill()
    server.process.wait(timeout=30)
    try:
        (tmp_path / "server.log").rename(tmp_path / "killed.log")
        server = await asyncio.to_thread(start_server, tmp_path)  # adopts the running one
        await _serves(server)
        assert server.terminate(timeout=60) == 0, server.log_path.read_text()
        await eventually(lambda: not _postgres_of(tmp_path), 30, "PostgreSQL stopped")
    finally:
        _kill(_postgres_of(tmp_path))


async def test_a_server_killed_while_another_runs_leaves_the_database_to_that_ones_exit(
    tmp_path: Path,
) -> None:
    """The killed one is taken off pgserver's list at the other's exit too, not only by
    a start after it."""
    first = await asyncio.to_thread(start_server, tmp_path)
    (tmp_path / "server.log").rename(tmp_path / "first.log")
    try:
        second = await asyncio.to_thread(start_server, tmp_path)
        first.process.kill()
        first.process.wait(timeout=30)
        await _serves(second)
        assert second.terminate(timeout=60) == 0, second.log_path.read_text()
        await eventually(lambda: not _postgres_of(tmp_path), 30, "PostgreSQL stopped")
    finally:
        first.process.kill()
        _kill(_postgres_of(tmp_path))


async def test_ctrl_c_during_the_first_start_stops_the_server_once_postgres_is_up(
    tmp_path: Path,
) -> None:
    """Ctrl-C signals the whole foreground process group, initdb included. Before, the
    server exited 1 with "unexpected CalledProcessError"."""
    first = await asyncio.to_thread(_spawn_in_own_group, tmp_path)
    try:
        root = psutil.Process(first.process.pid)
        await eventually(lambda: _building_cluster(root), 60, "initdb building the cluster")
        os.killpg(first.process.pid, signal.SIGINT)
        exited = await asyncio.to_thread(first.process.wait, 60)
        assert exited == 0, first.log_path.read_text()
    finally:
        if first.process.poll() is None:
            first.process.kill()
        _kill(_postgres_of(tmp_path))
    events = [line["event"] for line in first.log_lines()]
    assert events[-3:] == ["embedded postgres ready", "shutting down", "stopped"]
    await _next_start_serves(tmp_path, "interrupted.log")


async def test_a_cluster_an_older_cairn_left_unfinished_is_named_with_what_to_do(
    tmp_path: Path,
) -> None:
    """Before this version, initdb built the cluster in place: killed in its last step
    it left one pgserver took for finished. Before, `cairn migrate` said "Error:
    unexpected AssertionError: _lines ...", and serve the same."""
    pgdata = tmp_path / "postgres"
    await _initdb_killed_in_single_user_mode(pgdata)

    done = await asyncio.to_thread(
        run_tool,
        tool("cairn"),
        "migrate",
        "--data-dir",
        str(tmp_path),
        timeout=120,
    )
    _kill(_postgres_of(tmp_path))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cairn migrate: the embedded PostgreSQL in {pgdata} "), last
    assert "nothing is stored in it. Move it aside and start again" in last, last


async def _initdb_killed_in_single_user_mode(pgdata: Path) -> None:
    """initdb run as pgserver runs it, killed with its children once its last step (a
    single-user PostgreSQL) has written its pid file."""
    pgdata.mkdir()
    user = None
    if os.geteuid() == 0:  # as pgserver: PostgreSQL does not run as root
        user = "pgserver"
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    initdb = await asyncio.create_subprocess_exec(
        *[str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres"],
        user=user,
        stdout=subprocess.DEVNULL,
    )
    root = psutil.Process(initdb.pid)
    pid_file = pgdata / "postmaster.pid"

    def in_last_step() -> bool:
        assert initdb.returncode is None, "initdb ended"
        return _in_single_user_mode(root) and pid_file.exists()

    await eventually(in_last_step, 60, "initdb's single-user PostgreSQL up")
    _kill([root, *root.children(recursive=True)])
    await initdb.wait()


def _in_single_user_mode(root: psutil.Process) -> bool:
    try:
        return any("--single" in proc.cmdline() for proc in root.children(recursive=True))
    except psutil.Error:
        return False


def _spawn_in_own_group(data_dir: Path) -> ServerProcess:
    """spawn_server's `cairn serve`, in a process group of its own as a shell runs a
    foreground command."""
    address = f"127.0.0.1:{free_port()}"
    log_path = data_dir / "server.log"
    env = {**os.environ, "CAIRN_DATA_DIR": str(data_dir), "CAIRN_LISTEN_ADDRESS": address}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [tool("cairn"), "serve", "--log-format", "json"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return ServerProcess(process, address, log_path)
