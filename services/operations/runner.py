"""Runs operations on this server, and takes over those of servers that stopped.

An operation is run by the server holding its lease (`owner`, `lease_until`), renewed
every RENEW_SECONDS while it runs. Every CLAIM_SECONDS a server takes over one
unfinished operation whose lease has passed and whose steps it hosts (SKIP LOCKED, so
no two servers take the same), and runs it again from the start: each step selects
what is left, so nothing is done twice. One that no server able to run it took over
within ABANDONED_AFTER is marked FAILED with the reason.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from ..common import logs
from ..common.idempotency import Idempotency
from ..common.service import Resources, ServiceSpec
from . import queue
from .model import Kind, Operation, State
from .store import LeaseLost, OperationStore

LEASE = timedelta(seconds=10)
RENEW_SECONDS = 3.0
CLAIM_SECONDS = 2.0
ABANDONED_AFTER = timedelta(minutes=10)
_log = logs.get("cairn.operations")


class GarbageCollection:
    """What a service's purge step sees of the operation running it (`Purge`)."""

    def __init__(self, store: OperationStore, operation: Operation, owner: uuid.UUID) -> None:
        self._store = store
        self._id = operation.operation_id
        self._owner = owner
        older_than = timedelta(seconds=operation.spec["older_than_seconds"])
        self.cutoff: datetime = operation.create_time - older_than

    async def plan(self, items: int) -> None:
        if items:
            await self._store.plan(self._id, self._owner, items)

    async def done(self, kind: str, items: int, progress: int | None = None) -> None:
        await self._store.count(
            self._id, self._owner, kind, items, items if progress is None else progress
        )

    async def discard(self, conn: asyncpg.Connection, locations: list[str]) -> None:
        await queue.enqueue(conn, locations)


class Runner:
    """The operations of one server: those it starts and those it takes over."""

    def __init__(self, resources: Resources, hosted: Sequence[ServiceSpec]) -> None:
        self._resources = resources
        self._store = OperationStore(resources.pool)
        self._owner = uuid.uuid4()
        self._purging = [spec for spec in hosted if spec.purge is not None]
        self.steps = [spec.name for spec in self._purging]
        self._idempotency = Idempotency(
            resources.pool,
            {spec.full_name: spec.schema for spec in hosted if spec.records_requests},
            exempt=set(),
        )
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def start_garbage_collection(self, older_than: timedelta) -> Operation:
        operation = await self._store.create(
            Kind.GARBAGE_COLLECTION,
            {"older_than_seconds": older_than.total_seconds()},
            self.steps,
            self._owner,
            LEASE,
        )
        self._launch(operation)
        return operation

    async def serve(self) -> None:
        """Takes over operations whose server stopped, until cancelled; then stops the
        operations running here and hands them over."""
        try:
            while True:
                try:
                    await self._take_over()
                except Exception as error:  # the database away, say: ask again later
                    _log.warning("taking over operations failed", error=repr(error))
                await asyncio.sleep(CLAIM_SECONDS)
        finally:
            running = list(self._running.values())
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _take_over(self) -> None:
        failed = await self._store.fail_abandoned(self.steps, ABANDONED_AFTER)
        if failed:
            _log.warning("abandoned operations failed", count=failed)
        while operation := await self._store.claim(self._owner, self.steps, LEASE):
            _log.info("operation taken over", operation=operation.name)
            self._launch(operation)

    def _launch(self, operation: Operation) -> None:
        task = asyncio.create_task(self._run(operation), name=operation.name)
        self._running[operation.operation_id] = task
        task.add_done_callback(lambda _: self._running.pop(operation.operation_id, None))

    async def _run(self, operation: Operation) -> None:
        renewing = asyncio.create_task(self._renew(operation.operation_id))
        try:
            if operation.state is State.PENDING:
                await self._store.begin(operation.operation_id, self._owner)
            await self._collect(operation)
            await self._store.finish(operation.operation_id, self._owner, State.SUCCEEDED, [])
            _log.info("operation succeeded", operation=operation.name)
        except LeaseLost:
            _log.warning("operation taken over by another server", operation=operation.name)
        except asyncio.CancelledError:
            await self._hand_over(operation)
            raise
        except Exception as error:
            _log.exception("operation failed", operation=operation.name)
            await self._fail(operation, error)
        finally:
            renewing.cancel()

    async def _fail(self, operation: Operation, error: Exception) -> None:
        try:
            await self._store.finish(
                operation.operation_id, self._owner, State.FAILED, [f"{error!r}"]
            )
        except Exception:
            # Its lease runs out, and a server takes it over and runs it again.
            _log.exception("operation could not be marked failed", operation=operation.name)

    async def _collect(self, operation: Operation) -> None:
        gc = GarbageCollection(self._store, operation, self._owner)
        for spec in self._purging:
            if spec.name in operation.steps:
                assert spec.purge is not None
                await spec.purge(self._resources, gc)
        retention = self._resources.config.request_id_retention_seconds
        await gc.done("request_ids", await self._idempotency.prune(retention), progress=0)

    async def _renew(self, operation_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._store.renew(operation_id, self._owner, LEASE)
            except LeaseLost:
                self._running[operation_id].cancel()
                return
            except Exception as error:
                _log.warning("renewing an operation's lease failed", error=repr(error))

    async def _hand_over(self, operation: Operation) -> None:
        """Releases the lease of an operation this stopping server was running, so
        another (or this one restarted) resumes it without waiting for the lease."""
        try:
            await self._store.release(operation.operation_id, self._owner)
        except Exception:
            _log.warning("operation left to its lease", operation=operation.name)
