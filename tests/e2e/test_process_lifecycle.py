"""Starting, migrating and stopping the server process."""

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys

import asyncpg
import pytest

from cairn_server.common.migrations import ADVISORY_LOCK_KEY
from tests.conftest import eventually
from tests.e2e.cli_helpers import read_to_the_end
from tests.e2e.conftest import run_tool, spawn_server, start_server, tool

pytestmark = pytest.mark.e2e


def test_sigterm_ends_the_server_within_the_grace_period(tmp_path) -> None:
    server = start_server(tmp_path, "--shutdown-grace-seconds", "3")
    assert server.terminate(timeout=10) == 0
    lines = server.log_lines()
    assert lines[-1]["event"] == "stopped"
    shutting_down = [line for line in lines if line["event"] == "shutting down"]
    assert [line["signal"] for line in shutting_down] == ["SIGTERM"]


def test_a_single_service_runs_alone(tmp_path) -> None:
    server = start_server(tmp_path, "registry")
    try:
        listed = run_tool(tool("grpcurl"), "-plaintext", server.address, "list")
        assert "cairn.registry.v1.RegistryService" in listed.stdout
        assert "cairn.tracking.v1.TrackingService" not in listed.stdout
    finally:
        assert server.terminate(timeout=10) == 0


def test_migrate_command_applies_and_exits(tmp_path) -> None:
    result = run_tool(tool("cairn"), "migrate", "--data-dir", str(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "migrations up to date" in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["migrate", "serve"])
@pytest.mark.parametrize("unusable", ["a file", "under a file"])
def test_an_unusable_data_dir_is_named_with_its_setting(tmp_path, command, unusable) -> None:
    """`cairn migrate` ended in "Error: unexpected NotADirectoryError", the path of our
    own bugs, and `cairn serve` in "[Errno 20] Not a directory": neither named the
    setting to change."""
    afile = tmp_path / "afile"
    afile.write_text("")
    data_dir = afile if unusable == "a file" else afile / "data"
    result = run_tool(
        tool("cairn"), command, "--listen-address", "127.0.0.1:0", "--data-dir", str(data_dir)
    )
    assert result.returncode == 1, result.stderr
    said = result.stderr.splitlines()[-1]  # after a warning of platformdirs, say
    assert said.startswith(f"cairn {command}: the data directory {data_dir} cannot")
    assert "(Not a directory: " in said
    assert "set CAIRN_DATA_DIR (--data-dir)" in said
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr


def test_unknown_service_is_a_usage_error(tmp_path) -> None:
    result = run_tool(tool("cairn"), "serve", "nope", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown service nope" in result.stderr
    # "unknown service all", though `serve all` is the default's name.
    result = run_tool(tool("cairn"), "serve", "all", "tracking", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "all (every service) goes alone" in result.stderr


def test_prometheus_metrics_count_calls_and_show_the_pool(tmp_path) -> None:
    import urllib.request

    from tests.e2e.conftest import free_port

    metrics_port = free_port()
    server = start_server(tmp_path, "--metrics-address", f"127.0.0.1:{metrics_port}")
    try:
        checked = run_tool(
            tool("grpcurl"), "-plaintext", "-d", "{}", server.address, "grpc.health.v1.Health/Check"
        )
        assert checked.returncode == 0, checked.stderr
        with urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
        ) as reply:
            text = reply.read().decode()
    finally:
        assert server.terminate(timeout=10) == 0
    assert 'cairn_rpc_calls_total{code="OK",method="/grpc.health.v1.Health/Check"} 1.0' in text
    assert 'cairn_rpc_duration_seconds_count{method="/grpc.health.v1.Health/Check"} 1.0' in text
    assert "cairn_db_pool_max 10.0" in text


def test_a_second_server_on_a_port_in_use_exits_with_a_clear_message(tmp_path) -> None:
    (tmp_path / "first").mkdir()
    first = start_server(tmp_path / "first")
    try:
        second = run_tool(
            tool("cairn"),
            "serve",
            "--listen-address",
            first.address,
            "--data-dir",
            str(tmp_path / "second"),
            timeout=60,
        )
        assert second.returncode == 1
        assert f"cannot listen on {first.address}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        assert first.terminate(timeout=10) == 0


async def test_calls_caught_by_shutdown_are_unavailable(tmp_path) -> None:
    import asyncio
    import signal

    import cairn
    from cairn.exceptions import CairnError
    from tests.conftest import eventually

    server = start_server(tmp_path, "--shutdown-grace-seconds", "2")
    host, port = server.address.split(":")
    codes: dict[str, int] = {}
    stop = asyncio.Event()

    async def caller(tracking: cairn.TrackingClient, experiment_id: str) -> None:
        while not stop.is_set():
            try:
                await tracking.get_experiment(experiment_id, timeout=5)
                codes["OK"] = codes.get("OK", 0) + 1
            except CairnError as error:
                codes[error.code.name] = codes.get(error.code.name, 0) + 1
                if error.code.name == "UNAVAILABLE":
                    return  # the server is gone

    async with cairn.TrackingClient.insecure_connection(host, int(port)) as tracking:
        experiment_id = await tracking.create_experiment("shutdown")
        callers = [asyncio.ensure_future(caller(tracking, experiment_id)) for _ in range(16)]
        await eventually(lambda: codes.get("OK", 0) >= 200, what="calls flowing")
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 30)
        stop.set()
        await asyncio.gather(*callers)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes


async def test_an_upload_cut_by_the_end_of_the_grace_period_is_unavailable(tmp_path) -> None:
    import asyncio
    import signal

    import cairn
    from cairn.artifacts.v1 import artifacts_service_pb2 as api
    from cairn.exceptions import UnavailableError

    server = start_server(tmp_path, "--shutdown-grace-seconds", "1")
    host, port = server.address.split(":")
    sent = asyncio.Event()

    async def slow_upload(store: cairn.ArtifactClient) -> None:
        async def requests():
            yield api.UploadRequest(header=api.UploadHeader(project="default", path="slow.bin"))
            yield api.UploadRequest(chunk=b"x" * 1024)
            sent.set()
            while True:  # a client that sends slower than any grace period lasts
                await asyncio.sleep(0.2)  # pacing the client, not waiting for a condition
                yield api.UploadRequest(chunk=b"x" * 1024)

        await store._transport.client_stream(store._stub.Upload, requests())

    async with cairn.ArtifactClient.insecure_connection(host, int(port)) as store:
        upload = asyncio.ensure_future(slow_upload(store))
        await sent.wait()
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(UnavailableError):
            await upload
    assert server.process.wait(timeout=30) == 0
    cut = [
        (line["code"], line.get("reason"))
        for line in server.log_lines()
        if line.get("method", "").endswith("/Upload")
    ]
    assert cut == [("UNAVAILABLE", "SHUTTING_DOWN")]


async def test_a_second_signal_stops_at_once(tmp_path) -> None:
    import asyncio
    import signal

    import cairn
    from cairn.artifacts.v1 import artifacts_service_pb2 as api
    from tests.conftest import eventually

    server = start_server(tmp_path, "--shutdown-grace-seconds", "3600")
    host, port = server.address.split(":")
    sent = asyncio.Event()

    async def held_upload(store: cairn.ArtifactClient) -> None:
        async def requests():
            yield api.UploadRequest(header=api.UploadHeader(project="default", path="held.bin"))
            yield api.UploadRequest(chunk=b"x")
            sent.set()
            await asyncio.Event().wait()  # a client that holds its call open

        await store._transport.client_stream(store._stub.Upload, requests())

    async def shutting_down() -> bool:
        return any(line["event"] == "shutting down" for line in server.log_lines())

    try:
        async with cairn.ArtifactClient.insecure_connection(host, int(port)) as store:
            upload = asyncio.ensure_future(held_upload(store))
            await sent.wait()
            server.process.send_signal(signal.SIGTERM)
            await eventually(shutting_down, what="the server shutting down")
            server.process.send_signal(signal.SIGINT)
            # The grace period is an hour: only the second signal ends it this soon.
            assert await asyncio.to_thread(server.process.wait, 30) == 0
            upload.cancel()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    events = [line["event"] for line in server.log_lines()]
    assert "stopping at once" in events and "stopped" in events


@pytest.mark.parametrize("auth", ["none", "api_key"])
async def test_a_second_signal_cuts_a_call_waiting_on_the_database_at_once(
    tmp_path, fresh_url: str, auth: str
) -> None:
    """A second signal cancelled the stop but left gRPC serving: the process then closed
    its pool under a call waiting on a lock, waited POOL_CLOSE_SECONDS (5) for it,
    logged 'database connections dropped unclosed', and answered the call UNAVAILABLE
    DATABASE_UNAVAILABLE, though the database was well. With keys (api_key), it did so
    still after that was fixed, for the key cache's listening connection: the stop it
    cancelled was the one to give it back."""
    import asyncio
    import signal
    import time

    import asyncpg
    import grpc

    from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
    from cairn_server.auth.store import AuthStore
    from cairn_server.common.database import POOL_CLOSE_SECONDS
    from tests.conftest import eventually

    server = start_server(
        tmp_path,
        "tracking",
        "--shutdown-grace-seconds",
        "3600",
        env={"CAIRN_DATABASE_URL": fresh_url, "CAIRN_AUTH": auth},
    )
    locker = await asyncpg.connect(fresh_url)
    metadata: tuple[tuple[str, str], ...] = ()
    if auth == "api_key":
        pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=1)
        try:
            key, _ = await AuthStore(pool).create_key("root", "k", None, global_admin=True)
        finally:
            await pool.close()
        metadata = (("authorization", f"Bearer {key}"),)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
            created = await stub.CreateExperiment(
                tracking_service_pb2.CreateExperimentRequest(name=f"cut-{tmp_path.name}"),
                metadata=metadata,
            )
            run = await stub.CreateRun(
                tracking_service_pb2.CreateRunRequest(
                    experiment_id=created.experiment.experiment_id
                ),
                metadata=metadata,
            )
            param = tracking_pb2.Param(key="blocked", value="v")
            async with locker.transaction():
                await locker.execute("LOCK TABLE tracking.params IN EXCLUSIVE MODE")
                call = stub.LogParam(
                    tracking_service_pb2.LogParamRequest(run_id=run.run.info.run_id, param=param),
                    timeout=60,
                    metadata=metadata,
                )

                async def waits_on_the_lock() -> bool:
                    return bool(
                        await locker.fetchval(
                            """SELECT count(*) FROM pg_stat_activity
                               WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"""
                        )
                    )

                await eventually(waits_on_the_lock, what="the call waiting on the lock")
                server.process.send_signal(signal.SIGTERM)

                async def shutting_down() -> bool:
                    return any(line["event"] == "shutting down" for line in server.log_lines())

                await eventually(shutting_down, what="the server shutting down")
                server.process.send_signal(signal.SIGINT)
                signalled = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                # The grace period is an hour: only the second signal ends it this soon.
                assert await asyncio.to_thread(server.process.wait, 30) == 0
                assert time.monotonic() - signalled < POOL_CLOSE_SECONDS
    finally:
        await locker.close()
        if server.process.poll() is None:
            server.process.kill()
    lines = server.log_lines()
    assert "database connections dropped unclosed" not in [line["event"] for line in lines]
    cut = [
        (line["code"], line.get("reason"))
        for line in lines
        if line.get("method", "").endswith("/LogParam")
    ]
    assert cut == [("UNAVAILABLE", "SHUTTING_DOWN")]


