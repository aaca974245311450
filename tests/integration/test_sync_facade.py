"""The sync clients against the real services: the same calls, without `await`.

The servers run on the tests' event loop, so each scenario runs in a worker thread, as
a script's main thread would call a remote server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import gc
import io
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cairn import sync
from cairn._clients.journal import Journal
from cairn._sync.loop import Gate, run_until_stopped
from cairn.exceptions import ClientClosedError, FailedPreconditionError, NotFoundError
from cairn.types import (
    ListOptions,
    Metric,
    Operation,
    OperationState,
    Pager,
    RegisteredModel,
    RunInput,
    RunStatus,
)
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, new_project, with_overrides

T = TypeVar("T")


def _tracking(port: int, project: str) -> sync.TrackingClient:
    return sync.TrackingClient.insecure_connection("127.0.0.1", port, project=project)


async def test_tracking_runs_logs_and_streams(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> None:
        with _tracking(server_port, project) as tracking:
            experiment_id = tracking.create_experiment("sync")
            with tracking.start_run(experiment_id, run_name="r", batch_size=10) as run:
                for step in range(25):
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
                run.log_param("lr", "0.1")
                run_id = run.run_id
            finished = tracking.get_run(run_id)
            assert finished.info.status == "FINISHED"
            assert finished.data.params == {"lr": "0.1"}
            streamed = list(tracking.iter_metric_history(run_id, "loss"))
            assert [m.step for m in streamed] == list(range(25))
            assert len(tracking.get_metric_history(run_id, "loss")) == 25
            with pytest.raises(NotFoundError):
                tracking.get_run("0" * 32)

    await asyncio.to_thread(scenario)


async def test_a_run_block_that_raises_fails_the_run(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> None:
        with _tracking(server_port, project) as tracking:
            experiment_id = tracking.create_experiment("sync-fail")
            with pytest.raises(KeyError), tracking.start_run(experiment_id) as run:
                run.log_metric("loss", 1.0)
                raise KeyError("boom")
            assert tracking.get_run(run.run_id).info.status == "FAILED"

    await asyncio.to_thread(scenario)


async def test_registry_paging_with_a_plain_for(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> None:
        with sync.ModelRegistryAPIClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as registry:
            for n in range(7):
                registry.upsert_registered_model(RegisteredModel(f"model-{n}"))
            names = [m.name for m in Pager(registry.get_registered_models).limit(3)]
            assert sorted(names) == [f"model-{n}" for n in range(7)]
            first = registry.get_registered_models(ListOptions(limit=5))
            assert len(first) == 5

    await asyncio.to_thread(scenario)


async def test_artifacts_upload_and_stream_back(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")
    payload = bytes(range(256)) * 8192  # 2 MiB: several chunks

    def scenario() -> None:
        with sync.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as store:
            info = store.upload("data/blob.bin", payload)
            assert info.size == len(payload)
            assert b"".join(store.open("data/blob.bin")) == payload
            assert store.read("data/blob.bin") == payload
            assert [o.path for o in store.list("data/")] == ["data/blob.bin"]

    await asyncio.to_thread(scenario)


async def test_one_client_serves_several_threads(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> None:
        with _tracking(server_port, project) as tracking:
            errors: list[BaseException] = []

            def worker(n: int) -> None:
                try:
                    tracking.create_experiment(f"thread-{n}")
                except BaseException as error:
                    errors.append(error)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            assert len(tracking.search_experiments()) == 8

    await asyncio.to_thread(scenario)


# How long a test's progress callback waits to be let go: only a failing test waits it.
_CALLBACK_PATIENCE_SECONDS = 15.0


def _collection(client: sync.Client) -> str:
    """A garbage collection's operation name; a cut-off so far back that it removes
    nothing another test keeps."""
    return client.operations.start_garbage_collection(datetime.timedelta(days=3650)).name


async def test_a_progress_callback_may_call_the_same_sync_client(server_port: int) -> None:
    """on_progress ran on the client's own loop thread, where calling the client raised
    RuntimeError ("cannot be called from its own loop")."""

    def scenario() -> tuple[Operation, str, list[Operation]]:
        with sync.Client(f"http://127.0.0.1:{server_port}") as client:
            name, reread = _collection(client), []

            def report(operation: Operation) -> None:
                reread.append(client.operations.get_operation(operation.name))

            done = client.operations.wait_operation(name, timeout=60, on_progress=report)
        return done, name, reread

    done, name, reread = await asyncio.to_thread(scenario)
    assert done.state is OperationState.SUCCEEDED
    assert reread and {operation.name for operation in reread} == {name}


async def test_a_slow_progress_callback_holds_up_no_other_threads_call(server_port: int) -> None:
    """on_progress ran on the client's loop, so while it ran no other thread's call of
    the client was answered: here the other call waited until the callback gave up."""
    reporting, let_go = threading.Event(), threading.Event()
    let_go_in_time: list[bool] = []

    def slow_report(operation: Operation) -> None:
        if not reporting.is_set():
            reporting.set()
            let_go_in_time.append(let_go.wait(_CALLBACK_PATIENCE_SECONDS))

    def scenario() -> Operation:
        with (
            sync.Client(f"http://127.0.0.1:{server_port}") as client,
            concurrent.futures.ThreadPoolExecutor(1) as waiter,
        ):
            name = _collection(client)
            waiting = waiter.submit(
                client.operations.wait_operation, name, 60, on_progress=slow_report
            )
            assert reporting.wait(60), "no progress was reported"
            assert client.operations.get_operation(name).name == name  # meanwhile
            let_go.set()
            return waiting.result(60)

    done = await asyncio.to_thread(scenario)
    assert done.state is OperationState.SUCCEEDED
    assert let_go_in_time == [True], "the other thread's call waited for the callback"


async def test_progress_callbacks_calling_the_client_never_wait_for_each_other(
    server_port: int,
) -> None:
    """Callbacks ran on a pool of threads as many as a machine's cores and four: as
    many at once, each calling the client, whose call waits for a callback of its own,
    held them all, and every wait waited for ever."""
    waits = 12  # more than the pool held on any machine of up to 8 cores
    meeting = threading.Barrier(waits)

    def scenario() -> list[Operation]:
        with sync.Client(f"http://127.0.0.1:{server_port}") as client:
            name = _collection(client)

            def wait(_: int) -> Operation:
                reported: list[Operation] = []

                def report(operation: Operation) -> None:
                    if not reported:  # the first report of each wait
                        reported.append(operation)
                        meeting.wait(_CALLBACK_PATIENCE_SECONDS)  # all callbacks at once
                        client.operations.wait_operation(name, 60, on_progress=lambda _: None)

                return client.operations.wait_operation(name, 60, report)

            with concurrent.futures.ThreadPoolExecutor(waits) as threads:
                return list(threads.map(wait, range(waits)))

    done = await asyncio.to_thread(scenario)
    assert {operation.state for operation in done} == {OperationState.SUCCEEDED}


@pytest.mark.parametrize("raised", [StopIteration, SystemExit])
async def test_a_progress_callback_that_raises_fails_its_wait_alone(
    server_port: int, raised: type[BaseException]
) -> None:
    """A callback's StopIteration (next() past an end) could not be set on the future
    its wait awaited, which then waited for ever; its SystemExit ended the client's loop
    thread, and every thread's call with it."""

    def report(operation: Operation) -> None:
        raise raised

    def scenario() -> str:
        with sync.Client(f"http://127.0.0.1:{server_port}") as client:
            name = _collection(client)
            with pytest.raises(RuntimeError, match=raised.__name__):
                client.operations.wait_operation(name, 60, on_progress=report)
            return client.operations.get_operation(name).name  # the client goes on

    assert (await asyncio.wait_for(asyncio.to_thread(scenario), 30)).startswith("operations/")


