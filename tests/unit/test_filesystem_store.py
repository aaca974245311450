"""The filesystem store with files a restore or a hand left as no upload makes them: a
key whose file is a folder or a link to itself has no bytes (DATA_LOSS, not INTERNAL),
and such an entry stops neither the janitor's scan nor what it finds after it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cairn_server.artifacts.blobs import MissingBytes
from cairn_server.artifacts.filesystem import FilesystemBackend


def _unreadable(root: Path, key: str, kind: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(path)  # a link to itself


@pytest.mark.parametrize("kind", ["folder", "link to itself"])
def test_a_key_whose_file_is_no_file_has_no_bytes(tmp_path: Path, kind: str) -> None:
    store = FilesystemBackend(tmp_path)
    _unreadable(tmp_path, "_objects/p/00/broken", kind)
    with pytest.raises(MissingBytes):
        store.open("_objects/p/00/broken", 0, 0)


def test_the_scan_passes_over_an_entry_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    """It ended at the first (ELOOP), so orphans past it were never removed."""
    store = FilesystemBackend(tmp_path)
    _unreadable(tmp_path, "_objects/a/00/loop", "link to itself")
    for key in ("_objects/b/00/orphan", "_objects/c/00/orphan"):
        (tmp_path / key).parent.mkdir(parents=True)
        (tmp_path / key).write_bytes(b"x")
    assert sorted(key for key, _ in store.scan()) == [
        "_objects/b/00/orphan",
        "_objects/c/00/orphan",
    ]


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A folder on tmpfs (Linux's /dev/shm), which keeps times past the year 9999 (ext4
    stops at 2446)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        yield Path(folder)


def _changed_at(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds))
    assert path.stat().st_mtime == seconds  # kept as given


def test_an_entry_changed_past_the_year_9999_stops_neither_scan_nor_prune(tmpfs: Path) -> None:
    """Its time raised ValueError (year 10000 is out of range): every pass of the
    janitor ended there, leaving the orphans after it and every empty folder."""
    store, far = FilesystemBackend(tmpfs), 253_402_300_800  # 10000-01-01
    for key in ("_objects/a/00/orphan", "_objects/b/00/far", "_objects/c/00/orphan"):
        (tmpfs / key).parent.mkdir(parents=True)
        (tmpfs / key).write_bytes(b"x")
        _changed_at(tmpfs / key, 1)
    _changed_at(tmpfs / "_objects/b/00/far", far)
    (tmpfs / "empty").mkdir()
    _changed_at(tmpfs / "empty", 1)
    assert sorted(store.scan()) == [
        ("_objects/a/00/orphan", datetime.fromtimestamp(1, UTC)),
        ("_objects/b/00/far", datetime.max.replace(tzinfo=UTC)),
        ("_objects/c/00/orphan", datetime.fromtimestamp(1, UTC)),
    ]
    _changed_at(tmpfs / "_objects/b", far)  # a folder so changed too
    assert store.prune(datetime.now(UTC)) == 1
    assert not (tmpfs / "empty").exists()
