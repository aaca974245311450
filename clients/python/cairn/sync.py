"""The sync facade: the same clients for scripts and notebooks, without `await`.

    from cairn import sync

    with sync.TrackingClient.insecure_connection("127.0.0.1", 50051) as tracking:
        experiment_id = tracking.create_experiment("churn")
        with tracking.start_run(experiment_id) as run:
            run.log_metric("loss", 0.42, step=1)

Each sync client runs its async twin on a private event loop in a daemon thread and
waits for every call there, so both behave alike: the same arguments, return values and
exceptions. Objects the async client hands out to be used further (`ActiveRun`,
`ActiveArtifact`) come back with their methods made sync. A method that streams
(`iter_metric_history`, `ArtifactClient.open`) returns a plain iterator; an object used
with `async with` (`start_run`) is used with `with`;
`Pager` iterates with `for`. Calls from several threads are safe: they queue on the loop.
A plain progress callback (`wait_operation`'s `on_progress`) runs on a thread of its own, off
the loop: it may call the same client, and a slow one holds up no other thread's call.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Set,
    ValuesView,
)
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from . import _client, _clients
from ._base import BaseClient
from ._clients.active_run import ActiveRun
from ._clients.artifacts import ArtifactClient as _AsyncArtifactClient
from ._clients.auth import AuthClient as _AsyncAuthClient
from ._clients.model_manager import ModelManager as _AsyncModelManager
from ._clients.operations import OperationsClient as _AsyncOperationsClient
from ._clients.registry import ModelRegistryAPIClient as _AsyncRegistryClient
from ._clients.run_operations import end_background_writes
from ._clients.tracking import TrackingClient as _AsyncTrackingClient
from ._transport import Transport
from ._workers import Workers
from .exceptions import ClientClosedError
from .types._paging import Pager

T = TypeVar("T")
_log = logging.getLogger("cairn")
# How long closing a client, or a call interrupted by Ctrl-C, waits for the calls it
# cancels to end.
CLOSE_WAIT_SECONDS = 5.0
_CLOSED = "this cairn client is closed; make a new one"
_CLOSED_WHILE_RUNNING = "this cairn client was closed while the call ran"

__all__ = [
    "ArtifactClient",
    "AuthClient",
    "Client",
    "ModelManager",
    "ModelRegistryAPIClient",
    "OperationsClient",
    "TrackingClient",
    "create_client_from_profile",
    "create_client_from_token",
]


class _Runner:
    """A private event loop on a daemon thread, and the way to wait for work on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        # The blocking steps of its calls (reading and hashing an upload's file) run on
        # workers of its own: the loop's own pool stops taking work when the main thread
        # ends, and a thread that outlives it may still use the client.
        self._loop.set_default_executor(Workers(thread_name_prefix="cairn-sync-worker"))
        # Closed once, before the loop stops: no work is handed to a loop that will not
        # run it.
        self._gate = _Gate()
        self._thread = threading.Thread(
            target=_run_until_stopped,
            args=(self._loop, self._gate),
            name="cairn-sync",
            daemon=True,
        )
        self._thread.start()
        # A forked child has the loop but not the thread that runs it: work handed to
        # it there would wait for ever.
        self._pid = os.getpid()
        # What the client queued with synchronous=False, sent when it is left unclosed.
        self.queued = _Queued()
        # The runs whose `with` block was entered and not left: the exit, or the
        # runner's drop, ends them (a daemon thread's, one entered by hand), or what
        # they buffered was lost.
        self.open_runs = self.queued.open_runs
        # Dropped unclosed (no client or object of its own left to use it), the loop
        # sends the queued writes, then stops and its thread ends: they were kept, with
        # the loop's files and the channel's connections, until the process exited. Not
        # at the exit itself (_send_queued_at_exit): clients still in use then (by
        # atexit handlers, say) go on working.
        self._dropped = weakref.finalize(
            self, _stop_dropped, self._loop, self._pid, self._gate, self.queued
        )
        self._dropped.atexit = False
        _runners.add(self)
        # The calls handed to the loop and not answered yet.
        self._running: set[concurrent.futures.Future[Any]] = set()
        # Streams' ends scheduled on the loop from its own thread (`_end`).
        self._ending: set[asyncio.Future[None]] = set()

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls function on the loop (awaiting what it returns) and adapts the result."""

        # An object this facade handed out goes back to the async client as itself.
        args = tuple(_unwrapped(a) for a in args)
        kwargs = {key: _unwrapped(value) for key, value in kwargs.items()}

        async def on_loop() -> Any:
            result = function(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return self._adapt(self.wait(on_loop()))

    @property
    def on_its_loop(self) -> bool:
        """Whether the caller runs on the loop's own thread (a progress callable)."""
        return threading.current_thread() is self._thread

    @property
    def forked(self) -> bool:
        """Whether the caller's process is a child forked from the one that made it."""
        return os.getpid() != self._pid

    def wait(self, awaitable: Awaitable[T]) -> T:
        if self.on_its_loop:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never to run: no "never awaited" warning
            raise _from_its_loop()

        task: list[asyncio.Task[Any]] = []  # the call's, once it runs

        async def awaited() -> T:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            return await awaitable

        running = self._hand_over(awaited())
        if running is None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never to run: no "never awaited" warning
            raise self._refusal() or ClientClosedError(_CLOSED)
        try:
            return running.result()
        except concurrent.futures.CancelledError:
            raise ClientClosedError(_CLOSED_WHILE_RUNNING) from None
        except BaseException:
            if not running.done():  # the wait itself was interrupted (Ctrl-C)
                self._stop(running, task)
            raise
        finally:
            self._running.discard(running)

    def _stop(self, running: concurrent.futures.Future[Any], task: list[asyncio.Task[Any]]) -> None:
        """Cancels a call its caller stopped waiting for (Ctrl-C) and waits, a bounded
        time, for it to end: left running on the loop, a run's start would go on (log
        its inputs, begin sending) and its end would go on flushing, with no one left to
        end the run; cancelled, they keep the run's end, KILLED, in its journal."""
        running.cancel()  # the loop cancels the call's task in turn
        ended = self._hand_over(_ended(task))
        if ended is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                ended.result(CLOSE_WAIT_SECONDS)

    def close(self) -> None:
        """Ends the calls still running (their callers get ClientClosedError), stops the
        loop and its thread; again, or in a forked child, does nothing."""
        if self.forked:
            return
        if not self._gate.close():
            return
        self._dropped.detach()
        asyncio.run_coroutine_threadsafe(_end_other_tasks(), self._loop).result()
        _stop(self._loop, self._gate)
        self._thread.join()  # which closes the loop
        # A call whose task outlived the wait for it to end will never be answered by
        # the loop: its caller gets the error instead of waiting for ever.
        for running in list(self._running):
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                running.set_exception(ClientClosedError(_CLOSED_WHILE_RUNNING))

    @property
    def closed(self) -> bool:
        return self._refusal() is not None

    def send_queued(self, final: bool) -> concurrent.futures.Future[None] | None:
        """Starts sending the writes queued with synchronous=False (`_WriteQueue.end`),
        the loop running on after; None once closed, or in a forked child."""
        return self._hand_over(self.queued.send(final))

    def end_open_runs(self) -> concurrent.futures.Future[None] | None:
        """Starts ending the runs whose block is still open (`ActiveRun.end_left_open`);
        None once closed, or in a forked child."""
        return self._hand_over(_ended_left_open(list(self.open_runs)))

    def _hand_over(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
        """work, running on the loop; None when the loop takes no more work."""
        # The process first, without the lock: a forked child may have a copy of the lock
        # that another thread of its parent held at the fork, and no such thread.
        if self.forked:
            work.close()
            return None
        with self._gate.lock:
            if self._gate.closed:
                work.close()
                return None
            running = asyncio.run_coroutine_threadsafe(work, self._loop)
            self._running.add(running)
            return running

    def _refusal(self) -> ClientClosedError | None:
        """Why no more work may be handed to the loop, if so."""
        if self.forked:
            return ClientClosedError(
                "a sync cairn client cannot be used in a process forked from the one that "
                "made it; make a new client in this process"
            )
        return ClientClosedError(_CLOSED) if self._gate.closed else None

    def _adapt(self, value: Any) -> Any:
        if isinstance(value, Pager) and inspect.iscoroutinefunction(value.page_fn):
            # A Pager a method made (`list_operations`) pages with the sync call; looked at
            # first, as a Pager is an async iterator too.
            page_fn = value.page_fn
            return Pager(lambda options: self.call(page_fn, options), value.options)
        if hasattr(value, "__anext__"):
            return self._iterate(value)
        if type(value).__module__.startswith(_clients.__name__) and (
            hasattr(value, "__aenter__") or getattr(value, "_sync_view", False)
        ):
            return _SyncView(value, self)
        return value

    def _iterate(self, stream: AsyncIterator[Any]) -> Iterator[Any]:
        # A stream that can hand over what arrived in one go (ReadAhead) does so: a
        # hand-off between threads costs far more than an item.
        take = getattr(stream, "next_batch", None) or (lambda: _one(stream))
        try:
            while True:
                try:
                    yield from self.wait(take())
                except StopAsyncIteration:
                    return
        finally:
            closing = getattr(stream, "aclose", None)
            if closing is not None:
                self._end(closing)

    def _end(self, closing: Callable[[], Awaitable[None]]) -> None:
        """Ends a stream left unread: waited for, but on the loop's own thread (the
        collector runs wherever memory is taken), where it is scheduled instead."""
        if not self.on_its_loop:
            with contextlib.suppress(ClientClosedError):  # it ended with its loop
                self.wait(closing())
            return
        if not self._loop.is_running():  # collected as the loop closes: none would run it
            return
        ending = asyncio.ensure_future(closing(), loop=self._loop)
        self._ending.add(ending)  # held: the loop keeps a task only weakly
        ending.add_done_callback(self._ending.discard)


class _SyncView:
    """An object of the async client (such as an ActiveRun), its methods made sync."""

    def __init__(self, target: Any, runner: _Runner) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def sync_method(*args: Any, **kwargs: Any) -> Any:
            settled = getattr(self._target, "_off_the_loop", None)
            if settled is not None and (plain := settled(name)) is not None:
                return plain(*args, **kwargs)  # needs no loop: the client may be closed
            args, kwargs = _callbacks_off_the_loop(value, name, args, kwargs)
            return self._runner.call(value, *args, **kwargs)

        return sync_method

    def __setattr__(self, name: str, value: Any) -> None:
        # A public attribute is the async object's (`client.direct_threshold = None`
        # must switch direct transfer off); the view's own are private.
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._target, name, value)

    def __enter__(self) -> Any:
        entered = self._runner.call(self._target.__aenter__)
        if isinstance(self._target, ActiveRun):
            self._runner.open_runs.add(self._target)
        return self if entered is self._target else entered

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self._runner.wait(self._target.__aexit__(exc_type, exc, tb))
        finally:
            self._runner.open_runs.discard(self._target)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | set(super().__dir__()))


