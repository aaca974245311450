"""Migration files: found in version order, well named, and never changed once in the
tree: a database that applied a file as it was keeps its version in the ledger, which
compares names alone, and would serve without what an edit added (a trigger, an index).
A change goes in a new file: tests/unit/migration_checksums.txt pins each file's sha256,
and a new file is added to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cairn_server import catalog
from cairn_server.common import migrations


def test_discover_orders_by_version(tmp_path: Path) -> None:
    (tmp_path / "0002_more.sql").write_text("SELECT 2;")
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    found = migrations.discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "0001_init"), (2, "0002_more")]


def test_discover_rejects_a_gap(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("")
    (tmp_path / "0003_skip.sql").write_text("")
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        migrations.discover(tmp_path)


def test_discover_rejects_an_odd_name(tmp_path: Path) -> None:
    (tmp_path / "1_Init.sql").write_text("")
    with pytest.raises(ValueError, match="NNNN_description"):
        migrations.discover(tmp_path)


@pytest.mark.parametrize("spec", catalog.select([]), ids=lambda s: s.name)
def test_every_service_ships_well_formed_migrations(spec: catalog.ServiceSpec) -> None:
    migrations.discover(spec.migrations_dir)


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
