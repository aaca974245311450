"""`cairn gc` and `cairn operations`, the real executable against a served instance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import as_json, environment, failed, ok, run_cairn
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(served: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path, CAIRN_ADDRESS=served.address)


def test_gc_waits_and_frees_a_deleted_name(env: dict[str, str], unique: str) -> None:
    name = f"gc-cli-{unique}"
    experiment_id = ok("experiments", "create", name, env=env).strip()
    ok("experiments", "delete", experiment_id, env=env)
    assert "EXPERIMENT_ALREADY_EXISTS" in failed("experiments", "create", name, env=env)

    done = run_cairn("gc", "--older-than", "0", "--wait", "--output", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress bar
    operation = json.loads(done.stdout)
    assert operation["state"] == "SUCCEEDED"
    assert operation["counts"]["experiments"] >= 1
    assert operation["older_than"] == 0
    assert re.fullmatch(r"operations/[0-9a-f-]{36}", operation["name"])
    ok("experiments", "create", name, env=env)  # the name is free again

    listed = as_json("operations", "list", env=env)
    assert operation["name"] in [o["name"] for o in listed]
    newest = as_json("operations", "list", "--max-results", "1", env=env)
    assert [o["name"] for o in newest] == [listed[0]["name"]]
    got = as_json("operations", "get", operation["name"], env=env)
    assert got["state"] == "SUCCEEDED" and got["progress"] == operation["progress"]
    waited = as_json("operations", "wait", operation["name"], "--max-wait", "10s", env=env)
    assert waited["end_time"] == operation["end_time"]
    table = ok("operations", "list", env=env)
    assert re.search(rf"│ {operation['name']} +│ GARBAGE_COLLECTION +│ SUCCEEDED", table)


def test_gc_without_wait_prints_the_started_operation(env: dict[str, str]) -> None:
    started = as_json("gc", "--older-than", "3650d", env=env)
    assert started["state"] in ("PENDING", "RUNNING", "SUCCEEDED")
    assert started["older_than"] == 3650 * 86400


def test_bad_input_is_one_line(env: dict[str, str]) -> None:
    bad = run_cairn("gc", "--older-than", "-1d", env=env)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    too_long = run_cairn("gc", "--older-than", "99999999999d", env=env)
    assert too_long.returncode == 2 and "longer than a duration can be" in too_long.stderr
    assert "Traceback" not in too_long.stderr
    unknown = "operations/00000000-0000-0000-0000-000000000000"
    assert "OPERATION_NOT_FOUND" in failed("operations", "get", unknown, env=env)
