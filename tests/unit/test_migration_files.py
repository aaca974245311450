"""A migration file is never changed once it is in the tree: a database that applied the
file as it was keeps its version in the ledger, which compares names alone, and would
serve without what an edit added (a trigger, an index). A change goes in a new file.

tests/unit/migration_checksums.txt pins each file's sha256; a new file is added to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).with_name("migration_checksums.txt")


def _pinned() -> dict[str, str]:
    lines = PINNED.read_text().splitlines()
    return {path: digest for digest, path in (line.split("  ", 1) for line in lines if line)}


def _files() -> dict[str, str]:
    return {
        str(file.relative_to(ROOT)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(ROOT.glob("services/*/migrations/*.sql"))
    }


def test_no_migration_file_was_changed_or_removed() -> None:
    files = _files()
    changed = [path for path, digest in _pinned().items() if files.get(path) != digest]
    assert not changed, (
        f"{changed} changed or went: a database that applied them keeps them as they were; "
        "write a new migration instead"
    )


def test_every_migration_file_is_pinned() -> None:
    unpinned = sorted(set(_files()) - set(_pinned()))
    assert not unpinned, (
        f"{unpinned} not pinned: add '<sha256>  <path>' lines for them to {PINNED.name}"
    )
