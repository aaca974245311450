"""`cairn` with the values JSON has no number for: NaN and infinite metrics come out
as MLflow's strings, which a strict parser reads, and the plot leaves them out while
the table keeps every number."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import cairn
from tests.e2e.cli_helpers import environment, ok, run_cairn
from tests.e2e.conftest import ServerProcess, tool

pytestmark = pytest.mark.e2e

BRAILLE = re.compile("[\u2801-\u28ff]")
VALUES = [1.0, math.nan, 0.5, math.inf, -math.inf, 0.25]


def strict(text: str) -> Any:
    """JSON as JavaScript's and Go's parsers read it: NaN and Infinity are errors."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def env(served: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path, CAIRN_ADDRESS=served.address)


@pytest.fixture
async def run_ids(served: ServerProcess, env: dict[str, str], unique: str) -> tuple[str, str]:
    """An experiment whose run logged `loss` as VALUES at steps 0..5, and the run."""
    experiment_id = ok("experiments", "create", f"values-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for step, value in enumerate(VALUES):
            await client.tracking.log_metric(run_id, "loss", value, step=step)
    return experiment_id, run_id


def test_json_of_non_finite_metrics_is_strict_json(
    run_ids: tuple[str, str], env: dict[str, str]
) -> None:
    experiment_id, run_id = run_ids
    history = strict(ok("metrics", "history", run_id, "loss", "-o", "json", env=env))
    assert [p["value"] for p in history] == [1.0, "NaN", 0.5, "Infinity", "-Infinity", 0.25]
    runs = strict(ok("runs", "list", "-e", experiment_id, "-o", "json", env=env))
    assert [r["metrics"] for r in runs] == [{"loss": 0.25}]
    described = strict(ok("runs", "describe", run_id, "-o", "json", env=env))
    assert described["run_id"] == run_id


async def test_a_last_value_that_is_not_finite_is_a_string(
    served: ServerProcess, run_ids: tuple[str, str], env: dict[str, str]
) -> None:
    experiment_id, run_id = run_ids
    async with cairn.Client(f"http://{served.address}") as client:
        await client.tracking.log_metric(run_id, "loss", math.nan, step=6)
        await client.tracking.log_metric(run_id, "peak", math.inf, step=0)
        await client.tracking.log_metric(run_id, "floor", -math.inf, step=0)
    runs = strict(ok("runs", "list", "-e", experiment_id, "-o", "json", env=env))
    assert runs[0]["metrics"] == {"loss": "NaN", "peak": "Infinity", "floor": "-Infinity"}


def test_the_plot_leaves_out_non_finite_points_and_the_table_keeps_them(
    run_ids: tuple[str, str], env: dict[str, str]
) -> None:
    _, run_id = run_ids
    shown = ok("metrics", "history", run_id, "loss", env=env)
    plot, _, table = shown.partition("┏")  # the table's top border
    assert BRAILLE.search(plot)  # the finite points drawn
    assert "(3 of 6 points not plotted: NaN or infinite)" in plot
    for step, value in ((1, "nan"), (3, "inf"), (4, "-inf"), (5, "0.25")):
        assert re.search(rf"│ {step} +│ {re.escape(value)} +│", table), table


async def test_finite_values_near_the_largest_float_are_plotted_scaled(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """plotext overflows past about 1e306: points at 1e308 and -1e308 drew no plot, and
    stderr said `(no plot: ValueError: cannot convert float NaN to integer)`, though no
    point was NaN. Values near 1e-300 a little apart failed as `OverflowError: int too
    large to convert to float`."""
    experiment_id = ok("experiments", "create", f"huge-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for step, value in enumerate([1e308, -1e308, 1.7976931348623157e308, 0.0]):
            await client.tracking.log_metric(run_id, "m", value, step=step)
        for step, value in enumerate([9.868309263708664e-297, 9.868309263724505e-297]):
            await client.tracking.log_metric(run_id, "tiny", value, step=step)
        for step, value in enumerate([1e99, 1.0000000000001e99]):
            await client.tracking.log_metric(run_id, "mid", value, step=step)

    done = run_cairn("metrics", "history", run_id, "m", env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    plot, _, table = done.stdout.partition("┏")
    assert BRAILLE.search(plot)
    assert "value / 1e308" in plot
    assert re.search(r"│ 1 +│ -1e\+308 +│", table), table
    tiny = run_cairn("metrics", "history", run_id, "tiny", env=env)
    assert tiny.returncode == 0 and tiny.stderr == "", tiny.stderr
    assert BRAILLE.search(tiny.stdout) and "value / 1e-297" in tiny.stdout
    # Drawn unscaled up to 1e100, these made a blank box: plotext writes its ticks out
    # in full (a hundred digits), and drew no point, no title and no note.
    mid = run_cairn("metrics", "history", run_id, "mid", env=env)
    assert mid.returncode == 0 and mid.stderr == "", mid.stderr
    assert BRAILLE.search(mid.stdout) and "value / 1e99" in mid.stdout


def test_max_points_is_0_or_at_least_4_as_the_server_says(
    run_ids: tuple[str, str], env: dict[str, str]
) -> None:
    _, run_id = run_ids
    for refused in ("1", "3", "-1"):
        done = run_cairn("metrics", "history", run_id, "loss", "--max-points", refused, env=env)
        assert done.returncode == 2, done.stderr
        assert "must be 0 (every point) or from 4 to" in done.stderr
    every = strict(
        ok("metrics", "history", run_id, "loss", "--max-points", "0", "-o", "json", env=env)
    )
    assert len(every) == len(VALUES)
    four = strict(
        ok("metrics", "history", run_id, "loss", "--max-points", "4", "-o", "json", env=env)
    )
    assert len(four) <= 4


async def test_times_of_0_and_past_the_calendar_are_shown_as_kept(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """0 came out as null, and a time datetime cannot hold (one logged in nanoseconds,
    which the server keeps) failed the whole listing with an unexpected ValueError."""
    experiment_id = ok("experiments", "create", f"times-{unique}", env=env).strip()
    nanoseconds = 1_764_567_890_123_456_789
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id, start_time=2**63 - 1)).info.run_id
        await client.tracking.log_metric(run_id, "t", 1.0, step=0, timestamp=0)
        await client.tracking.log_metric(run_id, "t", 2.0, step=1, timestamp=nanoseconds)
    history = strict(ok("metrics", "history", run_id, "t", "-o", "json", env=env))
    assert [p["timestamp"] for p in history] == ["1970-01-01T00:00:00.000Z", nanoseconds]
    assert str(nanoseconds) in ok("metrics", "history", run_id, "t", env=env)
    runs = strict(ok("runs", "list", "-e", experiment_id, "-o", "json", env=env))
    assert [r["start_time"] for r in runs] == [2**63 - 1]
    assert strict(ok("runs", "describe", run_id, "-o", "json", env=env))["start_time"] == 2**63 - 1


# What a terminal acts on instead of showing: C0 controls but newline and tab, DEL, C1
# controls, bidi overrides and isolates.
ACTED_ON = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


async def test_values_holding_terminal_controls_are_shown_escaped(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """A tag, param or description holding ESC sequences was printed raw by every table,
    so that whoever listed them had their terminal retitled, cleared, or text hidden."""
    experiment_id = ok("experiments", "create", f"controls-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        await client.tracking.set_tag(run_id, "note", "ok\x1b]0;PWNED\x07\x1b[2Jred")
        await client.tracking.log_param(run_id, "p", "v\x1b[8mhidden\u202e\x9b\r")
        await client.registry.create_registered_model(
            f"controls-{unique}", description="model\x1b[2J\x1b[Hclean"
        )
    described = ok("runs", "describe", run_id, env=env)
    models = ok("models", "list", "--filter", f"name = 'controls-{unique}'", env=env)
    assert not ACTED_ON.search(described + models)
    assert "note=ok\\x1b]0;PWNED\\x07\\x1b[2Jred" in described
    assert "p=v\\x1b[8mhidden\\u202e\\x9b\\x0d" in described
    assert "model\\x1b[2J\\x1b[Hclean" in models


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_stdout_that_is_not_utf8_gets_escapes(
    env: dict[str, str], unique: str, encoding: str
) -> None:
    """JSON and tables failed with "unexpected UnicodeEncodeError" on such a stdout:
    JSON is then ASCII with \\u escapes (the same strict JSON), a table Python's
    escapes for what the encoding lacks."""
    name = f"café-日本-{unique}"
    ok("experiments", "create", name, env=env)
    narrow = {**env, "PYTHONIOENCODING": encoding}
    found = ["experiments", "list", "--filter", f"name LIKE '%{unique}'"]
    as_json = run_cairn(*found, "-o", "json", env=narrow)
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.isascii()
    assert [e["name"] for e in strict(as_json.stdout)] == [name]
    table = subprocess.run(
        [tool("cairn"), *found], env=narrow, capture_output=True, encoding=encoding
    )
    assert table.returncode == 0 and table.stderr == "", table.stderr
    assert "\\u65e5\\u672c" in table.stdout  # 日本
    # Laid out escaped: the escapes, longer than the characters they stand for, ran
    # over their cell's border.
    lines = table.stdout.splitlines()[1:]  # under the title, every line as wide
    assert len({len(line) for line in lines}) == 1, table.stdout


def test_output_that_cannot_be_written_is_one_line_saying_why(
    env: dict[str, str], tmp_path: Path, run_ids: tuple[str, str]
) -> None:
    """A full disk and a closed stdout were "unexpected" errors, a bug's words. A
    history's plot that could not be written was a note, "(no plot: OutputError ...",
    before that line."""
    history = [tool("cairn"), "metrics", "history", run_ids[1], "loss"]
    for command in ([tool("cairn"), "experiments", "list"], history):
        with open("/dev/full", "w") as full:
            done = subprocess.run(command, env=env, stdout=full, stderr=subprocess.PIPE, text=True)
        assert done.returncode == 1
        assert done.stderr == "Error: cannot write output: No space left on device\n"
    listing = [tool("cairn"), "experiments", "list"]
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *listing],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert closed.returncode == 1
    assert closed.stderr == "Error: cannot write output: stdout is closed\n"