def _from_its_loop() -> RuntimeError:
    return RuntimeError("a sync cairn client cannot be called from its own loop")


class _Gate:
    """Whether a runner's loop still takes work."""

    def __init__(self) -> None:
        # Reentrant: a collection may run the finalizer of a dropped runner on a thread
        # that holds the gate of another.
        self.lock = threading.RLock()
        self.closed = False
        self.stopping = threading.Event()  # set as the loop is told to stop (`_stop`)

    def close(self) -> bool:
        """Takes no more work; whether it took work until now."""
        with self.lock:
            taking, self.closed = not self.closed, True
            return taking


def _run_until_stopped(loop: asyncio.AbstractEventLoop, gate: _Gate) -> None:
    while True:
        try:
            loop.run_forever()
        except (SystemExit, KeyboardInterrupt):
            # Raised by the caller's code the loop ran (a progress callable, a file
            # object): asyncio lets it out of the loop, and the task that ran it holds
            # it, for its call to raise in the caller's thread. The loop goes on: ended
            # here, that call, every later one, close() and the exit waited for ever.
            # Unless told to stop: run_forever forgets a stop it had not reached.
            if not gate.stopping.is_set():
                continue
        break
    loop.close()  # its files too, however it was stopped


class _Queued:
    """What a runner's client leaves to send: the writes it queued with
    synchronous=False, and the runs entered and not left. Held by the runner and by
    what ends it when it is dropped, not the other way round: the runs are held
    strongly, as a run entered in a function whose client went with it was collected
    with the runner, and what it buffered with it."""

    def __init__(self) -> None:
        self.transport: Transport | None = None  # set by the client made on the runner
        self.open_runs: set[ActiveRun] = set()

    async def send(self, final: bool = True) -> None:
        if self.transport is not None:
            await end_background_writes(self.transport, final)

    async def settle(self) -> None:
        """The open runs ended, then the queued writes sent: all that is left to do
        of a client dropped unclosed."""
        await _ended_left_open(list(self.open_runs), "its client was dropped")
        await self.send()


