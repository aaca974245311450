"""The local journal of a run: what `start_run` could not send before its deadline.

One JSON Lines file per run, `<run id>.jsonl`: a first line naming the run and its
project, one line per batch of metrics with the request id it was (or would have been)
sent with, and a last line with the status the run should end with. Replaying sends
each batch with its own request id, so a batch that reached the server before the
outage is not stored twice (the server remembers request ids of LogBatch per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..exceptions import CairnError, FailedPreconditionError

try:
    import fcntl
except ImportError:  # Windows: no locks; a file stored by another sync is still skipped
    fcntl = None  # type: ignore[assignment]
from ..types._tracking import Metric, RunStatus
from .journal_lines import End, JournalLines

SUFFIX = ".jsonl"
# A journal being written is `<run id>.<random>.partial` until it is whole. A process
# killed meanwhile leaves the file: no one holds it (flock) and it has not been written
# to for this long, and a sync of its folder removes it. Only a file so named: a sync
# may be of any folder, and other programs name their unfinished files .partial too.
UNFINISHED = ".partial"
UNFINISHED_SECONDS = 60.0
_UNFINISHED_NAME = re.compile(r"[^.]+\.[0-9a-f]{32}" + re.escape(UNFINISHED))
_NOT_BLOCKING = getattr(os, "O_NONBLOCK", 0)  # Windows has none: its pipes are in no folder
_log = logging.getLogger("cairn")


def default_directory() -> Path:
    """`$XDG_CACHE_HOME/cairn/journal`, by default `~/.cache/cairn/journal`."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cairn" / "journal"


def sync_path(path: str | os.PathLike[str] | None) -> Path:
    """The journal file or folder a sync is given, its `~` expanded as a shell does
    (not in a quoted "~/x", nor in a path given in code); None: default_directory()."""
    return Path(path).expanduser() if path else default_directory()


@dataclass
class Journal:
    """What is left of a run to store: batches of metrics, then its final status."""

    run_id: str
    project: str
    batches: list[tuple[str, list[Metric]]] = field(default_factory=list)
    status: RunStatus | None = None
    end_time: int | None = None  # when the run ended, in milliseconds

    @property
    def points(self) -> int:
        return sum(len(metrics) for _, metrics in self.batches)

    def write(self, directory: Path) -> Path:
        """Writes the journal whole, or not at all (a temporary file renamed)."""
        target, descriptor = self._write(directory)
        os.close(descriptor)
        return target

    def write_held(self, directory: Path) -> tuple[Path, int | None]:
        """Writes the journal as `write` does, locked (flock) before it is in place:
        syncs skip it until the descriptor returned is closed. Where the system has no
        flock, the file is closed (None): Windows cannot replace or remove an open file."""
        target, descriptor = self._write(directory)
        if fcntl is not None:
            return target, descriptor
        os.close(descriptor)
        return target, None

    def _write(self, directory: Path) -> tuple[Path, int]:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{self.run_id}{SUFFIX}"
        # A name of its own: two writes of one run never write into each other's file.
        temporary = directory / f"{self.run_id}.{uuid.uuid4().hex}{UNFINISHED}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if fcntl is not None:  # a sync removes the file of a write no one holds
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            with os.fdopen(os.dup(descriptor), "w", encoding="utf-8") as out:
                out.writelines(json.dumps(line) + "\n" for line in self._lines())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            os.close(descriptor)
            temporary.unlink(missing_ok=True)
            raise
        return target, descriptor

    def _lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = [{"run_id": self.run_id, "project": self.project}]
        lines += [
            {"request_id": request_id, "metrics": [_point(m) for m in metrics]}
            for request_id, metrics in self.batches
        ]
        if self.status is not None:
            lines.append({"status": self.status.name, "end_time": self.end_time})
        return lines

    @classmethod
    def read(cls, path: Path) -> Journal:
        """The journal in a file.

        Raises:
            InvalidArgumentError: (INVALID_JOURNAL) the file is no journal (empty, cut
                short, another file), naming it, the line and what is wrong.
        """
        with path.open("rb") as stream:
            lines = JournalLines(path, stream)
            journal = cls(*lines.header())
            while (entry := lines.next()) is not None:
                if isinstance(entry, End):
                    journal.status, journal.end_time = entry.status, entry.end_time
                else:
                    journal.batches.append((entry.request_id, entry.metrics))
        return journal


