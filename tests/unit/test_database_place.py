"""Where a command that cannot use the database says it looked: asyncpg's reading of the
URL, never its password."""

from __future__ import annotations

import pytest

from cairn_server.cli import _where
from cairn_server.common.config import Config


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://cairn:secret@db.internal:6432/cairn", "db.internal:6432/cairn"),
        # A socket's folder as libpq's parameter: it said localhost:5432.
        ("postgresql://postgres:@/lk9?host=/run/pg", "/run/pg:5432/lk9"),
        ("postgresql:///lk9?host=/run/pg&port=5433", "/run/pg:5433/lk9"),
        ("postgresql://u:pw/with/slash@host/db", "the URL given"),
    ],
)
def test_the_place_of_a_database_url(url: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    assert _where(Config(database_url=url)) == shown


def test_the_place_libpq_variables_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "/var/run/postgresql")
    monkeypatch.setenv("PGPORT", "5434")
    assert _where(Config(database_url="postgresql:///cairn")) == "/var/run/postgresql:5434/cairn"