# The runners alive, and the loops of dropped ones still sending their queued writes:
# the exit waits for both.
_runners: weakref.WeakSet[_Runner] = weakref.WeakSet()
_ending: set[concurrent.futures.Future[None]] = set()
os.register_at_fork(after_in_child=_ending.clear)  # the child runs none of those loops


def _stop_dropped(loop: asyncio.AbstractEventLoop, pid: int, gate: _Gate, queued: _Queued) -> None:
    """Has the loop of a runner dropped unclosed end its open runs and send its queued
    writes, then stop; meanwhile what is left of it (the end of an iterator collected
    with it) is refused, not left waiting for ever. In the process that runs it only (a
    forked child's copy runs nowhere). It does not wait: it may run on the loop's own
    thread."""
    if os.getpid() == pid and gate.close():
        sending = asyncio.run_coroutine_threadsafe(queued.settle(), loop)
        _ending.add(sending)
        # Stopped once the future has its result, not from the coroutine: a loop stops
        # before the callbacks its last step scheduled, which set it.
        sending.add_done_callback(functools.partial(_stop_sent, loop, gate))


def _stop_sent(
    loop: asyncio.AbstractEventLoop, gate: _Gate, sending: concurrent.futures.Future[None]
) -> None:
    _ending.discard(sending)
    _stop(loop, gate)


