"""The client side of direct transfer on the S3 backend (docs/artifacts.md): an upload's
parts PUT to the object store, or a download's ranges fetched from it, through URLs
the artifact service presigned, a few at once over kept-alive connections. Blocking:
runs in a worker thread.

sha256 needs the bytes in order while the pieces move out of order, so a thread of its
own hashes the file from its start, behind the pieces: an upload's from the source (a
second read, from the page cache of a file just read), a download's from the file as
its ranges land in it. Neither holds more than a chunk per thread in memory. The
threads are Workers': a ThreadPoolExecutor's stop when the main thread ends, and a
thread that outlives it may still transfer with a sync client.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, SSLError

from .._workers import Workers
from ..exceptions import InvalidArgumentError, UnavailableError
from ._direct import Unreachable
from ._local_files import reading

CONNECTIONS = 4  # a transfer's, by default (ArtifactClient.direct_connections)
CHUNK = 1024 * 1024  # what a connection sends or receives at a time
# A download's ranges: two per connection, from 16 to 256 MiB (see `_ranges`).
MIN_RANGE = 16 * 1024 * 1024
MAX_RANGE = 256 * 1024 * 1024
CONNECT_SECONDS = 3.0
IDLE_SECONDS = 300.0
# The most of an answer's body read for a part PUT, or for a range refused: S3 sends
# none, or an error's XML; a faulty store may send more, without end.
ANSWER_BYTES = 64 * 1024
# A piece whose connection broke, or that the store failed (5xx, or a passing failure such
# as RequestTimeout or SlowDown), is sent again after these.
RETRY_WAITS = (0.2, 1.0)
# Statuses after which the store will not take this client's transfers for a while:
# signed for an address or region it does not answer to (a misconfigured
# CAIRN_S3_PUBLIC_ENDPOINT), or refusing this network.
_LASTING = frozenset({400, 403})
ReadAt = Callable[[int, int], bytes]


# S3's codes of failures that pass: a connection too slow for it, too many requests.
_PASSING = frozenset({"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"})


class StoreRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"the object store answered {status}: {body[:300]!r}")
        self.status = status
        found = re.search(rb"<Code>([^<]{1,100})</Code>", body)
        self.code = found.group(1).decode("ascii", "replace") if found else ""
        # S3's answer to a presigned URL past its expiry (X-Amz-Expires).
        self.expired = status == 403 and b"<Message>Request has expired</Message>" in body

    @property
    def passing(self) -> bool:
        return self.status >= 500 or self.code in _PASSING


def upload(
    read_at: ReadAt,
    size: int,
    part_size: int,
    urls: Sequence[str],
    sent: Callable[[int], None],
    connections: int = CONNECTIONS,
    stop: threading.Event | None = None,
) -> tuple[list[str], str]:
    """PUTs each part of the source (read_at(offset, length) reads it); returns the
    parts' ETags, in order, and the sha256 of the whole. Setting stop (the caller was
    cancelled) ends every piece at its next chunk.

    Raises:
        Unreachable: the store failed before any part arrived, or the URLs expired or
            name what the store no longer holds (stream instead).
        UnavailableError: the store failed after parts arrived (send the upload again).
        OSError: the source could not be read (as any other error of this side).
    """
    pieces = [(start, min(part_size, size - start)) for start in range(0, size, part_size)]
    if len(pieces) != len(urls):
        raise UnavailableError(f"the service sent {len(urls)} part URLs for {len(pieces)} parts")
    transfer = _Transfer(pieces, sent, connections, stop)
    # The transfer ends (and stops what still runs) before the hashing thread is joined.
    with _Hashing(read_at, pieces, lambda index, past: pieces[index][1]) as hashing, transfer:
        etags = transfer.run(lambda index: _put(transfer, urls[index], read_at, index))
        return etags, hashing.hexdigest()


def download(
    url: str,
    path: str,
    size: int,
    received: Callable[[int], None],
    connections: int = CONNECTIONS,
    stop: threading.Event | None = None,
) -> str:
    """Fetches the object into the file at path (created or emptied); returns the
    sha256 of what arrived. Raises as `upload` does; Unreachable, too, when the store
    holds fewer bytes of the object than size (streaming says OBJECT_BYTES_MISSING)."""
    pieces = _ranges(size, connections)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(descriptor, size)
        transfer = _Transfer(pieces, received, connections, stop)

        def read_at(offset: int, length: int) -> bytes:
            return os.pread(descriptor, length, offset)

        with _Hashing(read_at, pieces, transfer.wait_written) as hashing, transfer:
            transfer.run(lambda index: _get(transfer, url, descriptor, index))
            return hashing.hexdigest()
    finally:
        os.close(descriptor)


class _Transfer:
    """What the pieces of one transfer share: a pool of kept-alive connections, the
    progress, which pieces landed, and the first failure, which stops the others."""

    def __init__(
        self,
        pieces: list[tuple[int, int]],
        moved: Callable[[int], None],
        connections: int,
        stop: threading.Event | None = None,
    ) -> None:
        self.pieces = pieces
        self.connections = connections
        self.http = urllib3.PoolManager(
            maxsize=connections,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=CONNECT_SECONDS, read=IDLE_SECONDS),
            blocksize=CHUNK,
        )
        self.stopped = stop if stop is not None else threading.Event()
        self._moved = moved
        self._progress = [0] * len(pieces)  # bytes of each piece, its best attempt's
        self._total = 0
        self._landed = [False] * len(pieces)
        self._changed = threading.Condition()

    def __enter__(self) -> _Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        with self._changed:
            self._changed.notify_all()
        self.http.clear()

    def advance(self, index: int, done: int) -> None:
        """Notes how far a piece's attempt got; progress never goes back on a retry."""
        with self._changed:  # called under the lock, so that totals arrive in order
            if done > self._progress[index]:
                self._total += done - self._progress[index]
                self._progress[index] = done
                self._moved(self._total)
                self._changed.notify_all()

    def landed(self, index: int) -> None:
        with self._changed:
            self._landed[index] = True
            self._changed.notify_all()

    def wait_written(self, index: int, past: int) -> int:
        """How many bytes of a download's piece are in its file, once more than past
        are (an attempt sent again writes the same bytes again); -1 when the transfer
        stopped first."""
        with self._changed:
            while self._progress[index] <= past and not self.stopped.is_set():
                self._changed.wait()
            return self._progress[index] if self._progress[index] > past else -1

    def run(self, move: Callable[[int], Any]) -> list[Any]:
        """move(index) for every piece, a connection each at once, in order; their results."""
        with Workers(self.connections, thread_name_prefix="cairn-presigned") as workers:
            futures = [workers.submit(self._attempts, move, i) for i in range(len(self.pieces))]
            for future in futures:
                _wait_quietly(future)
        errors = [f.exception() for f in futures if f.exception() is not None]
        failure = next((e for e in errors if not isinstance(e, _Stopped)), None)
        if failure is None:
            return [f.result() for f in futures]
        if isinstance(failure, _SourceFailed):
            raise failure.error
        if not _of_the_store(failure):
            raise failure  # this side's (a file that cannot be written): not the store's
        if not any(self._landed) or _expired(failure) or _gone(failure):
            # URLs that expired are this transfer's only, and what they name may be gone
            # (the object replaced or deleted meanwhile) or cut short: streaming looks
            # the path up, and says OBJECT_BYTES_MISSING for bytes the store lacks.
            raise Unreachable(f"the object store: {failure}", lasting=_lasting(failure))
        raise UnavailableError(
            f"the transfer through the object store broke: {failure}",
            reason="OBJECT_STORE_UNAVAILABLE",  # as the service says of the same fault
        )

    def _attempts(self, move: Callable[[int], Any], index: int) -> Any:
        waits = iter(RETRY_WAITS)
        while True:
            if self.stopped.is_set():
                raise _Stopped
            try:
                result = move(index)
                self.landed(index)
                return result
            except Exception as error:
                wait = next(waits, None) if _transient(error) else None
                if wait is None:
                    self.stopped.set()
                    with self._changed:
                        self._changed.notify_all()
                    raise
                time.sleep(wait)