async def test_a_second_signal_stops_at_once_with_a_direct_transfer_under_way(tmp_path) -> None:
    """The byte endpoint waits for its transfers within the grace period on a thread of
    its own, which a second signal does not wait for."""
    import asyncio
    import signal
    import socket

    import grpc

    from cairn.artifacts.v1 import artifacts_service_pb2 as api
    from cairn.artifacts.v1 import artifacts_service_pb2_grpc
    from tests.conftest import eventually

    server = start_server(
        tmp_path, "--shutdown-grace-seconds", "3600", env={"CAIRN_ARTIFACT_DIRECT": "true"}
    )
    host, _ = server.address.split(":")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await artifacts_service_pb2_grpc.ArtifactServiceStub(
                channel
            ).CreateUploadTicket(
                api.CreateUploadTicketRequest(
                    header=api.UploadHeader(project="default", path="held.bin", expected_size=1000)
                )
            )
        ticket = reply.ticket
        with socket.create_connection((host, ticket.port), timeout=10) as held:
            head = (
                f"PUT /v1/transfers/{ticket.ticket} HTTP/1.1\r\n"
                "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            )
            held.sendall(head.encode())
            # The endpoint took the ticket: the transfer is under way.
            assert held.recv(64).startswith(b"HTTP/1.1 100")
            held.sendall(b"a\r\n0123456789\r\n")
            server.process.send_signal(signal.SIGTERM)

            async def shutting_down() -> bool:
                return any(line["event"] == "shutting down" for line in server.log_lines())

            await eventually(shutting_down, what="the server shutting down")
            server.process.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(server.process.wait, 30) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert "stopping at once" in [line["event"] for line in server.log_lines()]


@pytest.mark.parametrize("sent", ["SIGTERM", "SIGINT"])
async def test_a_signal_while_waiting_for_migrations_stops_gracefully(
    tmp_path, fresh_url: str, sent: str
) -> None:
    """A server waits before it serves for the migrations another process is applying
    (an hour, by deploy.md's startup probe), when a rollout's SIGTERM may well come.
    Its signals were handled only once it served: SIGTERM killed it (exit 143, neither
    'shutting down' nor 'stopped' logged) and SIGINT ended in 'Aborted!' (exit 1)."""
    holder = await asyncpg.connect(fresh_url)
    await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    server = await asyncio.to_thread(spawn_server, tmp_path, env={"CAIRN_DATABASE_URL": fresh_url})

    def events() -> list[str]:
        return [line["event"] for line in server.log_lines()]

    try:
        waiting = "waiting for the migrations another process is applying"
        await eventually(lambda: waiting in events(), 60, "the server waiting for migrations")
        server.process.send_signal(getattr(signal, sent))
        exited = await asyncio.to_thread(server.process.wait, 30)
        assert exited == 0, server.log_path.read_text()
    finally:
        if server.process.poll() is None:
            server.process.kill()
        await holder.close()
    assert events()[-2:] == ["shutting down", "stopped"]
    assert "serving" not in events()


async def test_a_signal_while_the_embedded_postgres_starts_is_acted_on_once_it_is_up(
    tmp_path,
) -> None:
    """'stopped' stays the last word. Before, the signal cancelled the wait for the
    embedded PostgreSQL's start but not the thread starting it: 'stopped' was logged,
    then 'embedded postgres ready', and the exit waited for the thread."""
    server = await asyncio.to_thread(spawn_server, tmp_path)
    try:
        starting = tmp_path / "postgres"  # made before initdb, which takes a second or more
        await eventually(starting.exists, 60, "the embedded PostgreSQL starting")
        server.process.send_signal(signal.SIGTERM)
        exited = await asyncio.to_thread(server.process.wait, 60)
        assert exited == 0, server.log_path.read_text()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    events = [line["event"] for line in server.log_lines()]
    assert events[-3:] == ["embedded postgres ready", "shutting down", "stopped"]


# Runs a command with SIGHUP as given (a test process may ignore it, as under nohup).
_WITH_SIGHUP = (
    "import os, signal, sys; signal.signal(signal.SIGHUP, getattr(signal, sys.argv[1]));"
    " os.execv(sys.argv[2], sys.argv[2:])"
)


def _serve_on_a_terminal(data_dir, sighup: str) -> tuple[subprocess.Popen[bytes], int]:
    """`cairn serve` writing to a terminal (a pseudo-terminal's follower), once it
    serves; the process, and the terminal's leader, whose closing closes the terminal."""
    leader, follower = pty.openpty()
    argv = [tool("cairn"), "serve", "--log-format", "json", "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [sys.executable, "-c", _WITH_SIGHUP, sighup, *argv], stdout=follower, stderr=follower
    )
    os.close(follower)
    shown = b""
    while b'"serving"' not in shown:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, shown.decode(errors="replace")
        shown += os.read(leader, 65536)
    return process, leader


def test_a_closed_terminal_stops_the_server_and_its_embedded_postgres(tmp_path) -> None:
    """SIGHUP, which a terminal closed under `cairn serve` sends, killed the server at
    once, and its embedded PostgreSQL, which the server's exit stops, was left running.
    The terminal gone, a log line raises EIO: the first one stopped the stop too."""
    process, leader = _serve_on_a_terminal(tmp_path, "SIG_DFL")
    os.close(leader)  # the terminal closed: its writes now fail
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_nohup_keeps_the_server_serving_past_its_terminal(tmp_path) -> None:
    """A server started with SIGHUP ignored (`nohup cairn serve`) was asked to outlive
    its terminal: the SIGHUP is left ignored, and the SIGTERM after it stops it."""
    process, leader = _serve_on_a_terminal(tmp_path, "SIG_IGN")
    try:
        process.send_signal(signal.SIGHUP)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        shown = read_to_the_end(leader).decode()
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    lines = [json.loads(line) for line in shown.splitlines() if line.startswith("{")]
    assert [line["signal"] for line in lines if line["event"] == "shutting down"] == ["SIGTERM"]
    assert lines[-1]["event"] == "stopped"


def test_a_misspelt_setting_is_warned_of_naming_the_nearest(tmp_path) -> None:
    """CAIRN_SHUTDOWN_GRACE_SECOND=5 left the grace at its default without a word."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env["CAIRN_SHUTDOWN_GRACE_SECOND"] = "5"
    argv = [tool("cairn"), "migrate", "--log-format", "json", "--data-dir", str(tmp_path)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    warned = [
        line
        for line in map(json.loads, (done.stdout + done.stderr).splitlines())
        if line["event"] == "no setting reads this variable"
    ]
    assert warned == [
        {
            "variable": "CAIRN_SHUTDOWN_GRACE_SECOND",
            "did_you_mean": "CAIRN_SHUTDOWN_GRACE_SECONDS",
            "event": "no setting reads this variable",
            "level": "warning",
            "timestamp": warned[0]["timestamp"],
        }
    ]