def _stop(loop: asyncio.AbstractEventLoop, gate: _Gate) -> None:
    """Tells the loop to stop, for good (`_run_until_stopped`)."""
    gate.stopping.set()
    loop.call_soon_threadsafe(loop.stop)


def _send_queued_at_exit(final: bool) -> None:
    """Sends the writes the sync clients left unclosed queued with synchronous=False,
    as MLflow flushes its async logging queue at the exit: the exit ended their daemon
    loop threads with whatever they still held (1 to 12 points of 200 stored). The
    loops run on, for exit handlers that use a client after this one. Only the final
    call gives up on writes (those a thread logging on queues meanwhile)."""
    sending = [runner.send_queued(final) for runner in list(_runners)]
    if final:  # the threads that are not daemons have left their blocks by now
        sending += [runner.end_open_runs() for runner in list(_runners)]
    concurrent.futures.wait([s for s in sending if s is not None] + list(_ending))


async def _ended_left_open(runs: list[ActiveRun], as_what: str = "the interpreter exited") -> None:
    ending = (run.end_left_open(as_what) for run in runs)
    results = await asyncio.gather(*ending, return_exceptions=True)
    for run, result in zip(runs, results, strict=True):
        if isinstance(result, BaseException):  # the exit goes on: the others end all the same
            _log.warning("run %s could not be ended as %s: %s", run.run_id, as_what, result)


# When the main thread ends, among threading's exit calls (which run before atexit's):
# threads that are not daemons still run then, and may queue more, so nothing is given
# up yet. Then for good among atexit's, once those threads ended, for what they and the
# exit handlers registered since queue (the last registered runs first).
getattr(threading, "_register_atexit", atexit.register)(
    functools.partial(_send_queued_at_exit, final=False)
)
atexit.register(_send_queued_at_exit, final=True)