def _put(transfer: _Transfer, url: str, read_at: ReadAt, index: int) -> str:
    start, length = transfer.pieces[index]
    body = _Region(read_at, start, length, lambda done: transfer.advance(index, done))
    body.stopped = transfer.stopped
    # Not preloaded: the answer is its headers (the ETag), and a store that sent a body
    # without end would be read whole into memory.
    response = transfer.http.request(
        "PUT",
        url,
        body=body,
        headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
        preload_content=False,
    )
    try:
        answer = response.read(ANSWER_BYTES)  # S3's is empty on success; an error's XML
        if response.status != 200:
            raise StoreRefused(response.status, answer)
        etag = response.headers.get("ETag")
        if not etag:
            raise UnavailableError(
                "the object store answered a part without its ETag",
                reason="OBJECT_STORE_UNAVAILABLE",
            )
        return str(etag)
    finally:
        if not response.closed:  # a body left unread: its connection is not reusable
            response.close()
        response.release_conn()


def _get(transfer: _Transfer, url: str, descriptor: int, index: int) -> None:
    start, length = transfer.pieces[index]
    response = transfer.http.request(
        "GET", url, headers={"Range": f"bytes={start}-{start + length - 1}"}, preload_content=False
    )
    try:
        if response.status not in (200, 206) or (response.status == 200 and start):
            raise StoreRefused(response.status, response.read(ANSWER_BYTES))
        done = 0
        while done < length:
            if transfer.stopped.is_set():
                raise _Stopped
            chunk = response.read(min(CHUNK, length - done))
            if not chunk:  # the answer ended (a broken one raises): it was that short
                raise _RangeShort(f"the object store sent {done} bytes of a range of {length}")
            os.pwrite(descriptor, chunk, start + done)
            done += len(chunk)
            transfer.advance(index, done)
    finally:
        if response.length_remaining:  # a body left unread: its connection is not reusable
            response.close()
        response.release_conn()