class _FailingSource(io.RawIOBase):
    def __init__(self, raised: type[BaseException]) -> None:
        self._raised = raised

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise self._raised("from the callback")


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["progress", "source"])
async def test_what_a_callback_on_the_loop_raises_ends_its_call_alone(
    server_port: int, unique: str, raised: type[BaseException], where: str
) -> None:
    """Code of the caller's that the client's loop runs (an upload's progress callable,
    its file object, an async callback) raising SystemExit or KeyboardInterrupt raises
    it from the call, as the async client's asyncio.run does. It ended the loop's
    thread: that call, every later one and close() waited for ever, and so did the
    exit, which waited for the loop to send what was queued."""
    project = await new_project(server_port, f"sync-{unique}")

    def report(done: int, total: int) -> None:
        raise raised("from the callback")

    def scenario() -> list[str]:
        with sync.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as store:
            with pytest.raises(raised, match="from the callback"):
                if where == "progress":
                    store.upload("a.bin", b"x" * 1024, progress=report)
                else:
                    store.upload("a.bin", _FailingSource(raised))
            store.upload("b.bin", b"y")  # the client goes on
            return [info.path for info in store.list()]

    listed = await asyncio.wait_for(asyncio.to_thread(scenario), 30)
    assert "b.bin" in listed


async def test_auth_client_without_await(server_port: int, unique: str) -> None:
    def scenario() -> None:
        with sync.AuthClient.insecure_connection("127.0.0.1", server_port) as auth:
            assert auth.create_project(f"made-sync-{unique}") == f"made-sync-{unique}"
            assert f"made-sync-{unique}" in {p.name for p in auth.get_projects()}

    await asyncio.to_thread(scenario)


