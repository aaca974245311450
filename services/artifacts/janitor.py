"""Removes bytes nothing refers to: replaced or deleted objects, failed and abandoned
uploads, unfinished multipart uploads. It runs when a server starts and then every
CAIRN_ARTIFACT_JANITOR_INTERVAL_SECONDS; several replicas may run it at once.

An upload in progress is never touched: its key is referred to from `uploads` until it
publishes, and only uploads older than CAIRN_ARTIFACT_JANITOR_MIN_AGE_SECONDS (counted
from the URL's expiry for presigned PUTs) are expired. Bytes found under no key of the
database are removed only once they are that old too.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..common import logs
from ..common.errors import Unavailable
from ..common.service import Resources
from ..common.stopping import Stopping
from . import backends, threads
from .store import ObjectStore

BATCH = 1000
# How long a call waits for the bytes its committed write let go of to be removed.
# A healthy store removes a thousand objects' bytes in well under a second; one that hangs
# holds a removal for its timeout (CAIRN_S3_TIMEOUT_SECONDS, 60 s by default, past the
# client's 30 s deadline), and the call answered DEADLINE_EXCEEDED for a write that
# was done. Past this the removal goes on beside the calls.
COLLECT_WAIT_SECONDS = 1.0
_log = logs.get("cairn.artifacts.janitor")


@dataclass(frozen=True)
class Sweep:
    """What one pass did."""

    expired_uploads: int = 0
    unreferenced: int = 0
    removed: int = 0
    aborted_writes: int = 0
    pruned_folders: int = 0


def janitor_for(resources: Resources, backend: backends.Backend | None = None) -> Janitor:
    return Janitor(
        ObjectStore(resources.pool),
        backend or backends.from_config(resources.config),
        timedelta(seconds=resources.config.artifact_janitor_min_age_seconds),
        resources.stopping,
    )


async def run_janitor(resources: Resources) -> None:
    """The janitor of a server: a pass at start, then one every interval (none when the
    interval is 0)."""
    interval = resources.config.artifact_janitor_interval_seconds
    if interval > 0:
        await janitor_for(resources).run(interval)


class Janitor:
    """Removes garbage bytes: in passes (`run`, `sweep`), and for the calls that let go
    of them (`collect`, `collect_soon`), beside those calls. That removal work ends when
    the server begins to stop (`stopping`): what it leaves stays garbage, for a pass."""

    def __init__(
        self,
        objects: ObjectStore,
        backend: backends.Backend,
        min_age: timedelta,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._objects = objects
        self._backend = backend
        self.min_age = min_age
        self._stopping = stopping or asyncio.Event()
        # collect_soon's collection, and whether one was asked for since it began.
        self._collecting: asyncio.Task[None] | None = None
        self._asked = False
        self._removals: set[asyncio.Task[None]] = set()
        self._ending: asyncio.Task[None] | None = None

    async def run(self, interval: float) -> None:
        """Passes until cancelled; a failed pass is logged and tried again later."""
        while True:
            try:
                await self.sweep()
            except Exception:
                _log.exception("janitor pass failed")
            await asyncio.sleep(interval)

    async def sweep(self) -> Sweep:
        """One pass; a step that fails is logged and the next one runs all the same."""
        before = datetime.now(UTC) - self.min_age
        sweep = Sweep(
            expired_uploads=await _step(self._objects.expire_uploads(self.min_age)),
            unreferenced=await _step(self._condemn_unreferenced(before)),
            removed=await _step(self.collect_garbage()),
            aborted_writes=await _step(self._abort_unfinished(before)),
            # Timed after the removals above: with no threshold, folders they emptied go too.
            pruned_folders=await _step(
                threads.in_store(self._backend.prune, datetime.now(UTC) - self.min_age)
            ),
        )
        _log.info("janitor pass", **sweep.__dict__)
        return sweep

    async def collect(self, keys: list[str]) -> None:
        """Removes the bytes of garbage keys, then forgets them; on failure they stay
        garbage and a later pass tries again. Waits COLLECT_WAIT_SECONDS at most: the
        removal goes on beside the calls after that, so that a call whose write
        committed answers OK though the store hangs (the row is the truth)."""
        if keys and not self._stopping.is_set():
            removal = self.beside_calls(self._remove(keys))
            await asyncio.wait({removal}, timeout=COLLECT_WAIT_SECONDS)

    async def _remove(self, keys: list[str]) -> None:
        try:
            await threads.in_store(self._backend.delete, keys)
            await self._objects.forget(keys)
        except Exception as error:
            _log.warning("bytes left for the janitor", keys=len(keys), error=repr(error))

    def collect_soon(self) -> None:
        """Removes the bytes of every garbage key in the background. Asked while such a
        collection runs, it collects again once that one ends, so keys queued meanwhile
        are not left for the next pass."""
        self._asked = True
        if self._stopping.is_set():
            return
        if self._collecting is None or self._collecting.done():
            self._collecting = self.beside_calls(self._collect_while_asked())

    def beside_calls(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """work in a task of its own, cancelled when the server begins to stop. A
        context of its own too: not the log context, nor the database connection, of
        the call that asked for it."""
        task = asyncio.create_task(work, context=contextvars.Context())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)
        if self._ending is None:
            self._ending = asyncio.create_task(self._end_on_stop(), name="janitor removals")
            # Held, so that the server's stop waits for them to end before it closes
            # the pool they forget keys through.
            if isinstance(self._stopping, Stopping):
                self._stopping.holds(self._ending)
        return task

    async def _end_on_stop(self) -> None:
        await self._stopping.wait()
        removals = set(self._removals)
        for task in removals:
            task.cancel()
        if removals:
            await asyncio.wait(removals)

    async def _collect_while_asked(self) -> None:
        while self._asked:
            self._asked = False
            await _step(self.collect_garbage())

    async def collect_garbage(self) -> int:
        """Removes the bytes of every garbage key. Keys whose bytes cannot be removed
        (a permission, an object lock) are logged and put behind the others, so they
        never hold up the rest; the pass ends at the first batch that had any.

        Raises:
            Unavailable: the store is out of reach (a timeout, a refused connection):
                the batch is put behind the others, and the pass ends there.
        """
        removed = 0
        while keys := await self._objects.garbage(BATCH):
            try:
                failed = await threads.in_store(_delete_each_or_all, self._backend, keys)
            except Unavailable:
                await self._objects.postpone(keys)
                raise
            await self._objects.forget([key for key in keys if key not in failed])
            removed += len(keys) - len(failed)
            if failed:
                _log.warning("bytes could not be removed", keys=sorted(failed)[:10])
                await self._objects.postpone(sorted(failed))
                break
        return removed

    async def _abort_unfinished(self, before: datetime) -> int:
        """Unfinished writes old enough and of no live upload. Listed before the live
        uploads are read: a write is begun only after its upload is recorded, so one
        listed here whose upload is not live any more has ended, or never will."""
        writes = await threads.in_store(self._backend.unfinished)
        live = await self._objects.live_keys([w.key for w in writes])
        stale = [w for w in writes if w.started < before and w.key not in live]
        for write in stale:
            await threads.in_store(self._backend.abort, write)
        return len(stale)

    async def _condemn_unreferenced(self, before: datetime) -> int:
        scanned = self._backend.scan()
        condemned = 0
        while batch := await threads.in_store(_next_batch, scanned):
            old = [key for key, modified in batch if modified < before]
            if old:
                condemned += await self._objects.condemn(old)
        return condemned


async def _step(work: Awaitable[int]) -> int:
    try:
        return await work
    except Exception:
        _log.exception("janitor step failed")
        return 0


def _delete_each_or_all(backend: backends.Backend, keys: list[str]) -> set[str]:
    """Deletes keys at once, or one by one when the store refused some of them, to
    tell which; returns those that failed. A store out of reach (Unavailable: what a
    timeout, a refused connection or a failed request becomes) raises instead: one by
    one, each key would wait out its timeout, 1000 keys of 60 s for a batch."""
    try:
        backend.delete(keys)
        return set()
    except Unavailable:
        raise
    except Exception:  # an answer naming keys it refused (S3), a file (the filesystem)
        pass
    failed = set()
    for key in keys:
        try:
            backend.delete([key])
        except Unavailable:
            raise
        except Exception:
            failed.add(key)
    return failed


def _next_batch(scanned: Iterator[tuple[str, datetime]]) -> list[tuple[str, datetime]]:
    return list(itertools.islice(scanned, BATCH))
