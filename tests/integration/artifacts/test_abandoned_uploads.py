"""An upload the client gives up midway (its source raises, or the caller cancels)
ends on the server at once: the call was left open until the channel closed, and the
server held its buffers and a writer's file meanwhile, about 2 MB a call."""

import asyncio
import io
import threading

import asyncpg
import pytest

import cairn
from tests.conftest import eventually

CHUNK = 256 * 1024
_OPEN = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"


class _Failing(io.RawIOBase):
    """A file that reads a few chunks, then fails: a network share that drops."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left == 0:
            raise OSError("the share went away")
        self.left -= 1
        size = min(len(buffer), CHUNK)
        buffer[:size] = b"x" * size
        return size


async def _no_upload_open(pool: asyncpg.Pool, project: str) -> None:
    await eventually(
        lambda: _none_open(pool, project), timeout=5, what="the server ends the upload"
    )


async def _none_open(pool: asyncpg.Pool, project: str) -> bool:
    return await pool.fetchval(_OPEN, project) == 0


async def test_an_upload_whose_source_fails_ends_on_the_server(
    store: cairn.ArtifactClient, pool: asyncpg.Pool
) -> None:
    with pytest.raises(OSError, match="the share went away"):
        await store.upload("t/failed.bin", _Failing(chunks=8))
    await _no_upload_open(pool, store.project)


async def test_an_upload_cancelled_by_its_caller_ends_on_the_server(
    store: cairn.ArtifactClient, pool: asyncpg.Pool
) -> None:
    """Cancelled while it waits for its source (a slow disk, a share that hangs)."""
    reading, release = threading.Event(), threading.Event()

    class _Hanging(_Failing):
        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            if self.left == 0:
                reading.set()
                release.wait(30)
            return super().readinto(buffer)

    task = asyncio.create_task(store.upload("t/cancelled.bin", _Hanging(chunks=8)))
    try:
        assert await asyncio.to_thread(reading.wait, 30)
        await eventually(lambda: _opened(pool, store.project), what="the server opens it")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _no_upload_open(pool, store.project)
    finally:
        release.set()


async def _opened(pool: asyncpg.Pool, project: str) -> bool:
    return await pool.fetchval(_OPEN, project) > 0
