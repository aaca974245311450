"""A transfer over the byte endpoint whose local file fails it fails as the streamed
path's does, not as a broken connection (UNAVAILABLE, which tells a caller that trying
again may help): a download's file that cannot be written (a full disk, a file too
large) is LOCAL_WRITE_FAILED, an upload's file that cannot be read the OSError of the
read. A connection that does break is still UNAVAILABLE."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients import _direct
from cairn.exceptions import FailedPreconditionError, NotFoundError, UnavailableError
from tests.conftest import disk_full_after, new_project
from tests.integration.artifacts.test_direct_endpoint import _fake_endpoint, _reset

THRESHOLD = 64 * 1024
BIG = os.urandom(300_000)
ROOM = 100_000  # what a file may grow to while the disk is "full": a part of BIG
# A regular file (4,096 bytes, says stat) that opens but whose read fails (EINVAL), as a
# disk's EIO does midway: of the loopback interface, which has no speed.
UNREADABLE = Path("/sys/class/net/lo/speed")
SMALL = {"d/0.txt": b"listed first", "d/a/b": b"nested", "d/z.txt": b"after the big one"}


@pytest.fixture
async def direct(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"w-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        client.direct_threshold = THRESHOLD
        yield client


@pytest.fixture
def over_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each download begun over the byte endpoint: proof that the test's
    large file goes there, not streamed (where the disk's refusal was typed already)."""
    sizes: list[int] = []
    original = _direct.download

    def counted(endpoint: _direct.Endpoint, out: Any, size: int, *rest: Any) -> str:
        sizes.append(size)
        return original(endpoint, out, size, *rest)

    monkeypatch.setattr(_direct, "download", counted)
    return sizes


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_full_disk_during_a_direct_download_is_a_local_write_failure(
    direct: cairn.ArtifactClient, tmp_path: Path, over_the_endpoint: list[int]
) -> None:
    """It was UnavailableError, no reason: "the download's connection broke: [Errno 27]
    File too large"."""
    await direct.upload("big.bin", BIG)
    target = tmp_path / "big.bin"

    with pytest.raises(FailedPreconditionError) as refused, disk_full_after(ROOM):
        await direct.download("big.bin", target)

    assert over_the_endpoint == [len(BIG)]
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata == {"path": str(target), "errno": "EFBIG"}
    assert _files(tmp_path) == {}  # neither the file nor its .part
    await direct.download("big.bin", target)  # the same client, once there is room
    assert _files(tmp_path) == {"big.bin": BIG}


async def test_a_full_disk_during_a_tree_s_direct_file_is_a_local_write_failure(
    direct: cairn.ArtifactClient, tmp_path: Path, over_the_endpoint: list[int]
) -> None:
    """The small files go first (streamed, under the threshold), then the large one
    over the byte endpoint, whose write the disk refuses."""
    for path, data in SMALL.items():
        await direct.upload(path, data)
    await direct.upload("d/big.bin", BIG)
    out = tmp_path / "out"

    with pytest.raises(FailedPreconditionError) as refused, disk_full_after(ROOM):
        await direct.download("d", out)

    assert over_the_endpoint == [len(BIG)]
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["errno"] == "EFBIG"
    written = {f"d/{relative}": data for relative, data in _files(out).items()}
    assert written == SMALL  # each whole, and no .part of the large one
    await direct.download("d", out)
    assert _files(out)["big.bin"] == BIG


