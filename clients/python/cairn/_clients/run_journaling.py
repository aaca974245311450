"""An ActiveRun's journal: what waits unsent, written while sends fail and as the run ends."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import ClientClosedError
from ..types._tracking import RunStatus
from .journal import Journal, LiveJournal
from .run_batches import Batches
from .run_sending import BatchWriter

_log = logging.getLogger("cairn")


class RunJournaling:
    """Mixed into ActiveRun: keeps what it could not send in its journal, for `cairn
    sync`. Its state is declared only (ActiveRun sets it), so the
    methods need no annotated `self`."""

    _client: BatchWriter
    _batches: Batches
    _journal: LiveJournal
    _journaled_at: float
    _journaling: asyncio.Future[Path | None] | None
    _journaled_through: str | None
    _flush_timeout: float
    _send_interval: float

    if TYPE_CHECKING:

        @property
        def run_id(self) -> str: ...

        @property
        def journal(self) -> Path | None: ...

        def _ended_at(self) -> int: ...

    def _keep_as_left_open(self, status: RunStatus) -> None:
        """Writes what is buffered, and the run's end, to its journal, which the end
        replaces, or removes once all is stored. Noted (when, through which batch) as
        the outage's journals are: unnoted, the next failed send wrote over it at once,
        and an older journal's last batch, once stored, removed it, its later batches
        and the end with it. No outage write replaces it (LiveJournal.keep)."""
        batches = self._batches.all()
        journal = Journal(self.run_id, self._client.project, batches, status, self._ended_at())
        try:
            self._journal.keep(journal)
        except OSError as error:  # the flush goes on, with nothing kept meanwhile
            _log.warning("run %s: its journal could not be written: %s", self.run_id, error)
            return
        self._journaled_at = asyncio.get_running_loop().time()
        self._journaled_through = batches[-1][0] if batches else None

    def _journal_as_it_stops(self, status: RunStatus, stopped: BaseException) -> None:
        """_keep_in_journal for a run stopped (cancelled, its client closed): a journal
        that cannot be written is told in a warning, and the stop goes on as what the
        caller sees (an OSError in its place broke `asyncio.timeout` and TaskGroups)."""
        try:
            self._keep_in_journal(status, stopped)
        except OSError as error:
            self._warn_not_kept(status, error)

    def _warn_not_kept(self, status: RunStatus, error: OSError) -> None:
        """Says the run's last journal could not be written, and where the journal kept
        during the outage (held until now, so a sync skipped it) is left for a sync."""
        older = (
            f"; the journal kept before is left in {self.journal}: store what it holds "
            f"with `cairn sync {self.journal}`"
            if self.journal is not None
            else ""
        )
        _log.warning(
            "run %s: %d points and its end (%s) could not be kept: its journal could "
            "not be written (%s)%s",
            self.run_id,
            self._batches.points,
            status.value,
            error,
            older,
        )

    def _keep_in_journal(self, status: RunStatus, cause: BaseException | None) -> None:
        """Writes what is still unsent, and the status, for `sync` to store later, and
        warns with the cause that stopped the sends (None: flush_timeout ran out). Each
        batch keeps its request id and its exact points: the server may have stored the
        one in flight already."""
        batches = self._batches.all()
        journal = Journal(self.run_id, self._client.project, batches, status, self._ended_at())
        self._journal.end(journal)
        _log.warning(
            "run %s: %d points could not be sent %s; kept in %s (store them with `cairn sync %s`)",
            self.run_id,
            journal.points,
            _why_unsent(cause, self._flush_timeout),
            self.journal,
            self.journal,
        )

    async def _journal_meanwhile(self) -> None:
        """After a failed send: writes what waits to the journal, unless it was written
        less than send_interval ago, so a process killed during the outage keeps it."""
        now = asyncio.get_running_loop().time()
        if self.journal is not None and now - self._journaled_at < self._send_interval:
            return
        self._journaled_at = now
        batches = self._batches.all()
        journal = Journal(self.run_id, self._client.project, batches)
        # Shielded: the write goes on if sending is stopped, and the end waits for it.
        first = self.journal is None
        self._journaling = asyncio.ensure_future(asyncio.to_thread(self._journal.keep, journal))
        try:
            written = await asyncio.shield(self._journaling)
        except OSError as error:  # a full disk: sending goes on, with nothing kept
            _log.warning("run %s: no journal written during the outage: %s", self.run_id, error)
            return
        if written is None:  # the run has ended meanwhile, or its end was journaled
            return
        self._journaled_through = batches[-1][0]
        if first:
            _log.warning(
                "run %s: the server is out of reach; the %d points waiting are kept in %s "
                "until they are stored",
                self.run_id,
                journal.points,
                written,
            )

    async def _forget_journal(self) -> None:
        try:
            await asyncio.to_thread(self._journal.forget)
        except OSError as error:
            self._warn_not_removed(error)

    def _warn_not_removed(self, error: OSError) -> None:
        # Only told: a sync finds its batches stored, by their ids.
        _log.warning(
            "run %s: all is stored, but its journal %s was not removed: %s",
            self.run_id,
            self.journal,
            error,
        )


def _why_unsent(cause: BaseException | None, flush_timeout: float) -> str:
    """The end of the warning's "N points could not be sent ...": only a run whose time
    ran out blames flush_timeout (a closed client stops the sends at once)."""
    if cause is None:
        return f"in {flush_timeout:g} s"
    if isinstance(cause, asyncio.CancelledError | KeyboardInterrupt):
        return "as the run was cancelled"
    if isinstance(cause, ClientClosedError):
        return "as its client was closed"
    return f"after an error retrying cannot fix ({cause})"
