"""What a completion of an upload of parts (CompleteUploadTicket on S3) holds while it
moves bytes: a lease on the upload's row, and one of the process's completion slots.

A completion finishes the multipart upload and reads the whole object back, minutes for
a large one. It must hold its upload against every other completion, on any replica,
yet hold no database connection meanwhile: the pool serves every call of the service,
and a few completions each keeping a connection for a read-back would leave none for
the rest. So the completion leases the row instead: one UPDATE taking it while no lease
is live, renewed while the completion runs, cleared at its end. A completion whose
process dies renews nothing, and its lease expires: the upload is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from ..common import logs
from ..common.errors import NotFound, ResourceExhausted
from .store import ObjectStore
from .uploads import KIND_CONDITIONS, UPLOAD_COLUMNS, PendingUpload, being_completed

# Renewed every RENEW_EVERY while the completion runs, a lease need not cover the
# read-back of the largest object: it can stay short, so that an upload whose completion
# died is free again within LEASE. Renewals come three times a lease, so one or two
# missed (a database that hiccups) do not let it lapse under a completion still running.
LEASE = timedelta(seconds=30)
RENEW_EVERY = LEASE / 3
# How long a completion past CAIRN_ARTIFACT_MAX_COMPLETIONS waits for a slot before it
# is refused (COMPLETIONS_BUSY): see CompletionSlots.
SLOT_WAIT = timedelta(seconds=5)
_PARTS = KIND_CONDITIONS["parts"]  # the uploads a completion takes
_FREE = "(completing_until IS NULL OR completing_until < clock_timestamp())"
_log = logs.get("cairn.artifacts.leases")


@dataclass(frozen=True)
class Completion:
    """A completion holding its upload: the token its lease was taken with, and whether
    it publishes (set just before: from then on the upload's row may be gone by its
    own doing)."""

    upload: PendingUpload
    token: uuid.UUID
    publishing: asyncio.Event = field(default_factory=asyncio.Event, compare=False)


class CompletionLeases:
    def __init__(self, pool: asyncpg.Pool, objects: ObjectStore) -> None:
        self._pool = pool
        self._objects = objects

    @contextlib.asynccontextmanager
    async def holding(
        self, project: str, path: str, upload_id: uuid.UUID
    ) -> AsyncIterator[Completion]:
        """Holds a waiting upload of parts for one completion, on any replica, renewing
        its lease until the block ends; no connection is kept meanwhile.

        Raises:
            NotFound: no such upload is waiting (UPLOAD_NOT_FOUND).
            Aborted: another completion holds it, or took it over after its lease
                lapsed, which cancels the block (UPLOAD_BEING_COMPLETED).
        """
        held = await self._take(project, path, upload_id)
        lost = asyncio.Event()
        renewing = asyncio.create_task(self._renew(held, lost, asyncio.current_task()))
        try:
            yield held
        except asyncio.CancelledError:
            holder = asyncio.current_task()
            # Cancelled by the renewal alone: the completion cannot publish any more,
            # and stops reading back rather than keep its slot for nothing.
            if lost.is_set() and holder is not None and holder.uncancel() == 0:
                raise being_completed(upload_id, "another completion took its lease over") from None
            raise
        finally:
            renewing.cancel()
            # Waited for, so that no renewal lands after the release; a cancellation
            # of this task still propagates (the lease then expires on its own).
            await asyncio.wait({renewing})
            await self._release(held)

    async def _take(self, project: str, path: str, upload_id: uuid.UUID) -> Completion:
        token = uuid.uuid4()
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""UPDATE artifacts.uploads
                    SET completion = $4, completing_until = clock_timestamp() + $5::interval
                    WHERE upload_id = $1 AND project = $2 AND path = $3 AND {_PARTS}
                      AND {_FREE}
                    RETURNING {UPLOAD_COLUMNS}""",
                upload_id,
                project,
                path,
                token,
                LEASE,
            )
        if row is None:  # NotFound unless the upload waits
            await self._objects.upload(project, path, upload_id, kind="parts")
            raise being_completed(upload_id, "another call is completing it")
        return Completion(PendingUpload(**dict(row)), token)

    async def _renew(
        self, held: Completion, lost: asyncio.Event, holder: asyncio.Task[Any] | None
    ) -> None:
        """Extends the lease every RENEW_EVERY until cancelled, or until it is found
        lost, when it cancels the holder's work: taken over after it lapsed, or the
        upload gone (a completion that took it over published it) while the holder
        does not publish. The holder cannot publish any more then. A holder that
        publishes removes the upload's row itself, in the moment before this task is
        cancelled, and is left alone."""
        while True:
            await asyncio.sleep(RENEW_EVERY.total_seconds())
            try:
                async with self._pool.acquire() as conn:
                    kept = await conn.fetchval(
                        """UPDATE artifacts.uploads
                           SET completing_until = clock_timestamp() + $3::interval
                           WHERE upload_id = $1 AND completion = $2 RETURNING true""",
                        held.upload.upload_id,
                        held.token,
                        LEASE,
                    )
                    # A statement of its own, which sees a removal the UPDATE waited for.
                    there = not kept and await conn.fetchval(
                        "SELECT true FROM artifacts.uploads WHERE upload_id = $1",
                        held.upload.upload_id,
                    )
            except Exception as error:  # the next renewal may get through
                _log.warning("completion lease not renewed", error=repr(error))
                continue
            if kept:
                continue
            if there or not held.publishing.is_set():
                lost.set()
                if holder is not None:
                    holder.cancel()
            return

    async def _release(self, held: Completion) -> None:
        """Frees the upload for the next completion (a published one is gone anyway).
        When the database cannot be reached, the lease expires on its own."""
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE artifacts.uploads SET completion = NULL, completing_until = NULL
                       WHERE upload_id = $1 AND completion = $2""",
                    held.upload.upload_id,
                    held.token,
                )
        except Exception as error:
            _log.warning("completion lease left to expire", error=repr(error))

    async def withdraw(self, project: str, path: str, upload_id: uuid.UUID) -> PendingUpload | None:
        """Spends a waiting upload of parts that no completion holds: its row goes and
        its key becomes garbage in one statement. None when no such upload waits.

        Raises:
            Aborted: a completion holds it (UPLOAD_BEING_COMPLETED).
        """
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""WITH gone AS (
                        DELETE FROM artifacts.uploads
                        WHERE upload_id = $1 AND project = $2 AND path = $3 AND {_PARTS}
                          AND {_FREE}
                        RETURNING {UPLOAD_COLUMNS}
                    ), spent AS (
                        INSERT INTO artifacts.garbage (storage_key)
                        SELECT storage_key FROM gone ON CONFLICT DO NOTHING
                    )
                    SELECT * FROM gone""",
                upload_id,
                project,
                path,
            )
        if row is not None:
            return PendingUpload(**dict(row))
        try:
            await self._objects.upload(project, path, upload_id, kind="parts")
        except NotFound:
            return None  # nothing waits: nothing to give up
        raise being_completed(upload_id, "a completion holds it")


class CompletionSlots:
    """At most `limit` completions at once in this process: each reads an object back
    on a store thread (`threads.py`, with one more reading ahead), which other calls
    need too. One past the limit waits up to SLOT_WAIT for a slot, then is
    refused: long enough that a burst of uploads queues as it did before the refusal
    existed (clients from before it fail their upload on it), short enough that the
    retry of a client that knows it may reach another replica rather than wait on
    this one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._free = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        """Raises:
        ResourceExhausted: `limit` completions ran throughout SLOT_WAIT
            (COMPLETIONS_BUSY); call again.
        """
        try:
            await asyncio.wait_for(self._free.acquire(), SLOT_WAIT.total_seconds())
        except TimeoutError:
            raise ResourceExhausted(
                "COMPLETIONS_BUSY",
                f"this server completes {self.limit} uploads at once already "
                "(CAIRN_ARTIFACT_MAX_COMPLETIONS); call again shortly",
                metadata={"limit": str(self.limit)},
            ) from None
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._free.release()
