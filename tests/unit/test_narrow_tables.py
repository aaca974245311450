"""A table printed to a terminal too narrow for its columns is printed as records."""

from __future__ import annotations

import io

import pytest

from cairn._tables import NARROWEST_COLUMN, print_table

COLUMNS = ["Name", "Version", "Stage", "Created", "Description", "Run"]
ROWS = [
    ["my-model", 3, "Production", "2026-12-01", "a long description", "abc123"],
    ["other", 1, None, "2026-12-02", "", "def456"],
]


def _printed(rows: list[list[object]], capsys: pytest.CaptureFixture[str]) -> list[str]:
    print_table("Models", COLUMNS, rows)
    return [line.rstrip() for line in capsys.readouterr().out.splitlines()]


def test_a_terminal_too_narrow_for_the_table_shows_every_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 20 columns rich gave five of the six columns no width: their values were
    never printed."""
    monkeypatch.setenv("COLUMNS", "20")
    lines = _printed(ROWS, capsys)
    squeezed = "".join("".join(lines).split())  # a value's folded pieces, joined
    for row in ROWS:
        for value in row:
            assert "".join(str(value or "").split()) in squeezed
    assert [line.split(":")[0] for line in lines if line[:1].strip()] == [
        "Models",
        *COLUMNS,
        *COLUMNS,
    ]
    assert max(len(line) for line in lines) <= 20


@pytest.mark.parametrize("width", range(1, len(COLUMNS) * NARROWEST_COLUMN))
def test_records_show_every_value_at_any_narrow_width(
    width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Beside names as long as the terminal is wide, values had no room: at 13 columns a
    model list showed its names alone. They go below their names there."""
    monkeypatch.setenv("COLUMNS", str(width))
    lines = _printed(ROWS, capsys)
    squeezed = "".join("".join(lines).split())
    for row in ROWS:
        for value in [*row, *COLUMNS]:
            assert "".join(str(value or "").split()) in squeezed
    assert max(len(line) for line in lines) <= width


def test_a_value_never_reads_as_a_field_or_record_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Printed "Column: value" a line, a description's own lines began lines as the
    names do, faking a field and a record."""
    monkeypatch.setenv("COLUMNS", "40")
    forged = ["x", 1, None, "d", "nice\nRun: forged\n\nName: evil", "r"]
    lines = _printed([forged], capsys)
    assert [line.split(":")[0] for line in lines if line[:1].strip()] == ["Models", *COLUMNS]


def test_a_terminal_wide_enough_still_shows_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(len(COLUMNS) * NARROWEST_COLUMN))
    lines = _printed(ROWS, capsys)
    assert any("┃" in line for line in lines) and not any("Name:" in line for line in lines)


def test_a_title_wider_than_its_table_is_one_line() -> None:
    """rich folded a table's title to the table's width: a metric history's title
    ("loss of run <id>") over two narrow columns split the run id across lines."""
    title = "loss of run 2403de74b12a4f3e8afe9379e4fb6b65"
    out = io.StringIO()
    print_table(title, ["Step", "Value"], [[1, 0.5]], file=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == title
    assert any("0.5" in line for line in lines[1:])
