"""The `cairn` user command, the real executable against a served instance: JSON output
parsed and checked, tables checked for their rows, errors as one line and status 1."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from tests.e2e.cli_helpers import as_json, environment, failed, ok, on_a_terminal, run_cairn
from tests.e2e.conftest import ServerProcess, tool

pytestmark = pytest.mark.e2e

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BRAILLE = re.compile("[\u2801-\u28ff]")


# Rows enough that printing them as a table takes several seconds.
LONG_HISTORY = 100_000


@pytest.fixture
def env(served: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path, CAIRN_ADDRESS=served.address)


def test_version(env: dict[str, str]) -> None:
    assert re.fullmatch(r"cairn \d+\.\d+\.\d+\S*\n", ok("--version", env=env))


def test_experiments_create_list_rename_delete_restore(env: dict[str, str], unique: str) -> None:
    first = ok("experiments", "create", f"cli-{unique}", "--tag", "team=ml", env=env).strip()
    second = ok("experiments", "create", f"cli-{unique}-2", env=env).strip()
    name_filter = f"name LIKE 'cli-{unique}%'"
    listed = as_json("experiments", "list", "--filter", name_filter, "--order-by", "name", env=env)
    assert [(e["experiment_id"], e["name"]) for e in listed] == [
        (first, f"cli-{unique}"),
        (second, f"cli-{unique}-2"),
    ]
    assert listed[0]["tags"] == {"team": "ml"}
    assert listed[0]["lifecycle_stage"] == "active"
    assert ISO.match(listed[0]["creation_time"])

    ok("experiments", "rename", first, f"cli-{unique}-renamed", env=env)
    ok("experiments", "delete", second, env=env)
    active = as_json("experiments", "list", "--filter", name_filter, env=env)
    assert [e["name"] for e in active] == [f"cli-{unique}-renamed"]
    deleted = as_json("experiments", "list", "--filter", name_filter, "--view", "deleted", env=env)
    assert [e["experiment_id"] for e in deleted] == [second]
    ok("experiments", "restore", second, env=env)

    table = ok("experiments", "list", "--filter", name_filter, env=env)
    assert re.search(rf"│ {first} +│ cli-{unique}-renamed +│ active", table)
    assert re.search(rf"│ {second} +│ cli-{unique}-2 +│ active", table)


def test_max_results_stops_early(env: dict[str, str], unique: str) -> None:
    for n in range(3):
        ok("experiments", "create", f"few-{unique}-{n}", env=env)
    name_filter = f"name LIKE 'few-{unique}-%'"
    listed = as_json(
        "experiments", "list", "--filter", name_filter, "--order-by", "name DESC",
        "--max-results", "2", env=env,
    )  # fmt: skip
    assert [e["name"] for e in listed] == [f"few-{unique}-2", f"few-{unique}-1"]


def test_an_unknown_experiment_is_one_line_and_status_1(env: dict[str, str]) -> None:
    line = failed("experiments", "delete", "987654321", env=env)
    assert "NOT_FOUND [EXPERIMENT_NOT_FOUND]" in line


def test_a_bad_filter_names_the_reason(env: dict[str, str]) -> None:
    line = failed("experiments", "list", "--filter", "name ==", env=env)
    assert "INVALID_ARGUMENT" in line


def test_an_argument_that_is_not_utf8_is_a_usage_error_naming_it(env: dict[str, str]) -> None:
    """Python reads such bytes as lone surrogates (PEP 383), which no request can carry:
    the call failed as `Error: 'utf-8' codec can't encode character '\\udce9'`, status 1,
    naming no argument."""
    done = run_cairn("experiments", "create", "caf\udce9", env=env)  # the bytes caf\xe9
    assert done.returncode == 2, done.stderr
    assert done.stderr == "Error: argument 3 ('caf\\xe9') is not UTF-8 text\n"
    variable = run_cairn("experiments", "list", env={**env, "CAIRN_PROJECT": "\udcff"})
    assert variable.returncode == 2 and "CAIRN_PROJECT is not UTF-8 text" in variable.stderr


def test_a_client_variable_that_is_not_utf8_leaves_the_server_commands_be(
    env: dict[str, str],
) -> None:
    """The server's commands read no client setting (docs/cli.md): `cairn config` with
    such a CAIRN_PROJECT or CAIRN_API_KEY ended with status 2, "... is not UTF-8 text"."""
    for name in ("CAIRN_PROJECT", "CAIRN_API_KEY"):
        done = run_cairn("config", env={**env, name: "caf\udce9"})
        assert done.returncode == 0, done.stderr
        assert "CAIRN_DATABASE_URL" in done.stdout


def test_no_server_is_one_line(tmp_path: Path) -> None:
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1", CAIRN_TIMEOUT="5")
    assert "UNAVAILABLE" in failed("experiments", "list", env=env)


def test_a_failed_sync_is_one_line_saying_what_was_sent_and_kept(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The library's two warnings (the file not stored, then the count) came before the
    error line, which said the first again: three lines where one is promised."""
    journals = tmp_path / "journals"
    journals.mkdir()
    bad = journals / "bad.jsonl"
    bad.write_text("garbage\n")
    line = failed("sync", str(journals), env=env)  # asserts the one line
    assert line.startswith("Error: INVALID_ARGUMENT [INVALID_JOURNAL]: ")
    assert line.endswith(f"; sent 0 points; not stored, kept to sync again: {bad}")
    assert bad.exists()


