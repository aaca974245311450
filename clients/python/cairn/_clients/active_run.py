"""`ActiveRun`: a run for `async with`, whose metrics are sent in batches meanwhile,
through outages: what cannot be sent in time goes to a local journal."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .. import _names as names
from .._argument_error import invalid_argument
from .._headers import REQUEST_ID_HEADER
from .._numbers import real, seconds, whole, whole_or_zero
from ..exceptions import CairnError, ClientClosedError
from ..types._tracking import Metric, Param, Run, RunInput, RunStatus, RunTag, now_ms
from .journal import LiveJournal
from .run_batches import Batches
from .run_journaling import RunJournaling
from .run_retries import retrying
from .run_sending import BatchWriter, RunSending, again

_log = logging.getLogger("cairn")


class _RunWriter(BatchWriter, Protocol):
    """The part of TrackingClient an ActiveRun uses."""

    async def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        *,
        tags: dict[str, Any] | None,
        run_name: str | None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> Run: ...

    async def set_terminated(
        self,
        run_id: str,
        status: RunStatus,
        end_time: int | None = None,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None: ...

    async def log_inputs(
        self,
        run_id: str,
        inputs: Sequence[RunInput],
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None: ...

    async def log_param(self, run_id: str, key: str, value: Any) -> Any: ...


class ActiveRun(RunSending, RunJournaling):
    """A run being logged to, made by `TrackingClient.start_run`.

    `log_metric` only appends to a buffer; a background task sends the buffer as
    `log_batch` calls of up to `batch_size` points, each with a request id it keeps
    through retries, so a batch is stored once however often it is sent: as soon as a
    batch is full, and what is buffered at least every `send_interval` seconds, so a
    process that dies (killed, out of memory) loses at most the points of that
    interval, and a run's live view lags no more. When
    `max_buffered` points wait, `log_metric` waits too, so a fast loop cannot outrun
    the server without bound.

    Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED: a server
    restarting, a database outage) are retried with capped exponential backoff, and
    sending resumes by itself; only an error retrying cannot fix is raised, by the next
    `log_metric`, `flush` or the end of the block. While sends fail, what waits is
    written to the run's journal (at the first failure, then at most every
    `send_interval` seconds), so a process killed during an outage leaves it there; the
    file goes once all is stored.

    Leaving the block flushes for up to `flush_timeout` seconds, then ends the run with
    the status the code chose (FINISHED, FAILED when the block raised, KILLED when it
    was cancelled). What could not be sent by then is written, with that status, to a
    journal file in `journal_dir`; `TrackingClient.sync(path)` or `cairn sync PATH`
    stores it later, exactly once.
    """

    def __init__(
        self,
        client: _RunWriter,
        experiment_id: str,
        *,
        run_name: str | None,
        tags: dict[str, Any] | None,
        batch_size: int,
        max_buffered: int,
        flush_timeout: float,
        journal_dir: Path,
        inputs: Sequence[RunInput] = (),
        send_interval: float = 5.0,
    ) -> None:
        self._inputs = list(inputs)
        # Each checked as a number of its kind: a batch_size of 2.5 or NaN passed `< 1`
        # and killed the sender at its first batch, losing every point.
        batch_size = whole(batch_size, "batch_size")
        max_buffered = whole(max_buffered, "max_buffered")
        if batch_size < 1 or max_buffered < batch_size:
            raise invalid_argument("batch_size", "need 1 <= batch_size <= max_buffered")
        if not seconds(send_interval, "send_interval") > 0:
            raise invalid_argument("send_interval", "must be positive")
        self._send_interval = float(send_interval)
        self._flush_timeout = seconds(flush_timeout, "flush_timeout")
        # Fixed as the run starts: "~/x" landed in "./~/x" (the warning naming a path a
        # shell reads as the home's), and a chdir during an outage left the outage's
        # journal in the old folder and wrote the run's last in the new one.
        self._journal = LiveJournal(journal_dir.expanduser().absolute())
        # The journal written while sends fail: when, the write under way (waited for as
        # the run ends), and the id of its last batch, once stored all of it is.
        self._journaled_at = 0.0
        self._journaling: asyncio.Future[Path | None] | None = None
        self._journaled_through: str | None = None
        self._client: _RunWriter = client
        self._experiment_id, self._run_name, self._tags = experiment_id, run_name, tags
        self._max_buffered = max_buffered
        self._batches = Batches(batch_size)
        self._wake = asyncio.Event()  # a batch is full, or a flush waits
        self._buffered = asyncio.Event()  # there is something to send
        self._room = asyncio.Condition()
        self._sending: asyncio.Task[None] | None = None
        self._sender_stopped = False  # by the run's end; else its loop cancelled it
        self._error: BaseException | None = None
        self._end_time: int | None = None  # chosen once: see _ended_at
        # The block was entered, is being left (no point is taken any more), was left.
        self._entered = self._ending = self._over = False
        self.run: Run | None = None

    @property
    def run_id(self) -> str:
        if self.run is None:
            raise RuntimeError("the run starts when the 'async with' block is entered")
        return self.run.info.run_id

    async def __aenter__(self) -> ActiveRun:
        if self._entered:  # set before any await: two entries at once are one too many
            raise RuntimeError("an ActiveRun starts one run: call start_run again for another")
        self._entered = True
        # One request id for every attempt: a retry after a lost answer gets the run.
        # Its start is this machine's time, as its end is (_ended_at): a server whose
        # clock is ahead made runs end before they started.
        once = [(REQUEST_ID_HEADER, uuid.uuid4().hex)]
        self.run = await retrying(
            functools.partial(
                self._client.create_run,
                self._experiment_id,
                start_time=now_ms(),
                tags=self._tags,
                run_name=self._run_name,
                metadata=once,
            )
        )
        if self._inputs:
            await self._log_inputs()
        self._sending = asyncio.create_task(self._send_forever(), name=f"cairn-run-{self.run_id}")
        return self

    async def _log_inputs(self) -> None:
        """The run's inputs, retried through an outage as its creation is, under one
        request id. Refused, they end the run FAILED before the error is raised: the
        block is never entered, so no end would come, and the run was left RUNNING.
        Stopped while retried (cancelled, Ctrl-C, the client closed), the run's end,
        KILLED, is kept in its journal for `cairn sync`, as a block's stopped end is."""
        once = [(REQUEST_ID_HEADER, uuid.uuid4().hex)]
        try:
            await retrying(
                functools.partial(self._client.log_inputs, self.run_id, self._inputs, metadata=once)
            )
        except (asyncio.CancelledError, KeyboardInterrupt, ClientClosedError) as stopped:
            self._journal_as_it_stops(RunStatus.KILLED, stopped)
            raise
        except Exception:
            try:
                await self._terminate(RunStatus.FAILED)
            except CairnError as error:  # the inputs' refusal is the error to raise
                _log.warning("run %s could not be ended FAILED: %s", self.run_id, error)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ending:  # ended meanwhile as left open, its loop closing: that end stands
            async with self._room:
                await self._room.wait_for(lambda: self._over)
            return
        # From here on points are refused, not taken by a buffer no one will send (by
        # another task or thread still logging as the block ends).
        self._ending = True
        try:
            await self._exit(exc_type)
        finally:
            self._over = True
            async with self._room:  # those still waiting (a flush) learn it is over
                self._room.notify_all()

    async def end_left_open(self, as_what: str = "the interpreter exited") -> None:
        """Ends the run if its block is still open as the interpreter exits (a daemon
        thread's block, one entered and never left) or its event loop closes: FINISHED,
        as MLflow ends the run still active at exit (FAILED if its sends stopped at an
        error retrying cannot fix, as a block's end says), after sending what is
        buffered within flush_timeout; what could not be sent is kept in its journal.
        Raises no error (only its cancellation): no caller is left to raise one to, so
        what failed is told in a warning."""
        if self._ending or self.run is None:
            return
        status = _status(None, self._error)
        # Kept first: a second Ctrl-C, or the process's end, may stop the flush midway,
        # and what it had not sent is then where `cairn sync` finds it.
        self._keep_as_left_open(status)
        _log.warning(
            "run %s: its block was still open as %s; it ends %s",
            self.run_id,
            as_what,
            status.value,
        )
        try:
            await self.__aexit__(None, None, None)
        except Exception as error:
            _log.warning("run %s could not be ended as %s: %s", self.run_id, as_what, error)

    async def _exit(self, exc_type: type[BaseException] | None) -> None:
        try:
            terminated = await self._end(exc_type)
        except (asyncio.CancelledError, ClientClosedError) as stopped:
            # Cancelled (Ctrl-C under the sync facade), or its client closed, while it
            # ends: what is unsent, and the status, are kept as after an outage, not
            # dropped. A cancelled end is the run's kill, though its block ended well.
            await self._stop_sending()
            status = _status(exc_type, self._error)
            if isinstance(stopped, asyncio.CancelledError) and status is RunStatus.FINISHED:
                status = RunStatus.KILLED
            self._journal_as_it_stops(status, stopped)
            raise
        if not terminated:  # an outage, or an error retrying cannot fix: nothing is dropped
            # With no error, flush_timeout ran out; an error stopped the sends at once.
            status = _status(exc_type, self._error)
            try:
                self._keep_in_journal(status, self._error)
            except OSError as error:  # a full disk: the caller learns what was not kept
                self._warn_not_kept(status, error)
                raise
        else:  # all is stored: a journal written during an outage goes
            try:
                self._journal.end(None)
            except OSError as error:
                self._warn_not_removed(error)
        if self._error is not None and exc_type is None:
            raise again(self._error)

    async def _end(self, exc_type: type[BaseException] | None) -> bool:
        """Sends what is buffered, then the run's status, within flush_timeout; whether
        both went."""
        deadline = asyncio.get_running_loop().time() + self._flush_timeout
        try:
            await asyncio.wait_for(self._drain(), self._flush_timeout)
        except TimeoutError:
            pass
        finally:
            await self._stop_sending()
        if self._batches.points:
            return False
        status = _status(exc_type, self._error)
        try:
            await asyncio.wait_for(
                self._terminate(status),
                max(0.0, deadline - asyncio.get_running_loop().time()),
            )
        except TimeoutError:
            return False
        return True

    async def _terminate(self, status: RunStatus) -> None:
        """The run's end, retried through an outage under one request id, as its
        creation is: an end stored whose answers were lost is not stored again."""
        once = [(REQUEST_ID_HEADER, uuid.uuid4().hex)]
        end = functools.partial(
            self._client.set_terminated, self.run_id, status, self._ended_at(), metadata=once
        )
        await retrying(end)

    def _ended_at(self) -> int:
        """When the run ended (milliseconds), chosen once: an end stored whose answers
        were lost, then kept in the journal, is stored again by a sync with the same
        time, not a later one."""
        if self._end_time is None:
            self._end_time = now_ms()
        return self._end_time

    @property
    def journal(self) -> Path | None:
        """The run's journal file: what it holds waits for `sync_journal` (None if all
        is stored)."""
        return self._journal.path

    async def log_metric(
        self, key: str, value: float, step: int | None = 0, timestamp: int | None = None
    ) -> None:
        """Buffers one point (step None is 0, as MLflow's default); waits only while the
        buffer is full."""
        await self._buffer([_checked(key, value, step, timestamp)])

    async def log_metrics(self, metrics: dict[str, float], step: int | None = 0) -> None:
        """Buffers a point of each metric: all of them, or none when one is refused."""
        await self._buffer([_checked(key, value, step, None) for key, value in metrics.items()])

    async def log_param(self, key: str, value: Any) -> Any:
        """Sent at once, so a conflicting value fails here."""
        return await self._client.log_param(self.run_id, key, value)

    async def log_params(self, params: dict[str, Any]) -> None:
        await self._client.log_batch(
            self.run_id, params=[Param(k, str(v)) for k, v in params.items()]
        )

    async def set_tag(self, key: str, value: Any) -> None:
        await self._client.log_batch(self.run_id, tags=[RunTag(key, str(value))])

    async def flush(self) -> None:
        """Returns once every buffered point has been stored, waiting through outages."""
        self._check_open()
        await self._drain()
        if self._error is not None or self._batches.points:  # or the block ended first
            self._check_open()


def _checked(key: str, value: float, step: int | None, timestamp: int | None) -> Metric:
    """A point as the server will take it, else InvalidArgumentError naming what is
    wrong. Checked when logged, as the server checks it, steps and times as plain ints
    of 64 bits: a numpy step (`for step in np.arange(n)`) sent well and failed the
    journal of an outage, losing it all, and a step past 64 bits, or a key the server
    refuses, failed its whole batch later, valid points with it."""
    stamp = now_ms() if timestamp is None else whole(timestamp, "timestamp")
    return Metric(names.key(key, "key"), real(value, "value"), stamp, whole_or_zero(step, "step"))


def _status(exc_type: type[BaseException] | None, error: BaseException | None) -> RunStatus:
    """What the code chose: an outage never makes a run FAILED by itself, nor does its
    client closed meanwhile (what was unsent is in its journal)."""
    if exc_type is None and (error is None or isinstance(error, ClientClosedError)):
        return RunStatus.FINISHED
    if exc_type is not None and issubclass(exc_type, asyncio.CancelledError | KeyboardInterrupt):
        return RunStatus.KILLED
    return RunStatus.FAILED