def _half_then(end: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    """An answer that announces BIG and sends half of it before end."""

    def answer(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG))
        connection.sendall(BIG[: len(BIG) // 2])
        end(connection)

    return answer


@pytest.mark.parametrize("end", [_reset, lambda connection: None], ids=["reset", "closed"])
def test_a_connection_that_breaks_during_a_direct_download_is_unavailable(
    tmp_path: Path, end: Callable[[socket.socket], None]
) -> None:
    with (
        _fake_endpoint(_half_then(end)) as endpoint,
        (tmp_path / "out.bin").open("wb") as out,
        pytest.raises(UnavailableError, match="the download's connection"),
    ):
        _direct.download(endpoint, out, len(BIG), lambda done: None, _direct.Cut())


def _read_fails(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as error:
        return error.errno == errno.EINVAL
    return False


@pytest.fixture
def uploads_over_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A count of the uploads begun over the byte endpoint, one entry each."""
    begun: list[int] = []
    original = _direct.upload

    def counted(*args: Any) -> Any:
        begun.append(1)
        return original(*args)

    monkeypatch.setattr(_direct, "upload", counted)
    return begun


@pytest.mark.skipif(not _read_fails(UNREADABLE), reason=f"no {UNREADABLE} that fails a read")
@pytest.mark.parametrize("threshold", [None, 0], ids=["streamed", "direct"])
async def test_a_local_file_that_cannot_be_read_fails_a_direct_upload_as_a_streamed_one(
    direct: cairn.ArtifactClient, threshold: int | None, uploads_over_the_endpoint: list[int]
) -> None:
    """Direct, the failed read was taken for a broken connection: the client waited for
    the endpoint's answer while the endpoint waited for the rest of the body, until the
    socket idled out (300 s), and then sent the upload again. Either way the error of the
    read named no file."""
    direct.direct_threshold = threshold
    async with asyncio.timeout(10):  # what a failed read takes, many times over
        with pytest.raises(OSError) as failed:
            await direct.upload("x.bin", UNREADABLE)

    assert type(failed.value) is OSError and failed.value.errno == errno.EINVAL
    assert failed.value.filename == str(UNREADABLE)
    assert len(uploads_over_the_endpoint) == (1 if threshold == 0 else 0)
    with pytest.raises(NotFoundError):
        await direct.stat("x.bin")
    await direct.upload("x.bin", BIG)  # the same client, from a file it can read
    assert await direct.read("x.bin") == BIG


@pytest.mark.skipif(not _read_fails(UNREADABLE), reason=f"no {UNREADABLE} that fails a read")
@pytest.mark.parametrize("threshold", [None, 0], ids=["streamed", "direct"])
async def test_a_trees_file_that_fails_a_read_is_a_local_read_failure(
    direct: cairn.ArtifactClient, tmp_path: Path, threshold: int | None
) -> None:
    """A read that failed partway (a disk's EIO) named no file: the tree's upload raised
    a bare OSError, saying neither which file nor what was stored."""
    direct.direct_threshold = threshold
    (tmp_path / "a.txt").write_bytes(b"readable")
    (tmp_path / "speed").symlink_to(UNREADABLE)  # a link to a file is that file

    with pytest.raises(FailedPreconditionError) as failed:
        await direct.upload_tree("t", tmp_path)

    assert failed.value.reason == "LOCAL_READ_FAILED"
    assert failed.value.metadata == {"path": str(tmp_path / "speed"), "errno": "EINVAL"}


@pytest.mark.skipif(not _read_fails(UNREADABLE), reason=f"no {UNREADABLE} that fails a read")
async def test_a_trees_file_that_fails_a_read_is_a_local_read_failure_on_s3_too(
    s3_store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """Its parts read by position for presigned PUTs, on a thread of their own."""
    s3_store.direct_threshold = 0
    (tmp_path / "speed").symlink_to(UNREADABLE)

    with pytest.raises(FailedPreconditionError) as failed:
        await s3_store.upload_tree("t", tmp_path)

    assert failed.value.reason == "LOCAL_READ_FAILED"
    assert failed.value.metadata == {"path": str(tmp_path / "speed"), "errno": "EINVAL"}


def _refused_midway(connection: socket.socket) -> None:
    """After some of the body, refuses (its store failed) and closes, as the endpoint
    does when a write fails on its side."""
    connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    connection.recv(65536)
    refusal = (
        b'{"code": "UNAVAILABLE", "message": "the store failed", '
        b'"reason": "OBJECT_STORE_UNAVAILABLE"}'
    )
    connection.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s"
        % (len(refusal), refusal)
    )
    _reset(connection)


def test_an_endpoint_that_refuses_midway_is_answered_with_its_reason() -> None:
    """The endpoint's answer, read once the body could not go on, was itself an
    UnavailableError, which the reading swallowed as a broken connection: the caller got
    "the upload's connection broke", without the endpoint's reason."""
    body = io.BytesIO(os.urandom(64 * 1024 * 1024))  # more than the socket's buffers
    with (
        _fake_endpoint(_refused_midway) as endpoint,
        pytest.raises(UnavailableError) as refused,
    ):
        _direct.upload(endpoint, body, lambda done: None, _direct.Cut())
    assert refused.value.reason == "OBJECT_STORE_UNAVAILABLE"
