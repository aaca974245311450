"""A download's writes and an upload's reads run in threads, which a cancel cannot stop:
the call they serve ends only once its thread has, so the file it closes next is not
one a thread still writes or reads (after a cancel, a download's last write landed in
whatever file took its descriptor: 4 MiB of an object appended to another file)."""

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine

import pytest

from cairn._clients._downloads import _written_behind
from cairn._clients._uploads import _read_ahead
from tests.conftest import eventually


class HeldFile:
    """A file whose second write or read waits until let go, and which records whether
    it was closed while one ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_call = threading.Event()
        self.let_go = threading.Event()
        self.closed_while_in_call: bool | None = None
        # The transfer's generator, which waits for the thread in `_workers.ended`.
        self.transfer: AsyncGenerator[bytes, None] | None = None
        self._lock = threading.Lock()
        self._running = False

    def write(self, data: bytes) -> int:
        self._held()
        return len(data)

    def read(self) -> bytes:
        self._held()
        return b"chunk"

    def _held(self) -> None:
        with self._lock:
            self.calls += 1
            self._running = True
        try:
            if self.calls == 2:
                self.in_call.set()
                self.let_go.wait(30)
        finally:
            with self._lock:
                self._running = False

    def close(self) -> None:
        with self._lock:
            self.closed_while_in_call = self._running


async def _three_chunks() -> AsyncIterator[bytes]:
    yield b"first"
    yield b"second"
    yield b"third"


async def _download(file: HeldFile) -> None:
    file.transfer = _written_behind(file, _three_chunks())
    try:
        async with contextlib.aclosing(file.transfer) as chunks:
            async for _ in chunks:
                pass
    finally:
        file.close()


async def _upload(file: HeldFile) -> None:
    file.transfer = _read_ahead(file.read)
    try:
        async with contextlib.aclosing(file.transfer) as chunks:
            async for _ in chunks:
                pass
    finally:
        file.close()


@pytest.mark.parametrize("cancels", [1, 2])
@pytest.mark.parametrize("call", [_download, _upload], ids=["download-write", "upload-read"])
async def test_a_cancelled_transfer_closes_its_file_after_its_thread_ends(
    call: Callable[[HeldFile], Coroutine[None, None, None]], cancels: int
) -> None:
    """A second cancel (the sync facade's Ctrl-C, then its close) comes while the call
    waits for its thread."""
    file = HeldFile()
    task: asyncio.Future[None] = asyncio.ensure_future(call(file))
    await asyncio.to_thread(file.in_call.wait, 30)  # the task now awaits that call

    waited: object = None
    for _ in range(cancels):
        task.cancel()
        # Until the cancel was taken: the call ended (an abandoned thread had its file
        # closed by then), or it waits for its thread, anew after a second cancel.
        await eventually(functools.partial(_taken, task, file, waited), what="the cancel")
        waited = _waiting_for_the_thread(file)
    file.let_go.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert file.closed_while_in_call is False


def _waiting_for_the_thread(file: HeldFile) -> object:
    """What `_workers.ended` awaits for the transfer now, None unless it waits there."""
    assert file.transfer is not None
    ended = getattr(file.transfer, "ag_await", None)
    return getattr(ended, "cr_await", None) if getattr(ended, "__name__", "") == "ended" else None


def _taken(task: asyncio.Future[None], file: HeldFile, before: object) -> bool:
    """Whether the task took its last cancel: it ended, or it waits for its thread on
    another wait than before (one a cancel ended, begun again)."""
    now = _waiting_for_the_thread(file)
    return task.done() or (now is not None and now is not before)