class _Region:
    """A piece of the source as the chunks of a request's body."""

    def __init__(
        self, read_at: ReadAt, start: int, length: int, advance: Callable[[int], None]
    ) -> None:
        self._read_at = read_at
        self._start = start
        self._length = length
        self._done = 0
        self._advance = advance
        self.stopped: threading.Event | None = None

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        if self.stopped is not None and self.stopped.is_set():
            raise _Stopped  # another piece failed: end this one now
        left = self._length - self._done
        size = left if size < 0 else min(size, left)
        if not size:
            return b""
        try:
            data = self._read_at(self._start + self._done, size)
        except OSError as error:
            raise _SourceFailed(error) from error
        if not data:
            raise _SourceFailed(_SourceEnded())  # a file that shrank while it was sent
        self._done += len(data)
        self._advance(self._done)
        return data


# available(index, past): how many bytes of the piece may be read, once more than past
# may; -1 when there will be no more.
Available = Callable[[int, int], int]


class _Hashing:
    """sha256 of the pieces in order, in a thread of its own, reading each as far as
    available says (all of it at once for an upload; as it lands for a download)."""

    def __init__(
        self, read_at: ReadAt, pieces: list[tuple[int, int]], available: Available
    ) -> None:
        self._stop = threading.Event()
        self._thread = Workers(1, thread_name_prefix="cairn-hash")
        self._future = self._thread.submit(self._hash, read_at, pieces, available)

    def _hash(self, read_at: ReadAt, pieces: list[tuple[int, int]], available: Available) -> str:
        digest = hashlib.sha256()
        for index, (start, length) in enumerate(pieces):
            done = 0
            while done < length:
                ready = available(index, done)
                if ready < 0:
                    raise _Stopped
                for offset in range(start + done, start + ready, CHUNK):
                    if self._stop.is_set():
                        raise _Stopped
                    digest.update(read_at(offset, min(CHUNK, start + ready - offset)))
                done = ready
        return digest.hexdigest()

    def hexdigest(self) -> str:
        return self._future.result()

    def __enter__(self) -> _Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.shutdown(wait=True)


