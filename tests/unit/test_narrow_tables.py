"""A table printed to a terminal too narrow for its columns is printed as records."""

from __future__ import annotations

import pytest

from cairn._tables import NARROWEST_COLUMN, print_table

COLUMNS = ["Name", "Version", "Stage", "Created", "Description", "Run"]
ROWS = [
    ["my-model", 3, "Production", "2026-12-01", "a long description", "abc123"],
    ["other", 1, None, "2026-12-02", "", "def456"],
]


def test_a_terminal_too_narrow_for_the_table_shows_every_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 20 columns rich gave five of the six columns no width: their values were
    never printed."""
    monkeypatch.setenv("COLUMNS", "20")
    print_table("Models", COLUMNS, ROWS)
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[:7] == [
        "Models",
        "Name: my-model",
        "Version: 3",
        "Stage: Production",
        "Created: 2026-12-01",
        "Description: a long",
        "description",
    ]
    assert "Run: def456" in lines
    assert max(len(line) for line in lines) <= 20


def test_a_terminal_wide_enough_still_shows_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(len(COLUMNS) * NARROWEST_COLUMN))
    print_table("Models", COLUMNS, ROWS)
    printed = capsys.readouterr().out
    assert "┃" in printed and "Name:" not in printed
