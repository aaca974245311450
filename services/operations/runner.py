"""Runs operations on this server, and takes over those of servers that stopped.

An operation is run by the server holding its lease (`owner`, `lease_until`), renewed
every RENEW_SECONDS while it runs; a server runs MAX_RUNNING at most, and hands back
at once, PENDING, one started when all its slots are taken. Every CLAIM_SECONDS, and
whenever a slot frees, a server takes over, while it has slots free, unfinished
operations whose lease has passed and whose steps it hosts (SKIP LOCKED, so no two
servers take the same), and runs each again from the start: each step selects what is
left, so nothing is done twice. Each pass also records the server as seen
(`OperationStore.seen`); an operation that no server hosting its steps was seen to
take over within ABANDONED_AFTER is marked FAILED with the reason, by a server that
reached the database all that time itself. An attempt cut short by an error a call
would answer UNAVAILABLE or ABORTED for (a database connection broken, say) hands the
operation back the same way, to be taken over again once RETRY_SECONDS have passed,
twice as long after each further attempt so cut short (at most RETRY_MAX_SECONDS, each
lengthened by up to RETRY_JITTER at random); the MAX_OUTAGES-th fails it, as any other
error does at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from ..common import database, logs
from ..common.errors import Aborted, DomainError, Unavailable
from ..common.idempotency import after_commit, in_call_transaction
from ..common.service import Resources, ServiceSpec
from . import queue
from .model import Kind, Lease, Operation, State
from .store import LeaseLost, OperationStore

LEASE = timedelta(seconds=10)
RENEW_SECONDS = 3.0
CLAIM_SECONDS = 2.0
# A pass of the claim loop that comes later than this after the one before (the
# database out of reach, the process frozen) starts the server's time seen anew.
SEEN_GAP = LEASE
ABANDONED_AFTER = timedelta(minutes=10)
# Operations one server runs at once. Each holds one pool connection at a time, two for
# a moment (its lease's renewal, the artifacts step's plan): two leave most of the
# default pool of 10 to calls. Started unbounded, 1000 collections ran 977 at once, and
# calls waited out CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS for a connection.
MAX_RUNNING = 2
# An operation whose attempts outages cut short rests from one to the next: 2, 4, 8 ...
# 300 s, 13.5 minutes until the tenth so cut short, which fails it. Takeovers after a
# server stopped do not count.
RETRY_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
# Each rest lengthened by up to this fraction at random: operations one outage cut short
# together come back spread out, not all in the same pass.
RETRY_JITTER = 0.25
MAX_OUTAGES = 10
_log = logs.get("cairn.operations")


class GarbageCollection:
    """What a service's purge step sees of the operation running it (`Purge`)."""

    def __init__(self, store: OperationStore, operation: Operation, held: Lease) -> None:
        self._store = store
        self._held = held
        older_than = timedelta(seconds=operation.spec["older_than_seconds"])
        self.cutoff: datetime = operation.create_time - older_than
        self._planned = False

    async def plan(self, items: int) -> None:
        if items:
            # A takeover's steps find only what is left: its total is what the attempts
            # before it did and what it finds, not the sum of all they found.
            await self._store.plan(self._held, items, afresh=not self._planned)
            self._planned = True

    async def done(self, kind: str, items: int, progress: int | None = None) -> None:
        await self._store.count(self._held, kind, items, items if progress is None else progress)

    async def discard(
        self, conn: asyncpg.Connection, locations: list[str], closed: bool = False
    ) -> None:
        await queue.enqueue(conn, locations, closed)


