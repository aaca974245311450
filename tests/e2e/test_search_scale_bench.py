"""`make bench-search-scale` still runs, at a size of a few seconds: its baseline is the
search SQL of an earlier release, written against the tables as they are, which neither
mypy nor any other test reads. Its numbers are not checked (benchmarks report, never
assert a time)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import repo_root

pytestmark = pytest.mark.e2e

RUNS = 300
# A row of the table: runs, statistics, the search, then the baseline's cell (a time,
# a rate, "> 15s", or empty for a line without one) and the current one.
ROW = re.compile(
    rf"^\| {RUNS} \| (none \(bulk load\)|analyzed) \| [^|]+ \| "
    r"([\d,.]+ (ms|runs/s)|> \d+s|) \| [\d,.]+ (ms|runs/s) \|$"
)


def test_the_search_scale_benchmark_runs_its_table() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "bench.search_scale", str(RUNS)],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    rows = [line for line in ran.stdout.splitlines() if line.startswith(f"| {RUNS} |")]
    assert len(rows) == 24, ran.stdout
    for row in rows:
        assert ROW.match(row), row
    assert "migration applied" not in ran.stdout