class LiveJournal:
    """The journal file of a run still going on. Written while its sends fail, it is
    held (flock) meanwhile, so a sync leaves it to the run; once the run ends it is
    replaced by the run's last journal, or removed, and never by a state written late.
    A journal kept with the run's end (a run left open, whose flush a second Ctrl-C may
    stop) holds every point the run will have: it stays, unchanged, until the run's end
    removes or replaces it (an outage write after it, of points taken before it, would
    drop some; its batches stored, its end is not yet)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()  # `keep` runs on worker threads
        self._descriptor: int | None = None
        self._ended = False
        self._kept_end = False  # a keep wrote the run's end
        self.path: Path | None = None

    def keep(self, journal: Journal) -> Path | None:
        """Writes journal in place of the last; None (nothing written) once ended, or
        once a journal with the run's end was kept."""
        with self._lock:
            if self._ended or self._kept_end:
                return None
            self.path, descriptor = journal.write_held(self._directory)
            self._kept_end = journal.status is not None
            self._release()
            self._descriptor = descriptor
            return self.path

    def forget(self) -> None:
        """Removes the file: all it holds is stored (unless the run has ended since, and
        the file is its last journal, or it holds the run's end, not stored yet)."""
        with self._lock:
            if not self._ended and not self._kept_end:
                self._remove()

    def end(self, journal: Journal | None) -> Path | None:
        """The run has ended: writes its last journal, or with None removes the file
        (all is stored). Later `keep`s write nothing. Released even when the write
        fails (a full disk): the journal kept before is then left for a sync to take."""
        with self._lock:
            self._ended = True
            try:
                if journal is None:
                    self._remove()
                    return None
                self.path = journal.write(self._directory)
                return self.path
            finally:
                self._release()

    def _remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        self._release()

    def _release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # which unlocks it
            self._descriptor = None


def _point(metric: Metric) -> list[Any]:
    return [metric.key, metric.value, metric.timestamp, metric.step]


class _Tracking(Protocol):
    def for_project(self, project: str) -> _Tracking: ...

    async def log_batch(
        self, run_id: str, metrics: Sequence[Metric] = (), *, request_id: str | None = None
    ) -> object: ...

    async def set_terminated(
        self, run_id: str, status: RunStatus, end_time: int | None = None
    ) -> None: ...


async def replay(client: _Tracking, path: Path) -> int:
    """Stores what the journal files at path (one file, or a directory of them) hold,
    removing each file once all of it is stored; returns the points sent. A file that
    cannot be stored (its run was deleted, say, or it cannot be read) is kept, logged as
    a warning, and the others go on; the first such error is raised at the end. A file
    stored that cannot be removed is logged as a warning. A file another sync holds, or
    stored and removed meanwhile, is left to it: two syncs of one folder at once store
    each file once."""
    replayed = await replay_each(
        client, path, on_failure=_warn_not_stored, on_not_removed=_warn_not_removed
    )
    if replayed.failures:
        # Raised, the count would be lost: a sync that stored some journals says so.
        _log.warning(
            "sent %d points; %d journals not stored, kept to sync again",
            replayed.sent,
            len(replayed.failures),
        )
        raise replayed.failures[0][1]
    return replayed.sent


@dataclass
class Replayed:
    """What a replay did: the points it sent, each file not stored with its error (in
    the order met), which is kept to sync again, and each file stored that could not be
    removed, with its error."""

    sent: int = 0
    failures: list[tuple[Path, CairnError]] = field(default_factory=list)
    not_removed: list[tuple[Path, OSError]] = field(default_factory=list)


async def replay_each(
    client: _Tracking,
    path: Path,
    on_failure: Callable[[Path, CairnError], None] = lambda file, error: None,
    on_not_removed: Callable[[Path, OSError], None] = lambda file, error: None,
) -> Replayed:
    """replay, which says what it did rather than log and raise: a caller that reports
    it in its own words (the command line's one line) has each failure and each file
    not removed, as it happens through on_failure and on_not_removed, and the count."""
    replayed = Replayed()
    await asyncio.to_thread(_remove_unfinished, path)
    for file in await asyncio.to_thread(_files, path):
        try:
            unremoved = await _replay_held(client, file, replayed)
        except CairnError as error:
            on_failure(file, error)
            replayed.failures.append((file, error))
            continue
        if unremoved is not None:
            on_not_removed(file, unremoved)
            replayed.not_removed.append((file, unremoved))
    return replayed


