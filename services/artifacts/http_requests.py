"""Reading an HTTP/1.1 request off a byte-endpoint connection: its head and fields, each
line bounded, and a chunked upload body, hashed and verified on the way."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from ..common.errors import InvalidArgument
from .streams import MERGE_BYTES, check_growth, verify

SHA256_TRAILER = "x-cairn-sha256"
MAX_CHUNK = 4 * 1024 * 1024  # what the client sends; bounds one chunk held in memory
MAX_HEADER_LINE = 8192
READ_AHEAD = 2


class ClientGone(Exception):
    """The client's connection broke or stalled in the middle of a transfer."""


class ChunkedReader:
    """A file-like `read(n)` over a chunked HTTP body, verified at the end (the trailer's
    sha256, else the ticket's, and the expected size). Three threads overlap: this one
    receives the next chunk while the caller writes the one before and a third hashes
    it; at most READ_AHEAD chunks wait for the writer. Chunks smaller than MERGE_BYTES
    are merged up to it first: each chunk handed to the hasher and to the writer on its
    own made a body of 1-byte chunks cost the server far more per byte than the client."""

    def __init__(
        self,
        incoming: BinaryIO,
        expected_size: int,
        expected_sha256: str,
        moved: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._incoming = incoming
        self._moved = moved  # told the bytes received so far, after each chunk
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="cairn-direct-hash")
        self._hashing: Future[None] | None = None
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(READ_AHEAD)
        self._stopped = threading.Event()
        self._rest = b""
        self._finished = False
        self._size_read: int | None = None  # a chunk's size, read before its bytes
        self.hash = hashlib.sha256()
        self.size = 0
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.verified = False
        self._receiver = threading.Thread(
            target=self._receive, name="cairn-direct-receive", daemon=True
        )

    def __enter__(self) -> ChunkedReader:
        self._receiver.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A receiver still waiting for room (the writer failed) gives up; one waiting
        # on the client ends when the connection closes.
        self._stopped.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()
        self._hasher.shutdown(wait=True)

    @property
    def sha256(self) -> str:
        return self.hash.hexdigest()

    def read(self, n: int = -1) -> bytes:
        data = self._rest or self._take()
        if 0 <= n < len(data):
            data, self._rest = data[:n], data[n:]
        else:
            self._rest = b""
        return data

    def _take(self) -> bytes:
        if self._finished:
            return b""
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._finished = not item
        return item

    def _receive(self) -> None:
        while not self._stopped.is_set():
            try:
                item: bytes | BaseException = self._next()
            except OSError as error:  # told apart from the writer's errors (the disk's)
                item = ClientGone(f"the upload's connection broke: {error}")
            except BaseException as error:
                item = error
            while not self._stopped.is_set():
                with contextlib.suppress(queue.Full):
                    self._chunks.put(item, timeout=0.5)
                    break
            if not isinstance(item, bytes) or not item:
                return

    def _next(self) -> bytes:
        """The next piece for the writer, hashed: a chunk of MERGE_BYTES or more, or
        smaller chunks merged up to MERGE_BYTES; b"" at the end of the body."""
        merged = bytearray()
        while True:
            size = self._next_size()
            if merged and (size == 0 or len(merged) + size > MERGE_BYTES):
                self._size_read = size  # kept for the next piece, its bytes not read yet
                break
            if size == 0:
                self._end()
                return b""
            chunk = self._chunk(size)
            if size >= MERGE_BYTES:  # not merged: a piece of its own, not copied
                self._hash(chunk)
                return chunk
            merged += chunk
            if len(merged) == MERGE_BYTES:
                break
        piece = bytes(merged)
        self._hash(piece)
        return piece

    def _next_size(self) -> int:
        size, self._size_read = self._size_read, None
        return _chunk_size(_line(self._incoming)) if size is None else size

    def _chunk(self, size: int) -> bytes:
        chunk = self._incoming.read(size)
        if len(chunk) != size or self._incoming.read(2) != b"\r\n":
            raise _bad_request("the body ended inside a chunk")
        self.size += size
        self._moved(self.size)
        check_growth(self.size, self.expected_size)
        return chunk

    def _hash(self, chunk: bytes) -> None:
        if self._hashing is not None:
            self._hashing.result()
        self._hashing = self._hasher.submit(self.hash.update, chunk)

    def _end(self) -> None:
        if self._hashing is not None:
            self._hashing.result()
        trailers = _read_fields(self._incoming)
        sent = trailers.get(SHA256_TRAILER, "").lower()
        if sent and (len(sent) != 64 or not set(sent) <= _HEX):
            raise _bad_request("the trailer's sha256 is not 64 hexadecimal characters")
        if self.expected_sha256 and sent and sent != self.expected_sha256:
            raise _bad_request("the trailer's sha256 differs from the expected one")
        if not (sent or self.expected_sha256):
            raise _bad_request(
                f"name the bytes' sha256, in the ticket or the {SHA256_TRAILER} trailer"
            )
        verify(self.size, self.sha256, self.expected_size, sent or self.expected_sha256)
        self.verified = True


_HEX = set("0123456789abcdef")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


def _line(incoming: BinaryIO) -> bytes:
    """The next line, whole: one longer than MAX_HEADER_LINE, read so far, would be taken
    for its start (and the rest for the lines after it)."""
    line = incoming.readline(MAX_HEADER_LINE)
    if not line.endswith(b"\n"):
        raise _bad_request(
            f"a line of the request is longer than {MAX_HEADER_LINE} bytes, "
            "or the request ended inside it"
        )
    return line


def _chunk_size(line: bytes) -> int:
    """The size of a chunk line: hexadecimal digits (then extensions after ";")."""
    digits = line.split(b";", 1)[0].rstrip(b" \t\r\n")
    if not _CHUNK_SIZE.fullmatch(digits):
        raise _bad_request("malformed chunk size")
    size = int(digits, 16)
    if size > MAX_CHUNK:
        raise _bad_request(f"chunks are at most {MAX_CHUNK} bytes")
    return size


def read_head(incoming: BinaryIO) -> tuple[str, str, dict[str, str]]:
    line = _line(incoming).decode("latin-1").rstrip("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _bad_request("not an HTTP/1.1 request")
    return parts[0], parts[1], _read_fields(incoming)


def _read_fields(incoming: BinaryIO) -> dict[str, str]:
    fields: dict[str, str] = {}
    for _ in range(100):
        line = _line(incoming).decode("latin-1").rstrip("\r\n")
        if not line:
            return fields
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    raise _bad_request("too many header fields")


def _bad_request(message: str) -> InvalidArgument:
    return InvalidArgument("INVALID_ARGUMENT", message)
