"""Writes that meet a full disk: the writer still closes its file, which a file removed
after the failure would otherwise keep, blocks and all, until the process ends; the
artifact store answers STORAGE_FULL, not INTERNAL; and the client names the file it
was writing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cairn._clients._local_files import local_writes
from cairn._direct_io import BUFFER, DirectWriter
from cairn.exceptions import FailedPreconditionError
from cairn_server.artifacts import filesystem
from cairn_server.common.errors import ResourceExhausted
from tests.conftest import disk_full_after

FULL = Path("/dev/full")  # answers every write ENOSPC, as a full file system does


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_writer_whose_write_failed_still_closes_its_file(tmp_path: Path) -> None:
    before = _open_descriptors()
    with (
        pytest.raises(OSError) as raised,
        disk_full_after(BUFFER // 2),
        DirectWriter.create(tmp_path / "big") as out,
    ):
        out.write(b"x" * (2 * BUFFER))  # through the writer's buffer: whole blocks
    assert raised.value.errno == errno.EFBIG  # the failure itself, not one of closing
    assert _open_descriptors() == before


@pytest.mark.skipif(not FULL.exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_is_storage_full() -> None:
    with (
        pytest.raises(ResourceExhausted) as raised,
        filesystem._store_failures(),
        DirectWriter.create(FULL, exclusive=False) as out,
    ):
        out.write(b"x" * (2 * BUFFER))
    assert raised.value.reason == "STORAGE_FULL"


def test_a_copy_onto_a_full_disk_names_the_file_written(tmp_path: Path) -> None:
    """A copy's error as Linux's sendfile raises it names the file read first (the
    model cache's, on another file system) and the one written second: the cache's was
    reported, and an operator freed space on the wrong disk."""
    read, written = tmp_path / "cache" / "a.bin", tmp_path / "dst" / "a.bin"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(read), None, str(written))

    with pytest.raises(FailedPreconditionError) as refused, local_writes(tmp_path / "dst", "kept"):
        raise full

    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata == {"path": str(written), "errno": "ENOSPC"}
    assert str(written) in str(refused.value) and str(read) not in str(refused.value)