def _ranges(size: int, connections: int) -> list[tuple[int, int]]:
    """A download's pieces: the whole object for one connection; otherwise two ranges
    per connection, from 16 to 256 MiB each. Few requests, as a store may read a whole
    object to serve any range of it (moto does); enough for the connections to share;
    and small enough that the hashing, which follows them in order, is never more than
    a range per connection behind when the last lands."""
    step = size
    if connections > 1:
        share = -(-size // (2 * connections) // MIN_RANGE) * MIN_RANGE
        step = min(MAX_RANGE, max(MIN_RANGE, share))
    return [(start, min(step, size - start)) for start in range(0, size, max(step, 1))]


class _SourceFailed(Exception):
    """The source of a part could not be read: raised as this, since urllib3 takes any
    OSError raised while it sends a body for a connection that broke."""

    def __init__(self, error: OSError | _SourceEnded) -> None:
        super().__init__(str(error))
        self.error = error


class _SourceEnded(Exception):
    """A part's read came to the source's end before the size the transfer was made for:
    upload_source tells the caller its file shrank."""


class _Stopped(Exception):
    """Another piece failed: this one gave up."""


class _RangeShort(Exception):
    """The store answered a range whole, but shorter than asked: it holds fewer bytes
    than the object's size (cut short behind the service's back). Not sent again: the
    store answers the same."""


def _wait_quietly(future: Future[Any]) -> None:
    try:
        future.result()
    except BaseException:  # collected by the caller
        return


def _transient(error: Exception) -> bool:
    """A piece worth sending again: its connection broke or timed out once it was open,
    or the store failed it for a while. Not one refused, or a store out of reach."""
    if isinstance(error, StoreRefused):
        return error.passing
    if isinstance(error, ConnectTimeoutError | SSLError):
        return False
    return isinstance(error, HTTPError | ConnectionError)


def _of_the_store(error: BaseException) -> bool:
    """A failure of the store or of the way to it (refused, answered oddly, a connection
    that failed), which streaming may get around; not one of this side, such as a source
    file that cannot be read."""
    return isinstance(
        error, StoreRefused | _RangeShort | UnavailableError | HTTPError | ConnectionError
    )


def _expired(error: BaseException) -> bool:
    return isinstance(error, StoreRefused) and error.expired


def _gone(error: BaseException) -> bool:
    """Whether the store no longer holds the object or upload the URLs name, or holds
    fewer bytes of the object than its size: a range past them (416) or short."""
    if isinstance(error, StoreRefused):
        return error.status in (404, 416)
    return isinstance(error, _RangeShort)


def _lasting(error: BaseException) -> bool:
    """Refused connections, unknown names, connect timeouts and TLS failures are the
    store out of this client's reach (urllib3 reports each as one of these); so is a
    400 or 403, unless the store failed for a while or the URL expired."""
    if isinstance(error, StoreRefused):
        return error.status in _LASTING and not error.passing and not error.expired
    return isinstance(error, ConnectTimeoutError | SSLError)


def upload_source(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    size: int,
    part_size: int,
    urls: Sequence[str],
    sent: Callable[[int], None],
    connections: int = CONNECTIONS,
    stop: threading.Event | None = None,
) -> tuple[list[str], str]:
    """`upload` of a local file (read by position, so parts go in parallel) or bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)

        def read_bytes(at: int, n: int) -> bytes:
            return bytes(view[at : at + n])

        return upload(read_bytes, size, part_size, urls, sent, connections, stop)
    descriptor = os.open(source, os.O_RDONLY)

    def read_at(at: int, n: int) -> bytes:
        with reading(source):
            return os.pread(descriptor, n, at)

    try:
        try:
            sent_parts = upload(
                read_at,
                size,
                part_size,
                urls,
                sent,
                connections,
                stop,
            )
        except _SourceEnded:
            raise _size_mismatch(os.fstat(descriptor).st_size, size) from None
        # Only the size measured before the transfer was sent: a file that grew (or
        # shrank) meanwhile is refused as the streamed path refuses it, not published cut.
        if (now := os.fstat(descriptor).st_size) != size:
            raise _size_mismatch(now, size)
        return sent_parts
    finally:
        os.close(descriptor)


def _size_mismatch(now: int, size: int) -> InvalidArgumentError:
    if now > size:
        said = f"received more than the {size} bytes expected"
    elif now < size:
        said = f"the file shrank to {now} bytes from the {size} expected"
    else:
        said = f"the file shrank while it was sent, and grew back to its {size} bytes"
    return InvalidArgumentError(
        said, reason="SIZE_MISMATCH", metadata={"expected_size": str(size), "size": str(now)}
    )