async def _end_other_tasks() -> None:
    """Cancels every task of the loop but this one and waits, a bounded time, for them
    to end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=CLOSE_WAIT_SECONDS)


async def _ended(task: list[asyncio.Task[Any]]) -> None:
    """Once the task (if it ran) has ended, or CLOSE_WAIT_SECONDS have passed."""
    if task:
        await asyncio.wait(task, timeout=CLOSE_WAIT_SECONDS)


async def _one(stream: AsyncIterator[Any]) -> list[Any]:
    return [await stream.__anext__()]


# The callbacks async methods call with each report, by method: a plain function given
# there through the facade runs on a thread of its own, not on the loop, where calling the
# same sync client raised RuntimeError (the loop would wait for itself) and where, if
# slow, it held up every other thread's call of the client.
_CALLBACKS = {"wait_operation": "on_progress"}


def _callbacks_off_the_loop(
    method: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """args and kwargs of a call of method, a callback of it in _CALLBACKS made to run
    off the loop; an async callback, which runs on the loop by design, as it is."""
    parameter = _CALLBACKS.get(name)
    if parameter is None:
        return args, kwargs
    try:
        bound = inspect.signature(method).bind_partial(*args, **kwargs)
    except TypeError:  # the call itself raises it, as the async method's would
        return args, kwargs
    callback = bound.arguments.get(parameter)
    if not callable(callback) or inspect.iscoroutinefunction(callback):
        return args, kwargs
    bound.arguments[parameter] = _on_a_thread_of_its_own(callback)
    return bound.args, bound.kwargs


def _on_a_thread_of_its_own(callback: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """callback, awaited by the loop while a thread of its own runs it: not one of a
    pool, whose threads callbacks calling the client (each waiting for a callback of
    its own call) would all hold, waiting for ever."""

    async def off_the_loop(*args: Any) -> None:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Any] = loop.create_future()

        def answer(outcome: Callable[[], None]) -> None:
            if not answered.done():  # else the wait it reports on was cancelled
                outcome()

        def run() -> None:
            try:
                outcome = functools.partial(answered.set_result, callback(*args))
            except BaseException as error:  # raised where the callback is awaited
                outcome = functools.partial(answered.set_exception, _callback_failure(error))
            with contextlib.suppress(RuntimeError):  # the client closed meanwhile
                loop.call_soon_threadsafe(answer, outcome)

        threading.Thread(target=run, name="cairn-sync-callback", daemon=True).start()
        reported = await answered
        if inspect.isawaitable(reported):  # a plain function may answer an awaitable
            await reported

    return off_the_loop


def _callback_failure(error: BaseException) -> Exception:
    """What a callback's error raises in the wait it reports to: the error itself, but
    for StopIteration (a next() past the end), which a future cannot hold, so the wait
    never learnt it failed, and SystemExit or KeyboardInterrupt, which ended the
    client's loop and every thread's calls with it."""
    if isinstance(error, Exception) and not isinstance(error, StopIteration):
        return error
    return RuntimeError(f"the progress callback raised {error!r}")


def _unwrapped(value: Any) -> Any:
    """value, with the objects this facade handed out (alone, or in a collection or a
    generator of arguments) as the async client's own: the async client uses them on
    the loop, where a facade's object cannot call back into it."""
    if isinstance(value, _SyncView):
        return value._target
    if inspect.isgenerator(value):  # read here, once: the loop would read it too late
        value = list(value)
    if isinstance(value, Mapping) and any(isinstance(v, _SyncView) for v in value.values()):
        return {key: _unwrapped(v) for key, v in value.items()}
    if isinstance(value, list | tuple | Set | ValuesView) and any(
        isinstance(v, _SyncView) for v in value
    ):
        unwrapped = [_unwrapped(v) for v in value]
        return type(value)(unwrapped) if isinstance(value, list | tuple) else unwrapped
    return value


