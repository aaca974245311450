"""Writes that meet a full disk: the writer still closes its file, which a file removed
after the failure would otherwise keep, blocks and all, until the process ends; and the
artifact store answers STORAGE_FULL, not INTERNAL."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cairn._direct_io import BUFFER, DirectWriter
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