class Runner:
    """The operations of one server: those it starts and those it takes over."""

    def __init__(self, resources: Resources, hosted: Sequence[ServiceSpec]) -> None:
        self._resources = resources
        self._store = OperationStore(resources.pool)
        self._owner = uuid.uuid4()
        # In the order hosted, which catalog.select fixes: the steps that let go of
        # artifact locations before the artifacts step that drains them.
        self._purging = [spec for spec in hosted if spec.purge is not None]
        self.steps = [spec.name for spec in self._purging]
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Launched, their task yet to take its first step: cancelled before it, a task
        # runs nothing of its coroutine, so nothing of _run hands them back.
        self._unbegun: dict[uuid.UUID, Operation] = {}
        self._claiming = 0  # a slot each, for claims under way
        self._slot_freed = asyncio.Event()
        self._stopped = False  # serve() ended: what is started now is handed back

    async def start_garbage_collection(self, older_than: timedelta) -> Operation:
        start = self._start(
            Kind.GARBAGE_COLLECTION, {"older_than_seconds": older_than.total_seconds()}
        )
        if in_call_transaction():  # a cancelled call rolls it back: nothing to launch
            return await start
        # Stored on a connection of its own, an operation is launched even when its
        # caller gives up meanwhile: left unlaunched, it waited for its lease to pass and
        # was taken over as if an outage had cut it short.
        return await asyncio.shield(start)

    async def _start(self, kind: Kind, spec: dict[str, float]) -> Operation:
        operation = await self._store.create(kind, spec, self.steps, self._owner, LEASE)

        async def launch() -> None:
            if self._stopped:  # a start the server's drain let finish
                await self._hand_over(operation, self._held(operation))
            elif self._free_slots():
                self._launch(operation)
            else:  # for this server once a slot frees, or another with one free
                await self._defer(operation)
                # The claim that took the slot may have looked before it was handed
                # back, and ended meanwhile: the loop looks again now.
                self._slot_freed.set()

        # Once the operation is stored: in the call's transaction when a request id
        # records it, which must commit (or roll back, and nothing runs) first.
        await after_commit(launch)
        return operation

    async def serve(self) -> None:
        """Takes over operations whose server stopped, until cancelled; then stops the
        operations running here and hands them over."""
        try:
            while True:
                self._slot_freed.clear()
                try:
                    await self._take_over()
                except Exception as error:  # the database away, say: ask again later
                    _log.warning("taking over operations failed", error=repr(error))
                # In this task: wait_for would start one for each wait.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLAIM_SECONDS):
                        await self._slot_freed.wait()
        finally:
            self._stopped = True
            running = list(self._running.values())
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for operation in list(self._unbegun.values()):
                await self._hand_over(operation, self._held(operation))

    async def _take_over(self) -> None:
        await self._fail_abandoned()
        while self._free_slots() and (operation := await self._claim()):
            _log.info("operation taken over", operation=operation.name)
            self._launch(operation)

    async def _fail_abandoned(self) -> None:
        """Records this server as seen, then fails the operations abandoned. Time since
        an operation's lease passed counts no outage: only a server that reached the
        database the whole window, and saw no server able to run the operation in it,
        fails it. A server that cannot record itself (its table locked, say) fails
        none, and still takes operations over."""
        try:
            async with asyncio.timeout(CLAIM_SECONDS):
                up = await self._store.seen(self._owner, self.steps, SEEN_GAP)
        except Exception as error:
            _log.warning("recording this server as seen failed", error=repr(error))
            return
        if up >= ABANDONED_AFTER:
            failed = await self._store.fail_abandoned(self.steps, ABANDONED_AFTER)
            if failed:
                _log.warning("abandoned operations failed", count=failed)

    def _free_slots(self) -> int:
        return max(0, MAX_RUNNING - len(self._running) - self._claiming)

    async def _claim(self) -> Operation | None:
        self._claiming += 1  # a start launched meanwhile leaves its slot to the claim
        try:
            return await self._store.claim(
                self._owner, self.steps, LEASE, running=list(self._running)
            )
        finally:
            self._claiming -= 1

    def _launch(self, operation: Operation) -> None:
        self._unbegun[operation.operation_id] = operation
        task = asyncio.create_task(self._run(operation), name=operation.name)
        self._running[operation.operation_id] = task

        def ended(_: asyncio.Task[None]) -> None:
            self._running.pop(operation.operation_id, None)
            self._slot_freed.set()

        task.add_done_callback(ended)

    def _held(self, operation: Operation) -> Lease:
        return Lease(operation.operation_id, self._owner, operation.attempts)

    async def _run(self, operation: Operation) -> None:
        del self._unbegun[operation.operation_id]
        held = self._held(operation)
        renewing = asyncio.create_task(self._renew(held))
        try:
            if operation.state is State.PENDING:
                await self._store.begin(held)
            await self._collect(operation, held)
            await self._store.finish(held, State.SUCCEEDED, [])
            _log.info("operation succeeded", operation=operation.name)
        except LeaseLost:
            _log.warning("operation taken over by another server", operation=operation.name)
        except asyncio.CancelledError:
            await self._hand_over(operation, held)
            raise
        except Exception as error:
            outages = operation.outages + 1 if _transient(error) else 0
            if 0 < outages < MAX_OUTAGES:
                # As after a restart: handed back, it is taken over again once its retry
                # delay passed and the database answers, and resumes from what is left.
                _log.warning("operation interrupted", operation=operation.name, error=repr(error))
                await self._rest(operation, held, _jittered(retry_delay(outages)))
            else:
                await self._fail(operation, held, outages)
        finally:
            renewing.cancel()

    async def _fail(self, operation: Operation, held: Lease, outages: int) -> None:
        """Marks the operation FAILED with a message that names no internals (clients
        read it) but an error id, logged with the traceback for the operator; outages:
        how many of its attempts outages cut short, this one included (see _transient),
        0 when another error ended it."""
        error_id = uuid.uuid4().hex[:12]
        _log.exception("operation failed", operation=operation.name, error_id=error_id)
        how = f": outages cut short its attempts ({outages})" if outages else " on the server"
        message = f"the operation failed{how}; its log has the details (error {error_id})"
        try:
            await self._store.finish(held, State.FAILED, [message])
        except Exception:
            # Its lease runs out, and a server takes it over and runs it again.
            _log.exception("operation could not be marked failed", operation=operation.name)

    async def _collect(self, operation: Operation, held: Lease) -> None:
        gc = GarbageCollection(self._store, operation, held)
        for spec in self._purging:
            if spec.name in operation.steps:
                assert spec.purge is not None
                await spec.purge(self._resources, gc)
        retention = self._resources.config.request_id_retention_seconds
        pruned = await self._resources.idempotency.prune(retention)
        await gc.done("request_ids", pruned, progress=0)
        # Operations are garbage too: those that ended before the cutoff, as the runs
        # and experiments deleted before it (one a collection, else for ever); but not
        # within the request ids' retention, in which a retried start is answered with
        # the operation it started, and a client still waiting on one reads it.
        forgotten = await self._store.forget_finished(gc.cutoff, retention)
        await gc.done("operations", forgotten, progress=0)

    async def _renew(self, held: Lease) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._store.renew(held, LEASE)
            except LeaseLost:
                self._running[held.operation_id].cancel()
                return
            except Exception as error:
                _log.warning("renewing an operation's lease failed", error=repr(error))

    async def _hand_over(self, operation: Operation, held: Lease) -> None:
        """Releases the lease of an operation this server stops running, so a server
        resumes it without waiting for the lease."""
        try:
            await self._store.release(held)
        except Exception:
            _log.warning("operation left to its lease", operation=operation.name)

    async def _defer(self, operation: Operation) -> None:
        try:
            await self._store.defer(self._held(operation))
            _log.info("operation queued: all slots taken", operation=operation.name)
        except Exception:
            _log.warning("operation left to its lease", operation=operation.name)

    async def _rest(self, operation: Operation, held: Lease, delay: timedelta) -> None:
        """Hands back an attempt an outage cut short, to be resumed once delay passed
        (by this server or another; after its lease, if the database does not answer)."""
        try:
            await self._store.rest(held, delay)
        except Exception:
            _log.warning("operation left to its lease", operation=operation.name)


def retry_delay(outages: int) -> timedelta:
    """How long an operation rests after outages cut short that many of its attempts."""
    return timedelta(seconds=min(RETRY_SECONDS * 2 ** (outages - 1), RETRY_MAX_SECONDS))


def _jittered(delay: timedelta) -> timedelta:
    return delay * (1 + random.uniform(0, RETRY_JITTER))


def _transient(error: Exception) -> bool:
    """Whether error is one a call would answer UNAVAILABLE or ABORTED for (the
    database or the object store out of reach, a connection broken, the pool busy,
    transactions in conflict): the attempt failed, not the operation, which a later
    attempt can complete."""
    answer = error if isinstance(error, DomainError) else database.domain_error(error)
    return isinstance(answer, Unavailable | Aborted)