class _Closing(_SyncView):
    """A sync client's closing, with `with` or `close()`; closing twice is harmless."""

    def __init__(self, target: Any, runner: _Runner) -> None:
        super().__init__(target, runner)
        runner.queued.transport = target._transport
        # Threads closing at once (an atexit hook, a block's end) return once the first
        # has closed the client: a second began as the first stopped the loop, raised
        # ClientClosedError, and returned before the end.
        # Reentrant: a signal handler closing it may interrupt its thread's close.
        self._closing = threading.RLock()
        self._closer: int | None = None  # the thread closing it

    def close(self) -> None:
        """Closes the channel, then stops the client's loop.

        Raises:
            RuntimeError: called on the client's loop (from a progress callable), which
                the close would wait on for ever, as any call from there.
        """
        if self._runner.forked:  # a copy of the lock a thread held at the fork stays held
            return
        if self._runner.on_its_loop:
            raise _from_its_loop()
        with self._closing:
            if self._runner.closed or self._closer == threading.get_ident():
                return  # closed, or closing: a signal handler amid this thread's close
            self._closer = threading.get_ident()
            try:
                self._runner.wait(self._target.close())
            except ClientClosedError:
                # Closed by a signal handler that ran on this thread before it was
                # noted as the closer: that close did it all.
                if not self._runner.closed:
                    raise
            finally:
                self._runner.close()
                self._closer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncClient(_Closing):
    """A sync client: its async twin, on a loop of its own."""

    _async_client: ClassVar[type[BaseClient]]

    @classmethod
    def insecure_connection(cls, *args: Any, **kwargs: Any) -> Self:
        """As the async client's `insecure_connection` (same arguments)."""
        return cls._connect(cls._async_client.insecure_connection, args, kwargs)

    @classmethod
    def secure_connection(cls, *args: Any, **kwargs: Any) -> Self:
        """As the async client's `secure_connection` (same arguments)."""
        return cls._connect(cls._async_client.secure_connection, args, kwargs)

    @classmethod
    def _connect(
        cls, connect: Callable[..., BaseClient], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Self:
        runner = _Runner()
        # The channel is made on the loop that will use it.
        client = runner.wait(_made_on_loop(connect, args, kwargs))
        return cls(client, runner)


async def _made_on_loop(
    connect: Callable[..., BaseClient], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseClient:
    return connect(*args, **kwargs)


class TrackingClient(_SyncClient):
    """`cairn.TrackingClient`, without `await`."""

    _async_client = _AsyncTrackingClient


class ModelRegistryAPIClient(_SyncClient):
    """`cairn.ModelRegistryAPIClient`, without `await`."""

    _async_client = _AsyncRegistryClient


class ArtifactClient(_SyncClient):
    """`cairn.ArtifactClient`, without `await`."""

    _async_client = _AsyncArtifactClient


class AuthClient(_SyncClient):
    """`cairn.AuthClient`, without `await`."""

    _async_client = _AsyncAuthClient


class OperationsClient(_SyncClient):
    """`cairn.OperationsClient`, without `await`."""

    _async_client = _AsyncOperationsClient


def ModelManager(
    registry: ModelRegistryAPIClient,
    download_path: str | os.PathLike[str] = ".",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """`cairn.ModelManager` (Devo's calls) over a sync registry client, without `await`."""
    manager = _AsyncModelManager(registry._target, download_path, cache_dir=cache_dir)
    return _SyncView(manager, registry._runner)


class Client(_Closing):
    """`cairn.Client` without `await`: `.tracking`, `.registry`, `.artifacts`, `.auth`,
    `.operations` and `.models` are sync too, over the one channel, and so are Devo's `add_model`,
    `get_model`, `find_model` and `get_models` on the client itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `cairn.Client(...)` (same arguments)."""
        self._adopt(_client.Client(*args, **kwargs))

    @classmethod
    def _of(cls, client: _client.Client) -> Client:
        wrapped = cls.__new__(cls)
        wrapped._adopt(client)
        return wrapped

    def _adopt(self, client: _client.Client) -> None:
        # The async client opens its channel on its first call, so on this loop.
        runner = _Runner()
        super().__init__(client, runner)
        for name in ("tracking", "registry", "artifacts", "auth", "operations", "models"):
            object.__setattr__(self, name, _SyncView(getattr(client, name), runner))


def create_client_from_token(*args: Any, **kwargs: Any) -> Client:
    """As `cairn.create_client_from_token` (Devo's factory), the client sync."""
    return Client._of(_client.create_client_from_token(*args, **kwargs))


def create_client_from_profile(*args: Any, **kwargs: Any) -> Client:
    """As `cairn.create_client_from_profile` (Devo's factory), the client sync."""
    return Client._of(_client.create_client_from_profile(*args, **kwargs))