def test_server_commands_are_handed_to_the_server(env: dict[str, str]) -> None:
    table = ok("config", env=env)
    assert "| `CAIRN_LISTEN_ADDRESS` | `--listen-address` |" in table
    helped = run_cairn("serve", "--help", env=env)
    assert helped.returncode == 0 and "--listen-address" in helped.stdout


def test_the_user_commands_need_no_server_package(tmp_path: Path) -> None:
    # `pip install cairn` without extras: the server's dependencies are absent.
    absent = ["asyncpg", "uvloop", "structlog", "minio", "numpy", "prometheus_client"]
    script = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({absent!r}))\n"  # None: `import` raises
        "from cairn.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True
        )

    helped = run("runs", "list", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--filter" in helped.stdout
    serve = run("serve")
    assert serve.returncode == 1
    assert "pip install 'cairn[server]'" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_a_broken_server_module_is_not_taken_for_a_missing_install(tmp_path: Path) -> None:
    # The server is installed, but one of its own modules fails to import: a bug to show.
    script = (
        "import sys\n"
        "sys.modules['cairn_server.cli'] = None\n"  # None: `import` raises
        "from cairn.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "serve"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "cairn_server.cli" in done.stderr
    assert "pip install" not in done.stderr
    assert "Traceback" not in done.stderr


async def _logged_runs(address: str, experiment_id: str) -> list[str]:
    """Three runs with acc 0.2, 0.9, 0.6, a param and a tag each; their ids."""
    async with cairn.Client(f"http://{address}") as client:
        ids = []
        for n, acc in enumerate((0.2, 0.9, 0.6)):
            run = await client.tracking.create_run(experiment_id, run_name=f"run-{n}")
            run_id = run.info.run_id
            await client.tracking.log_metric(run_id, "acc", acc, step=0)
            await client.tracking.log_param(run_id, "n", str(n))
            await client.tracking.set_tag(run_id, "team", "ml")
            ids.append(run_id)
        return ids


async def test_runs_list_filter_order_describe_delete_restore(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    name = f"runs-{unique}"
    experiment_id = ok("experiments", "create", name, env=env).strip()
    low, high, middle = await _logged_runs(served.address, experiment_id)

    listed = as_json(
        "runs", "list", "--experiment", name, "--filter", "metrics.acc > 0.5",
        "--order-by", "metrics.acc DESC", env=env,
    )  # fmt: skip
    assert [r["run_id"] for r in listed] == [high, middle]
    assert listed[0]["metrics"] == {"acc": 0.9}
    assert listed[0]["params"] == {"n": "1"}
    assert listed[0]["tags"]["team"] == "ml"
    assert listed[0]["status"] == "RUNNING"
    assert listed[0]["experiment_id"] == experiment_id
    assert ISO.match(listed[0]["start_time"])

    by_id = as_json("runs", "list", "-e", experiment_id, "--max-results", "2", env=env)
    assert [r["run_id"] for r in by_id] == [middle, high]  # newest first, two of three

    table = ok("runs", "list", "-e", name, env=env)
    for run_id, run_name in ((low, "run-0"), (high, "run-1"), (middle, "run-2")):
        assert re.search(rf"│ {run_id} │ {run_name} +│ RUNNING", table), table

    described = as_json("runs", "describe", high, env=env)
    assert (described["run_id"], described["run_name"]) == (high, "run-1")
    assert described["params"] == {"n": "1"}
    assert high in ok("runs", "describe", high, env=env)

    ok("runs", "delete", low, env=env)
    assert low not in {r["run_id"] for r in as_json("runs", "list", "-e", name, env=env)}
    deleted = as_json("runs", "list", "-e", name, "--view", "deleted", env=env)
    assert [r["run_id"] for r in deleted] == [low]
    assert deleted[0]["lifecycle_stage"] == "deleted"
    ok("runs", "restore", low, env=env)
    assert len(as_json("runs", "list", "-e", name, env=env)) == 3


def test_an_unknown_run_is_run_not_found(env: dict[str, str]) -> None:
    line = failed("runs", "describe", "0" * 32, env=env)
    assert line.startswith("Error: NOT_FOUND [RUN_NOT_FOUND]")


def test_experiment_0_says_cairn_has_no_default_experiment(env: dict[str, str]) -> None:
    """MLflow's Default experiment: it was looked up as a name, "no experiment named '0'"."""
    line = failed("runs", "list", "-e", "0", env=env)
    assert line == (
        "Error: NOT_FOUND [EXPERIMENT_NOT_FOUND]: no experiment named '0'; Cairn has no "
        "Default experiment 0, as MLflow has"
    )


def test_an_unknown_experiment_name_is_experiment_not_found(env: dict[str, str]) -> None:
    line = failed("runs", "list", "--experiment", "no-such-experiment", env=env)
    assert (
        line == "Error: NOT_FOUND [EXPERIMENT_NOT_FOUND]: no experiment named 'no-such-experiment'"
    )


def test_a_typo_of_an_id_or_name_is_not_found_not_an_empty_list(env: dict[str, str]) -> None:
    """Both listed nothing, as an experiment without runs or a model without versions
    does, and exited 0."""
    for typo in ("999999", "0", "007", "9" * 30):  # the last three were INVALID_ARGUMENT
        assert "[EXPERIMENT_NOT_FOUND]" in failed("runs", "list", "-e", typo, env=env)
    assert "[REGISTERED_MODEL_NOT_FOUND]" in failed("models", "versions", "no-such", env=env)


def test_a_bad_order_is_invalid_order_by(env: dict[str, str], unique: str) -> None:
    experiment_id = ok("experiments", "create", f"order-{unique}", env=env).strip()
    line = failed("runs", "list", "-e", experiment_id, "--order-by", "nonsense DESC", env=env)
    assert "[INVALID_ORDER_BY]" in line


def test_a_listing_prints_each_page_before_it_asks_for_the_next(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """A model listing pages by 100. The first page, 100 models of 2,000-character
    descriptions, is more than a pipe holds, so the command cannot have asked for the
    second page before the test read the first: a model made once the first line is
    out is listed in the second page. A listing held whole until its end lacks it."""
    prefix = f"paged-{unique}"
    asyncio.run(_create_models(served, [f"{prefix}-{n:03}" for n in range(101)], "d" * 2000))
    listing = subprocess.Popen(
        [tool("cairn"), "models", "list", "--filter", f"name LIKE '{prefix}-%'", "-o", "json"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listing.stdout is not None
    first_line = listing.stdout.readline()
    asyncio.run(_create_models(served, [f"{prefix}-999"], None))
    rest = listing.stdout.read()
    assert listing.wait(timeout=60) == 0
    assert first_line == "[\n"
    names = [model["name"] for model in json.loads(first_line + rest)]
    assert names == [f"{prefix}-{n:03}" for n in [*range(101), 999]]

    table = ok("models", "list", "--filter", f"name LIKE '{prefix}-%'", env=env)
    assert table.count("Registered models") == 1  # the title above the first part only
    assert all(f"{prefix}-{n:03}" in table for n in [*range(101), 999])


async def _create_models(served: ServerProcess, names: list[str], description: str | None) -> None:
    async with cairn.Client(f"http://{served.address}") as client:
        for name in names:
            await client.registry.create_registered_model(name, description=description)


async def test_metrics_history_numbers_and_plot(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    experiment_id = ok("experiments", "create", f"history-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for step in range(20):
            await client.tracking.log_metric(run_id, "loss", 1 / (step + 1), step=step)

    points = as_json("metrics", "history", run_id, "loss", env=env)
    assert [(p["step"], p["value"]) for p in points] == [(s, 1 / (s + 1)) for s in range(20)]
    assert all(p["key"] == "loss" and ISO.match(p["timestamp"]) for p in points)

    shown = ok("metrics", "history", run_id, "loss", env=env)
    plot, _, table = shown.partition("┏")  # the table's top border
    assert f"loss of run {run_id}" in plot.splitlines()[0]  # the plot's title
    assert BRAILLE.search(plot)  # the line drawn
    assert "\x1b[" not in shown  # no colour codes into a pipe
    assert re.search(r"│ 19 +│ 0\.05 +│", table)
    unplotted = ok("metrics", "history", run_id, "loss", "--no-plot", env=env)
    assert not BRAILLE.search(unplotted)
    assert re.search(r"│ 0 +│ 1\.0 +│", unplotted)

    line = failed("metrics", "history", "0" * 32, "loss", env=env)
    assert "[RUN_NOT_FOUND]" in line


# A colour of SGR's: 30-49 (8 or 256 colours, foreground and background), 90-107 (bright).
COLOUR = re.compile(r"\x1b\[(?:[\d;]*;)?(?:3\d|4\d|9[0-7]|10[0-7])(?:;[\d;]*)?m")


async def test_the_plot_on_a_terminal_has_colours_unless_no_color_is_set(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """The plot on a terminal kept plotext's colours whatever NO_COLOR said, though
    the tables and progress bars (rich's) leave them out when it is set (no-color.org)."""
    experiment_id = ok("experiments", "create", f"colours-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for step in range(5):
            await client.tracking.log_metric(run_id, "loss", 1 / (step + 1), step=step)
    argv = ("metrics", "history", run_id, "loss")

    coloured = on_a_terminal(*argv, env={k: v for k, v in env.items() if k != "NO_COLOR"})
    plain = on_a_terminal(*argv, env={**env, "NO_COLOR": "1"})
    assert COLOUR.search(coloured.partition("┏")[0])  # the plot's
    assert BRAILLE.search(plain) and "│ 4 " in plain  # the plot and the table shown
    assert not COLOUR.search(plain), plain


async def test_a_history_printed_for_longer_than_the_timeout_has_every_point(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """The history's stream ran under the call's deadline, so a table that took longer
    to print than `--timeout` (30 s by default: 300,000 rows, or a slow `| less`)
    ended DEADLINE_EXCEEDED partway, the read ahead of it held back as it printed."""
    experiment_id = ok("experiments", "create", f"long-{unique}", env=env).strip()
    points = [cairn.types.Metric("loss", float(n), 1, n) for n in range(LONG_HISTORY)]
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for start in range(0, LONG_HISTORY, 10_000):
            await client.tracking.log_batch(run_id, points[start : start + 10_000])

    shown = ok("metrics", "history", run_id, "loss", "--no-plot", "--timeout", "1", env=env)
    assert re.search(rf"│ {LONG_HISTORY - 1} +│", shown)
    assert len(re.findall(r"^│ \d+ +│", shown, re.MULTILINE)) == LONG_HISTORY


async def test_projects_create_list_describe_update_members(
    env: dict[str, str], unique: str
) -> None:
    name = f"team-{unique}"
    assert ok("projects", "create", name, "--description", "first", env=env).strip() == name
    listed = {p["name"]: p for p in as_json("projects", "list", env=env)}
    assert listed[name]["description"] == "first"
    assert name in ok("projects", "list", env=env)
    ok("projects", "update", name, "--description", "second", env=env)
    assert as_json("projects", "describe", name, env=env)["description"] == "second"

    ok("projects", "add-member", name, f"alice-{unique}", "editor", env=env)
    members = as_json("projects", "members", name, env=env)
    assert {(m["user_id"], m["role"]) for m in members} >= {(f"alice-{unique}", "EDITOR")}
    ok("projects", "remove-member", name, f"alice-{unique}", env=env)
    assert f"alice-{unique}" not in {
        m["user_id"] for m in as_json("projects", "members", name, env=env)
    }

    # The project of a command: experiments made there are not in "default".
    ok("experiments", "create", f"in-{unique}", "--project", name, env=env)
    inside = as_json("experiments", "list", "--project", name, env=env)
    assert [e["project"] for e in inside] == [name]
    assert f"in-{unique}" not in {e["name"] for e in as_json("experiments", "list", env=env)}


def test_an_empty_project_description_is_a_usage_error(env: dict[str, str], unique: str) -> None:
    """The client reads an empty description as "leave it as it is": the command exited
    0 and the old description stayed, so the user believed it cleared."""
    name = f"blank-{unique}"
    ok("projects", "create", name, "--description", "old text", env=env)
    done = run_cairn("projects", "update", name, "--description", "", env=env)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "--description" in done.stderr and "cannot be cleared" in done.stderr
    assert as_json("projects", "describe", name, env=env)["description"] == "old text"
