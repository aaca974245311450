"""A transfer's `timeout=` bounds the whole transfer: each attempt sent again after a lost
connection, the waits between them, and what goes over the byte endpoint; a transfer
cut at it, or cancelled, ends its threads before its files close."""

import asyncio
import errno
import io
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients import _direct
from cairn._clients._direct_transfers import UPLOAD_RETRY_WAITS
from cairn._direct_io import DirectWriter
from cairn.exceptions import DeadlineExceededError, UnavailableError
from cairn_server.artifacts.http_requests import ChunkedReader
from tests.conftest import eventually, new_project
from tests.proxy import AnswerDroppingProxy

DATA = os.urandom(3 * 1024 * 1024)


@pytest.fixture
async def cutting(server_port: int) -> AsyncIterator[AnswerDroppingProxy]:
    """A proxy to the server that cuts every call's connection as its answer begins."""
    proxy = AnswerDroppingProxy(server_port)
    await proxy.start()
    proxy.drop_next(100)
    yield proxy
    await proxy.close()


async def test_an_upload_sends_no_attempt_past_its_timeout(
    cutting: AnswerDroppingProxy, server_port: int, unique: str
) -> None:
    """Each attempt had the whole timeout, so an upload given 3 s took 12 s through
    connections cut midway (4 attempts of 3 s)."""
    timeout = 1.0
    # The waits before the last attempt outlast the timeout: it is never sent.
    assert sum(UPLOAD_RETRY_WAITS) > timeout
    project = await new_project(server_port, f"d-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", cutting.port, project=project
    ) as client:
        with pytest.raises(UnavailableError):
            await client.upload("cut.bin", b"bytes", timeout=timeout)
    assert 1 <= cutting.dropped <= len(UPLOAD_RETRY_WAITS)
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as direct:
        assert await direct.list("") == []


async def test_an_upload_over_the_byte_endpoint_ends_at_its_timeout(
    server_port: int, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No gRPC deadline reaches the byte endpoint: an upload given 1 s whose body the
    endpoint stopped reading waited for the socket's own idle timeout (5 minutes)."""
    assert _direct.IDLE_SECONDS > 20
    reading, release = threading.Event(), threading.Event()
    read = ChunkedReader.read

    def held(self: ChunkedReader, n: int = -1) -> bytes:
        """The endpoint reads nothing of a body past its first read until release."""
        if self.size > 0:
            reading.set()
            release.wait(60)
        return read(self, n)

    monkeypatch.setattr(ChunkedReader, "read", held)
    sending = _transfers_under_way(monkeypatch)
    project = await new_project(server_port, f"d-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        client.direct_threshold = 1024 * 1024
        try:
            async with asyncio.timeout(20):  # this test's own bound, far below the idle one
                with pytest.raises(DeadlineExceededError, match="within its timeout of 1 s"):
                    await client.upload("held.bin", DATA, timeout=1)
            assert reading.is_set()  # it ended mid-body
            # Its thread ends with it (the endpoint still reads nothing): left to the
            # idle timeout, it held `asyncio.run`'s exit for 5 minutes.
            await eventually(lambda: sending.count == 0, timeout=5, what="the PUT's thread ended")
        finally:
            release.set()


class _Running:
    count = 0


def _transfers_under_way(monkeypatch: pytest.MonkeyPatch) -> _Running:
    """Counts the client's byte-endpoint uploads running in their threads."""
    running, upload = _Running(), _direct.upload

    def counted(*args: Any) -> bytes:
        running.count += 1
        try:
            return upload(*args)
        finally:
            running.count -= 1

    monkeypatch.setattr(_direct, "upload", counted)
    return running


class _TimingOut(io.RawIOBase):
    """A file whose reads time out, as one on a network file system may (ETIMEDOUT)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")


@pytest.mark.parametrize("timeout", [None, 30.0])
async def test_a_source_that_times_out_is_not_the_uploads_timeout(
    server_port: int, unique: str, timeout: float | None
) -> None:
    """A file's own TimeoutError (an OSError) was told as the upload's timeout passing,
    or, with no timeout, failed formatting the message (TypeError)."""
    project = await new_project(server_port, f"d-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        with pytest.raises(TimeoutError) as raised:
            await client.upload("slow.bin", io.BufferedReader(_TimingOut()), timeout=timeout)
    assert not isinstance(raised.value, DeadlineExceededError)
    assert raised.value.errno == errno.ETIMEDOUT


@pytest.fixture
async def big_stored(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    """A client of a project of its own whose transfers over 1 MiB go over the byte
    endpoint, with 16 MiB stored at big.bin (4 blocks of a download's writes)."""
    project = await new_project(server_port, f"d-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        client.direct_threshold = 1024 * 1024
        await client.upload("big.bin", os.urandom(16 * 1024 * 1024))
        yield client


class _DiskHeldUntilCut:
    """A download's disk writes held (a slow disk) from its first until its transfer is
    cut: what each write found of its file, closed or open."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writing, self.cut = threading.Event(), threading.Event()
        self.closed_as_written: list[bool] = []
        write, cut = DirectWriter._write_blocks, _direct.Cut.cut

        def held(writer: DirectWriter, count: int) -> None:
            self.writing.set()
            self.cut.wait(30)
            self.closed_as_written.append(writer.closed)
            if not writer.closed:  # else the descriptor may be another file's now
                write(writer, count)

        def cutting(transfer: _direct.Cut) -> None:
            cut(transfer)
            self.cut.set()

        monkeypatch.setattr(DirectWriter, "_write_blocks", held)
        monkeypatch.setattr(_direct.Cut, "cut", cutting)


async def test_a_cancelled_direct_download_writes_nothing_once_its_file_is_closed(
    big_stored: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled during a slow disk write of its writer thread, the download closed its
    file at once; the thread then wrote its blocks into the closed descriptor, which a
    file opened meanwhile had taken (8 MiB of the download landed in it)."""
    disk = _DiskHeldUntilCut(monkeypatch)
    downloading = asyncio.create_task(big_stored.download("big.bin", tmp_path / "out.bin"))
    assert await asyncio.to_thread(disk.writing.wait, 30)
    downloading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await downloading
    await eventually(lambda: disk.closed_as_written != [], what="the held write's end")
    assert True not in disk.closed_as_written
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nor its temporary


async def test_a_direct_download_ends_at_its_timeout(
    big_stored: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only its ticket call had the timeout: a download over the byte endpoint to a slow
    disk given 1 s took 6 s, and succeeded."""
    disk = _DiskHeldUntilCut(monkeypatch)  # its writes wait for the timeout's cut
    with pytest.raises(DeadlineExceededError, match=r"download of 'big\.bin' did not end"):
        await big_stored.download("big.bin", tmp_path / "out.bin", timeout=1)
    assert disk.cut.is_set()
    assert sorted(path.name for path in tmp_path.iterdir()) == []