class _SlowSource(io.RawIOBase):
    """A file object that gives a byte, then nothing until told to go on: a call that
    waits on it is busy outside gRPC."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.go_on = threading.Event()
        self._given = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._given:
            self.reading.set()
            self.go_on.wait(30)
            return b""
        self._given = True
        return b"x"


async def test_closing_ends_a_call_another_thread_waits_on(server_port: int, unique: str) -> None:
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> None:
        store = sync.ArtifactClient.insecure_connection("127.0.0.1", server_port, project=project)
        source, outcome = _SlowSource(), []

        def upload() -> None:
            try:
                store.upload("slow.bin", source)
            except BaseException as error:
                outcome.append(error)

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert source.reading.wait(30)  # the upload waits on its source
        store.close()
        source.go_on.set()
        uploader.join(30)
        assert not uploader.is_alive(), "the call's thread still waits after close()"
        assert [type(error) for error in outcome] == [ClientClosedError]
        with pytest.raises(ClientClosedError):
            store.list()

    await asyncio.to_thread(scenario)


async def test_threads_closing_one_client_at_once_all_return_once_it_is_closed(
    server_port: int, unique: str
) -> None:
    """Closing twice is harmless, from threads at once too (a signal handler, an atexit
    hook and a `with` block's end): a close that began as another thread's ended the
    loop raised ClientClosedError, and returned before the channel was closed."""
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> list[BaseException]:
        failures: list[BaseException] = []
        for _ in range(10):
            tracking = _tracking(server_port, project)
            tracking.search_experiments()
            start = threading.Barrier(6)

            def close(
                client: sync.TrackingClient = tracking, start: threading.Barrier = start
            ) -> None:
                start.wait(10)
                try:
                    client.close()
                    assert client._runner.closed
                    assert not client._runner._thread.is_alive()
                except BaseException as error:
                    failures.append(error)

            closers = [threading.Thread(target=close) for _ in range(6)]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join(30)
        return failures

    assert await asyncio.wait_for(asyncio.to_thread(scenario), 60) == []


async def test_a_signal_handler_closing_the_client_amid_its_close_returns(
    server_port: int, unique: str
) -> None:
    """A handler (SIGTERM's, say) that closes the client while the main thread is
    closing it runs on that thread, amid its close: it waited for that close's lock
    for ever."""
    _project, done = await _scripted(
        server_port,
        unique,
        """
        import asyncio, os, signal, threading
        tracking = client()
        tracking.search_experiments()
        handled = threading.Event()
        closing = tracking._target.close

        async def close_once_the_handler_ran():
            os.kill(os.getpid(), signal.SIGALRM)  # the main thread is in close()
            await asyncio.to_thread(handled.wait, 30)
            await closing()

        def on_alarm(signum, frame):
            tracking.close()
            print("handler returned")
            handled.set()

        tracking._target.close = close_once_the_handler_ran
        signal.signal(signal.SIGALRM, on_alarm)
        tracking.close()
        print("closed")
        """,
    )
    assert (done.returncode, done.stdout) == (0, "handler returned\nclosed\n"), done.stderr


async def test_a_signal_handler_closing_the_client_as_its_close_begins_ends_it(
    server_port: int, unique: str
) -> None:
    """A handler run just as the thread's close took its lock, before the close noted
    its thread, closed the client whole; the close it interrupted then raised
    ClientClosedError. The handler stands in here at that line, by a trace function."""
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> list[str]:
        tracking = _tracking(server_port, project)
        tracking.search_experiments()
        close = type(tracking).close.__code__
        source = Path(close.co_filename).read_text().splitlines()
        noted = next(
            number
            for number, line in enumerate(source, 1)
            if number > close.co_firstlineno and "self._closer = threading.get_ident()" in line
        )
        ran: list[str] = []

        def at_line(frame: Any, event: str, arg: Any) -> Any:
            if event == "line" and frame.f_lineno == noted and not ran:
                tracking.close()  # what a signal handler would run there
                ran.append("handler closed")
            return at_line

        sys.settrace(lambda frame, event, arg: at_line if frame.f_code is close else None)
        try:
            tracking.close()
        finally:
            sys.settrace(None)
        return [*ran, f"closed {tracking._runner.closed}"]

    done = await asyncio.wait_for(asyncio.to_thread(scenario), 60)
    assert done == ["handler closed", "closed True"]


async def test_closing_from_the_clients_own_loop_is_refused(server_port: int, unique: str) -> None:
    """A progress callable closing its client: the close waited on the loop it ran on,
    for ever, as any call from there would (which is refused)."""
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> list[str]:
        with sync.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as store:
            refused: list[str] = []

            def close_it(done: int, total: int) -> None:
                try:
                    store.close()
                except RuntimeError as error:
                    refused.append(str(error))

            store.upload("a.bin", b"x" * 10, progress=close_it)
            return refused

    refused = await asyncio.wait_for(asyncio.to_thread(scenario), 30)
    assert refused and set(refused) == {"a sync cairn client cannot be called from its own loop"}


def test_a_stop_in_the_loops_pass_that_raises_system_exit_is_kept() -> None:
    """run_forever forgets a stop it had not reached when a callback of the same pass
    raises: going on after the SystemExit, the loop ran for ever and close() joined its
    thread for ever."""
    loop, gate = asyncio.new_event_loop(), Gate()
    thread = threading.Thread(target=run_until_stopped, args=(loop, gate), daemon=True)
    thread.start()

    def stop() -> None:  # loop.stop's, in the pass that raises
        gate.stopping.set()
        loop.stop()

    def exits() -> None:
        raise SystemExit("from code the loop ran")

    def in_one_pass() -> None:
        loop.call_soon(stop)
        loop.call_soon(exits)

    loop.call_soon_threadsafe(in_one_pass)
    thread.join(30)
    assert not thread.is_alive() and loop.is_closed()


@pytest.mark.parametrize("lock_held_at_fork", [False, True])
async def test_a_forked_child_gets_a_clear_error_not_a_call_that_never_returns(
    server_port: int, unique: str, lock_held_at_fork: bool
) -> None:
    """Also when another thread of the parent held the client's lock as it forked: the
    child's copy of the lock stays held, with no thread to let it go, so the child must
    be refused before it would wait for that lock."""
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> str:
        with _tracking(server_port, project) as tracking:
            tracking.create_experiment("before-fork")
            read, write = os.pipe()
            with _held_by_another_thread(tracking._runner._gate.lock, lock_held_at_fork):
                child = os.fork()
            if child == 0:
                try:
                    tracking.create_experiment("in-child")
                    os.write(write, b"returned")
                except BaseException as error:
                    os.write(write, type(error).__name__.encode())
                finally:
                    tracking.close()  # the parent's client: nothing to do here
                    os._exit(0)
            os.close(write)
            with os.fdopen(read, "rb") as answer:
                if not select.select([answer], [], [], 30)[0]:
                    os.kill(child, signal.SIGKILL)  # a child whose call never returns
                said = answer.read().decode()  # until the child exits
            os.waitpid(child, 0)
            return said

    assert await asyncio.to_thread(scenario) == "ClientClosedError"


# Children forked by a script (multiprocessing's "fork"), each making a client of its
# own; the script prints each child's exit code: 0 when its call returned, 3 when making
# the client raised ForkedProcessError (4 for another error), None when it still ran
# 20 s on (hung), a negative signal number when it crashed.
_FORKED_CHILDREN = textwrap.dedent(
    """
    import multiprocessing, sys, time

    def child():
        try:
            tracking = client()
            tracking.create_experiment(f"child-{multiprocessing.current_process().pid}")
        except Exception as error:
            sys.exit(3 if type(error).__name__ == "ForkedProcessError" else 4)
        tracking.close()

    children = [multiprocessing.get_context("fork").Process(target=child) for _ in range(4)]
    for forked in children:
        forked.start()
    deadline = time.monotonic() + 20
    for forked in children:
        forked.join(max(0.0, deadline - time.monotonic()))
    print([forked.exitcode for forked in children])
    for forked in children:
        forked.kill()
    """
)


@pytest.mark.parametrize(
    ("parent_then", "children_exit"),
    [("tracking.close()", "[0, 0, 0, 0]"), ("pass", "[3, 3, 3, 3]")],
    ids=["closed-first-children-make-their-own", "left-open-children-told-why-not"],
)
async def test_children_forked_by_a_parent_that_used_a_client(
    server_port: int, unique: str, parent_then: str, children_exit: str
) -> None:
    """Closed first, the client kept its channel, so gRPC's polling thread ran on: of
    the children forked after, most hung and the others crashed (SIGSEGV, SIGABRT).
    Left open, gRPC cannot be used in the children at all: making a client there now
    raises ForkedProcessError (their exit status 3), which says what to do instead."""
    parent = f"""
        tracking = client()
        tracking.create_experiment("parent")
        {parent_then}
        """
    _project, done = await _scripted(
        server_port, unique, textwrap.dedent(parent) + _FORKED_CHILDREN
    )
    assert (done.returncode, done.stdout) == (0, children_exit + "\n"), done.stderr


async def test_children_forked_during_calls_that_never_use_cairn_live(
    server_port: int, unique: str
) -> None:
    """gRPC's fork handlers ran in children forked while the parent's calls were under
    way, as a DataLoader's workers are, and 3 to 5 in 100 died (SIGSEGV) before a line
    of their own ran. The suite turns them off for its own processes: not here."""
    body = """
        import multiprocessing
        tracking = client()
        codes = set()
        with tracking.start_run(tracking.create_experiment("parent"), send_interval=0.1) as run:
            for step in range(200):
                run.log_metric("loss", 1.0, step=step)
                worker = multiprocessing.get_context("fork").Process(target=int)
                worker.start()
                worker.join(20)
                codes.add(worker.exitcode)
                worker.kill()
        print(sorted(codes))
        """
    project = await new_project(server_port, f"sync-{unique}")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = await asyncio.to_thread(_script, server_port, project, textwrap.dedent(body), env)
    assert (done.returncode, done.stdout) == (0, "[0]\n"), done.stderr


@contextlib.contextmanager
def _held_by_another_thread(lock: threading.RLock, held: bool) -> Iterator[None]:
    """The block runs while a thread of its own holds lock (when held)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    if held:
        holder.start()
        assert taken.wait(30)
    try:
        yield
    finally:
        done.set()
        if held:
            holder.join()


async def test_a_client_dropped_unclosed_lets_its_thread_and_files_go(
    server_port: int, unique: str
) -> None:
    """Each kept a thread and three files (its loop's) until the process exited: a
    script making a client per task ran out of files after about 330."""
    project = await new_project(server_port, f"sync-{unique}")

    def sync_threads() -> int:
        return sum(t.name == "cairn-sync" for t in threading.enumerate())

    def files() -> tuple[int, int]:
        # What a client owns, rather than every file of this process, where the servers
        # and pools of other tests open and close theirs meanwhile.
        return _event_loops(), _connections_to(server_port)

    def drop_one() -> None:
        tracking = _tracking(server_port, project)
        tracking.search_experiments()
        sub = sync.Client(f"http://127.0.0.1:{server_port}", project=project).tracking
        sub.search_experiments()  # the view keeps its client's loop while it is used

    def scenario() -> tuple[int, tuple[int, int]]:
        drop_one()  # the first makes what every client shares (grpc's own threads)
        gc.collect()
        before = (sync_threads(), files())
        for _ in range(20):
            drop_one()
        return before

    def files_closed() -> bool:
        # Each kind on its own: compared as tuples, fewer loops would hide more sockets.
        return all(now <= before for now, before in zip(files(), files_before, strict=True))

    threads_before, files_before = await asyncio.to_thread(scenario)
    await eventually(lambda: gc.collect() >= 0 and sync_threads() <= threads_before)
    await eventually(files_closed, what="the files are closed")


def _event_loops() -> int:
    """The epoll files open in this process: each event loop has one (and its self-pipe,
    closed with it)."""
    return sum(_target(fd) == "anon_inode:[eventpoll]" for fd in os.listdir("/proc/self/fd"))


def _connections_to(port: int) -> int:
    """The TCP connections this process holds open to port on this machine."""
    sockets = {_target(fd) for fd in os.listdir("/proc/self/fd")}
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)  # the heading
            for row in rows:
                fields = row.split()  # remote address is field 2 (hex ip:port), inode 9
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                held += remote_port == port and f"socket:[{fields[9]}]" in sockets
    return held


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # closed since listed
        return ""


async def _scripted(
    port: int, unique: str, body: str
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """A project of its own, and body run in it by `_script`."""
    project = await new_project(port, f"sync-{unique}")
    return project, await asyncio.to_thread(_script, port, project, body)


def _script(
    port: int, project: str, body: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """body run by a Python of its own (with env, else this one's), `client()` making a
    sync client of the project; killed after 60 s (a script that would never end)."""
    prelude = (
        "import atexit, gc\n"
        "from cairn import sync\n"
        "def client():\n"
        f"    return sync.TrackingClient.insecure_connection('127.0.0.1', {port}, "
        f"project={project!r})\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_a_client_in_use_at_exit_keeps_working(server_port: int, unique: str) -> None:
    """Stopped at the exit as if dropped, it left an atexit handler using it waiting
    for ever (or raising "Event loop is closed")."""
    _project, done = await _scripted(
        server_port,
        unique,
        """
        atexit.register(lambda: print("at exit", tracking.search_experiments() is not None))
        tracking = client()
        tracking.create_experiment("used-at-exit")
        """,
    )
    assert (done.returncode, done.stdout) == (0, "at exit True\n"), done.stderr


async def test_a_client_collected_with_its_open_iterator_lets_the_collection_end(
    server_port: int, unique: str
) -> None:
    """In a reference cycle with a history iterator not read to its end, the stopped
    loop was handed the iterator's end and gc.collect() waited for it for ever."""
    _project, done = await _scripted(
        server_port,
        unique,
        """
        tracking = client()
        experiment_id = tracking.create_experiment("cycle")
        run_id = tracking.create_run(experiment_id).info.run_id
        for step in range(3):
            tracking.log_metric(run_id, "m", 1.0, step=step)
        points = tracking.iter_metric_history(run_id, "m")
        next(points)
        cycle = [tracking, points]
        cycle.append(cycle)
        del tracking, points, cycle
        gc.collect()
        print("collected")
        """,
    )
    assert (done.returncode, done.stdout) == (0, "collected\n"), done.stderr


async def test_an_iterator_collected_on_the_clients_loop_thread_ends_there(
    server_port: int, unique: str
) -> None:
    """The collector runs on whichever thread allocates, the loop's too: an iterator
    collected there ended by handing its loop its end and waiting, which its own loop
    refuses, and "Exception ignored" (RuntimeError) went to stderr at random."""
    project = await new_project(server_port, f"sync-{unique}")

    def scenario() -> list[str]:
        ignored: list[str] = []
        hook, sys.unraisablehook = (
            sys.unraisablehook,
            lambda raised: ignored.append(repr(raised.exc_value)),
        )
        try:
            with _tracking(server_port, project) as tracking:
                experiment_id = tracking.create_experiment("collected")
                run_id = tracking.create_run(experiment_id).info.run_id
                tracking.log_batch(run_id, [Metric("m", 1.0, 0, step) for step in range(3)])
                points = tracking.iter_metric_history(run_id, "m")
                next(points)
                cycle: list[Any] = [points]
                cycle.append(cycle)
                del points, cycle
                collected = threading.Event()

                def collect() -> None:
                    gc.collect()
                    collected.set()

                tracking._runner._loop.call_soon_threadsafe(collect)
                assert collected.wait(30)
                assert len(tracking.get_metric_history(run_id, "m")) == 3  # the loop goes on
                return ignored
        finally:
            sys.unraisablehook = hook

    assert await asyncio.to_thread(scenario) == []


async def test_writes_stored_before_a_close_wait_after_it_as_stored(
    server_port: int, unique: str
) -> None:
    """Once the client was closed, ops.wait() and ops.done() of a write its close had
    sent raised ClientClosedError, which says a write was given up unsent: the view
    handed them to the client's loop, ended with the close."""

    def closed_with_writes() -> tuple[Any, Any]:
        with sync.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
            run_id = tracking.create_run(tracking.create_experiment(f"closed-{unique}")).info.run_id
            tracking.log_param(run_id, "p", "b")
            stored = tracking.log_metric(run_id, "ok", 1.0, step=0, synchronous=False)
            refused = tracking.log_param(run_id, "p", "a", synchronous=False)  # another value
            with pytest.raises(FailedPreconditionError):
                tracking.close()
        return stored, refused

    stored, refused = await asyncio.to_thread(closed_with_writes)
    assert stored.done() and stored.wait() is None
    with pytest.raises(FailedPreconditionError) as raised:
        refused.wait()
    assert raised.value.reason == "PARAM_ALREADY_LOGGED"


async def test_writes_queued_with_synchronous_false_are_sent_when_a_script_ends_unclosed(
    server_port: int, unique: str
) -> None:
    """MLflow scripts end without close(): the writes they had queued died with the
    daemon loop thread, 1 to 12 points of 200 stored, the param not at all, exit code 0
    and nothing said."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("exit")).info.run_id
        for step in range(200):
            tracking.log_metric(run_id, "loss", step / 2, step=step, synchronous=False)
        tracking.log_param(run_id, "lr", "0.1", synchronous=False)
        print(run_id)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    stored = await _stored(server_port, project, done)
    assert stored == (200, {"lr": "0.1"})


async def test_writes_queued_with_synchronous_false_are_sent_before_a_dropped_client_stops(
    server_port: int, unique: str
) -> None:
    """A client made in a function and dropped there unclosed stopped its loop at once:
    4 to 23 points of 200 stored. The script leaves without the exit's handlers
    (os._exit) once the client's thread has ended, so only the drop can have sent them."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import os, threading

        def log():
            tracking = client()
            run_id = tracking.create_run(tracking.create_experiment("drop")).info.run_id
            for step in range(200):
                tracking.log_metric(run_id, "loss", step / 2, step=step, synchronous=False)
            tracking.log_param(run_id, "lr", "0.1", synchronous=False)
            return run_id

        run_id = log()
        gc.collect()
        for thread in threading.enumerate():
            if thread.name == "cairn-sync":
                thread.join(30)  # ends once the loop sent its writes and stopped
        print(run_id, flush=True)
        os._exit(0)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    stored = await _stored(server_port, project, done)
    assert stored == (200, {"lr": "0.1"})


async def test_a_script_whose_thread_logs_on_still_exits(server_port: int, unique: str) -> None:
    """The exit sent what was queued until nothing was: a daemon thread logging on with
    synchronous=False kept the process from ever ending. It sends what was queued when
    the exit began, and warns of what came after."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import threading

        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("logs-on")).info.run_id

        def monitor():
            step = 0
            while True:
                tracking.log_metric(run_id, "loss", 1.0, step=step, synchronous=False)
                step += 1

        threading.Thread(target=monitor, daemon=True).start()
        tracking.log_param(run_id, "lr", "0.1", synchronous=False)
        print(run_id)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "writes queued with synchronous=False were not stored" in done.stderr
    stored = await _stored(server_port, project, done)
    assert stored[1] == {"lr": "0.1"}


async def test_writes_of_a_thread_that_outlives_the_main_one_are_all_sent(
    server_port: int, unique: str
) -> None:
    """The exit's first sending, before the threads that are not daemons are joined,
    gave up on what such a thread queued meanwhile: 353 to 397 points of 400 stored."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import threading

        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("outlives")).info.run_id

        def log():
            for step in range(400):
                tracking.log_metric(run_id, "loss", 1.0, step=step, synchronous=False)
            tracking.log_param(run_id, "lr", "0.1", synchronous=False)

        threading.Thread(target=log).start()
        print(run_id)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    stored = await _stored(server_port, project, done)
    assert stored == (400, {"lr": "0.1"})


@pytest.mark.parametrize(
    "body",
    [
        """
        import threading, time

        tracking = client()
        experiment_id = tracking.create_experiment("monitor")
        logged = threading.Event()

        def monitor():
            with tracking.start_run(experiment_id, send_interval=1000) as run:
                for step in range(50):
                    run.log_metric("loss", 1.0, step=step)
                print(run.run_id, flush=True)
                logged.set()
                time.sleep(600)

        threading.Thread(target=monitor, daemon=True).start()
        logged.wait(30)
        """,
        """
        tracking = client()
        run = tracking.start_run(tracking.create_experiment("notebook"), send_interval=1000)
        run.__enter__()
        for step in range(50):
            run.log_metric("loss", 1.0, step=step)
        print(run.run_id)
        """,
    ],
    ids=["a-daemon-threads-block", "entered-and-never-left"],
)
async def test_a_run_whose_block_is_open_at_exit_sends_its_points_and_ends_finished(
    server_port: int, unique: str, body: str
) -> None:
    """The exit dropped what such a run buffered, with no journal and no warning, and
    left it RUNNING."""
    project, done = await _scripted(server_port, unique, body)
    assert done.returncode == 0, done.stderr
    assert await _stored(server_port, project, done) == (50, {})
    assert "still open as the interpreter exited" in done.stderr
    assert await _status(server_port, project, done) == RunStatus.FINISHED  # as MLflow's


async def test_images_queued_with_synchronous_false_are_sent_when_a_script_ends(
    server_port: int, unique: str
) -> None:
    """An upload reads its file in a worker thread, which the exit's handler asked of
    a thread pool that no longer took work: "cannot schedule new futures after
    interpreter shutdown", and no image stored."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import numpy

        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("images")).info.run_id
        for step in range(3):
            image = numpy.zeros((8, 8, 3), numpy.uint8)
            tracking.log_image(run_id, image, key="img", step=step, synchronous=False)
        print(run_id)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr

    def images() -> list[str]:
        with _tracking(server_port, project) as tracking:
            return [a.path for a in tracking.list_artifacts(done.stdout.strip(), "images")]

    assert await asyncio.to_thread(images)


async def test_a_thread_that_outlives_the_main_one_uploads_with_both_kinds_of_call(
    server_port: int, unique: str
) -> None:
    """An upload reads and hashes its file in worker threads of the loop's pool, which
    stops taking work when the main thread ends: a thread logging after that stored no
    image of log_image(synchronous=False) (exit code 0, a warning "cannot schedule new
    futures after interpreter shutdown"), and its log_artifact raised RuntimeError."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import pathlib, tempfile, threading, numpy

        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("images")).info.run_id

        def log():
            threading.main_thread().join()  # returns once the pools stopped taking work
            for step in range(3):
                image = numpy.zeros((8, 8, 3), numpy.uint8)
                tracking.log_image(run_id, image, key="img", step=step, synchronous=False)
            tracking.log_metric(run_id, "loss", 1.0, step=0, synchronous=False)
            with tempfile.TemporaryDirectory() as directory:
                model = pathlib.Path(directory, "model.bin")
                model.write_bytes(b"x" * 1000)
                tracking.log_artifact(run_id, str(model))

        threading.Thread(target=log).start()
        print(run_id)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr

    def stored() -> tuple[list[str], list[str], int]:
        run_id = done.stdout.strip()
        with _tracking(server_port, project) as tracking:
            return (
                [a.path for a in tracking.list_artifacts(run_id)],
                [a.path for a in tracking.list_artifacts(run_id, "images")],
                len(tracking.get_metric_history(run_id, "loss")),
            )

    files, images, points = await asyncio.to_thread(stored)
    assert "model.bin" in files
    assert (len(images), points) == (3, 1), images


async def test_a_thread_that_outlives_the_main_one_uploads_a_file_that_goes_direct(
    server_port: int, unique: str
) -> None:
    """A file of 8 MiB or more goes to the store by direct transfer, whose sending and
    hashing run on thread pools of their own, stopped when the main thread ends: a thread
    uploading after that got RuntimeError "cannot schedule new futures after interpreter
    shutdown", and nothing was stored."""
    project, done = await _scripted(
        server_port,
        unique,
        """
        import pathlib, tempfile, threading

        tracking = client()
        run_id = tracking.create_run(tracking.create_experiment("direct")).info.run_id

        def log():
            threading.main_thread().join()  # returns once the pools stopped taking work
            with tempfile.TemporaryDirectory() as directory:
                model = pathlib.Path(directory, "model.bin")
                model.write_bytes(b"x" * (9 << 20))  # above the 8 MiB direct_threshold
                tracking.log_artifact(run_id, str(model))

        threading.Thread(target=log).start()
        print(run_id)
        """,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr

    def stored() -> list[tuple[str, int | None]]:
        with _tracking(server_port, project) as tracking:
            return [(a.path, a.file_size) for a in tracking.list_artifacts(done.stdout.strip())]

    assert await asyncio.to_thread(stored) == [("model.bin", 9 << 20)]


async def _stored(
    port: int, project: str, done: subprocess.CompletedProcess[str]
) -> tuple[int, dict[str, str]]:
    """How many points of "loss" the run a script printed holds, and its params."""

    def read() -> tuple[int, dict[str, str]]:
        run_id = done.stdout.strip()
        with _tracking(port, project) as tracking:
            points = len(tracking.get_metric_history(run_id, "loss"))
            return points, tracking.get_run(run_id).data.params

    return await asyncio.to_thread(read)


async def _status(port: int, project: str, done: subprocess.CompletedProcess[str]) -> RunStatus:
    """The status of the run a script printed."""

    def read() -> RunStatus:
        with _tracking(port, project) as tracking:
            return tracking.get_run(done.stdout.strip()).info.status

    return await asyncio.to_thread(read)


class _ServerOnAThread:
    """A tracking server on an event loop of a thread of its own, which a test stops and
    starts again on its port: the test's main thread, where Python delivers a Ctrl-C,
    stays free to block in sync calls (the other tests' servers run on that thread)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._pool = self._run(_migrated_pool(config))
        self._server, self.port = self._run(_started(config, self._pool))

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(60)

    def stop(self) -> None:
        self._run(self._server.stop(grace=0.1))

    async def stopped(self) -> None:
        """stop(), awaited on another loop (a client's)."""
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._server.stop(grace=0.1), self._loop)
        )

    def start_again(self) -> None:
        back = with_overrides(self._config, listen_address=f"127.0.0.1:{self.port}")
        self._server, _ = self._run(_started(back, self._pool))

    def close(self) -> None:
        self.stop()
        self._run(database.close_pool(self._pool))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> _ServerOnAThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _migrated_pool(config: Config) -> Any:
    pool = await database.create_pool(config.database_url, config)
    await migrate(pool, catalog.select([]))
    return pool


async def _started(config: Config, pool: Any) -> tuple[CairnServer, int]:
    server = CairnServer(config, catalog.select(["tracking"]), pool)
    return server, await server.start()


@contextlib.contextmanager
def _ctrl_c_once_logged(message: str) -> Iterator[None]:
    """Ctrl-C (SIGINT to the main thread, Python's own handler raising KeyboardInterrupt
    there) the first time the cairn logger logs a line holding message."""
    main = threading.get_ident()  # the main thread's: signal.signal works there only

    class CtrlC(logging.Handler):
        pressed = False

        def emit(self, record: logging.LogRecord) -> None:
            if not self.pressed and message in record.getMessage():
                self.pressed = True
                signal.pthread_kill(main, signal.SIGINT)

    logger, handler = logging.getLogger("cairn"), CtrlC(logging.INFO)
    level, on_sigint = logger.level, signal.signal(signal.SIGINT, signal.default_int_handler)
    logger.setLevel(logging.INFO)  # where retries are logged
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        signal.signal(signal.SIGINT, on_sigint)
    assert handler.pressed, f"no line of the cairn logger held {message!r}"


def _status_once_synced(port: int, journal_dir: Path, run_id: str) -> RunStatus:
    """The run's status once the journals of journal_dir are stored."""
    with sync.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        tracking.sync_journal(journal_dir)
        return tracking.get_run(run_id).info.status


def test_ctrl_c_while_a_runs_inputs_wait_out_an_outage_ends_it_killed(
    config: Config, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C stopped the caller only: the start went on on the client's loop and, the
    server back, logged the inputs and began sending, and no one ended the run, which
    stayed RUNNING with no journal. Now the start is stopped with its caller, and its
    end, KILLED, waits in its journal for `cairn sync`."""
    data = RunInput(uri="s3://bucket/data.csv", kind="dataset", name="d")
    with _ServerOnAThread(config) as server:
        with sync.TrackingClient.insecure_connection("127.0.0.1", server.port) as tracking:
            experiment_id = tracking.create_experiment(f"ctrl-c-start-{unique}")
            create = tracking._target.create_run

            async def create_then_stop(*args: Any, **kwargs: Any) -> Any:
                made = await create(*args, **kwargs)
                await server.stopped()  # before the run's inputs are logged
                return made

            monkeypatch.setattr(tracking._target, "create_run", create_then_stop)
            run = tracking.start_run(experiment_id, used_artifacts=[data], journal_dir=tmp_path)
            with _ctrl_c_once_logged("retrying in"), pytest.raises(KeyboardInterrupt), run:
                pytest.fail("the block of a run whose start was interrupted ran")
            assert run.journal is not None, "the start goes on after Ctrl-C"
            assert Journal.read(run.journal).status == RunStatus.KILLED
        server.start_again()
        assert _status_once_synced(server.port, tmp_path, run.run_id) == RunStatus.KILLED


def test_ctrl_c_while_a_run_flushes_through_an_outage_ends_it_killed(
    config: Config, unique: str, tmp_path: Path
) -> None:
    """Ctrl-C as the run's block was left, its points waiting out an outage: the end
    went on on the client's loop with a journal holding no status (a script exiting
    lost the end: `cairn sync` left the run RUNNING), and once the server was back it
    ended the run FINISHED. Now the end is stopped with its caller, and the journal
    keeps the points and the end, KILLED."""
    with _ServerOnAThread(config) as server:
        with sync.TrackingClient.insecure_connection("127.0.0.1", server.port) as tracking:
            experiment_id = tracking.create_experiment(f"ctrl-c-end-{unique}")
            started = tracking.start_run(
                experiment_id, journal_dir=tmp_path, flush_timeout=60, send_interval=3600
            )
            # Sent when the block is left (send_interval is long): the retries are the end's.
            with (
                _ctrl_c_once_logged("retrying in"),
                pytest.raises(KeyboardInterrupt),
                started as run,
            ):
                server.stop()
                run.log_metric("loss", 0.5, step=1)
            assert run.journal is not None
            kept = Journal.read(run.journal)
            assert (kept.points, kept.status) == (1, RunStatus.KILLED)
        server.start_again()
        assert _status_once_synced(server.port, tmp_path, run.run_id) == RunStatus.KILLED


async def test_a_run_entered_where_its_client_is_dropped_sends_its_points_and_ends(
    server_port: int, unique: str
) -> None:
    """The run went with its client's runner, which held it weakly: its 50 buffered
    points were dropped, with no journal and no warning, and it stayed RUNNING."""
    body = """
        def logged():
            tracking = client()
            run = tracking.start_run(tracking.create_experiment("left"), send_interval=1000)
            run.__enter__()
            for step in range(50):
                run.log_metric("loss", 1.0, step=step)
            return run.run_id

        print(logged())
        gc.collect()
        """
    project, done = await _scripted(server_port, unique, body)
    assert done.returncode == 0, done.stderr
    assert await _stored(server_port, project, done) == (50, {})
    assert "still open as its client was dropped" in done.stderr
    assert await _status(server_port, project, done) == RunStatus.FINISHED


async def test_a_dropped_client_whose_run_raised_an_error_lets_its_thread_go(
    server_port: int, unique: str
) -> None:
    """The run kept the error that stopped its sends and raised that very object, which
    took the frames it went through, the sync client's runner among them: a client
    dropped after its run's error was caught was never collected, its loop thread,
    pool and connections kept until the process ended."""
    body = """
        import threading

        def failed_log():
            tracking = client()
            run = tracking.start_run(tracking.create_experiment("failed"), send_interval=0.05)
            run.__enter__()
            tracking.delete_run(run.run_id)
            try:
                for step in range(10_000_000):
                    run.log_metric("loss", 1.0, step=step)
            except Exception as error:
                print(type(error).__name__)
            return [t for t in threading.enumerate() if t.name == "cairn-sync"]

        threads = failed_log()
        gc.collect()
        for thread in threads:
            thread.join(20)
        print([thread.is_alive() for thread in threads])
        """
    _project, done = await _scripted(server_port, unique, body)
    assert (done.returncode, done.stdout) == (0, "FailedPreconditionError\n[False]\n"), done.stderr
