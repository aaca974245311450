"""The `cairn` user command, the real executable against a served instance: JSON output
parsed and checked, tables checked for their rows, errors as one line and status 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import as_json, cairn, environment, failed, ok
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


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


def test_no_server_is_one_line(tmp_path: Path) -> None:
    env = environment(tmp_path, CAIRN_ADDRESS="127.0.0.1:1", CAIRN_TIMEOUT="5")
    assert "UNAVAILABLE" in failed("experiments", "list", env=env)


def test_server_commands_are_handed_to_the_server(env: dict[str, str]) -> None:
    table = ok("config", env=env)
    assert "| `CAIRN_LISTEN_ADDRESS` | `--listen-address` |" in table
    helped = cairn("serve", "--help", env=env)
    assert helped.returncode == 0 and "--listen-address" in helped.stdout