async def _replay_held(client: _Tracking, file: Path, replayed: Replayed) -> OSError | None:
    """_replay_one of file once this sync holds it. A file that cannot be opened or read
    (EACCES, EIO) is a CairnError as a file that is no journal is: raised, one file's
    OSError stopped the whole sync, the files after it never stored."""
    try:
        with _Held.of(file) as held:
            return None if held is None else await _replay_one(client, file, held, replayed)
    except CairnError:  # UNAVAILABLE and DEADLINE_EXCEEDED are OSErrors too
        raise
    except OSError as error:
        raise FailedPreconditionError(
            f"journal {file} could not be read: {error}", reason="JOURNAL_UNREADABLE"
        ) from error


def _warn_not_stored(file: Path, error: CairnError) -> None:
    _log.warning("journal %s not stored: %s", file, error)


def _warn_not_removed(file: Path, error: OSError) -> None:
    _log.warning(
        "journal %s stored, but not removed: %s (remove it by hand: a later sync sends it again)",
        file,
        error,
    )


async def _replay_one(
    client: _Tracking, file: Path, held: _Held, replayed: Replayed
) -> OSError | None:
    """Sends the journal in file a line at a time, counting its points in replayed as
    they go, and removes the file once all of it is stored; the error removing it, if
    one did (an immutable file or folder), which leaves it stored all the same."""
    end: End | None = None
    with held.reading() as stream:
        lines = JournalLines(file, stream)
        run_id, project = await asyncio.to_thread(lines.header)
        tracking = client.for_project(project)
        while (entry := await asyncio.to_thread(lines.next)) is not None:
            if isinstance(entry, End):
                end = entry
                continue
            await tracking.log_batch(run_id, entry.metrics, request_id=entry.request_id)
            replayed.sent += len(entry.metrics)
    if end is not None:
        await tracking.set_terminated(run_id, end.status, end.end_time)
    try:
        await asyncio.to_thread(file.unlink, missing_ok=True)
    except OSError as error:
        return error
    return None


class _Held:
    """A journal file opened and locked (flock, where the system has it) by this sync:
    another sync of the same file skips it while this one stores it."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    @classmethod
    @contextlib.contextmanager
    def of(cls, file: Path) -> Iterator[_Held | None]:
        """The file held, or None when another sync holds it or removed it.

        Raises:
            OSError: the file cannot be opened, or is no regular file (a pipe or a
                device, given as a sync's PATH).
        """
        try:
            # Not blocking: opening a pipe waits for a writer, for ever.
            descriptor = os.open(file, os.O_RDONLY | _NOT_BLOCKING)
        except FileNotFoundError:  # stored and removed by another sync since listed
            yield None
            return
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError("it is no regular file (a pipe, a device)")
            # Reads block again: a network or FUSE file system may honour the flag.
            os.set_blocking(descriptor, True)
            yield cls(descriptor) if _lock(descriptor, file) else None
        finally:
            os.close(descriptor)  # which unlocks it

    def reading(self) -> BinaryIO:
        """The file, open for reading from its start; closing it leaves the file held."""
        return os.fdopen(os.dup(self._descriptor), "rb")


def _lock(descriptor: int, file: Path) -> bool:
    """Whether this sync now holds file: locked by no other, and still the file at its
    path (not one another sync stored and removed after this one opened it)."""
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(file))
    except FileNotFoundError:
        return False


def _remove_unfinished(path: Path) -> None:
    """Removes the journal writes in the folder at path that the processes making them
    left unfinished: what such a file holds came after its run's last whole journal, and
    the process that logged it is gone (docs/tracking.md)."""
    if not path.is_dir():
        return
    for file in path.glob(f"*{UNFINISHED}"):
        if not _UNFINISHED_NAME.fullmatch(file.name) or not file.is_file():
            continue  # another program's; or a pipe, which would never open
        if _unfinished_for_good(file):
            # Once closed: Windows removes no file a process has open.
            with contextlib.suppress(OSError):
                file.unlink()
                _log.info("removed %s, a journal write its process left unfinished", file)


def _unfinished_for_good(file: Path) -> bool:
    """Whether no process writes file any more. A write holds its file (flock) from the
    instant after it is made; the age covers that instant, and the systems without
    flock. The age is read first, without opening the file: Windows cannot rename a
    file another process has open, and a write under way renames its file."""
    try:
        if time.time() - file.stat().st_mtime <= UNFINISHED_SECONDS:
            return False
        with _Held.of(file) as held:
            return held is not None
    except OSError:  # unreadable here: not this sync's to judge
        return False


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        # Files only, passed over quietly: a folder or a pipe named *.jsonl is no
        # journal. A PATH naming a pipe is refused as it is opened (_Held.of).
        return sorted(file for file in path.glob(f"*{SUFFIX}") if file.is_file())
    if not path.exists():
        raise FileNotFoundError(f"no journal file or folder at {path}")
    return [path]
