"""The README's bootstrap, end to end: a key from `cairn keys create`, then a served
process that requires keys, driven by grpcurl as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, run_tool, start_server, tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data_dir: Path = tmp_path_factory.mktemp("keys")
    created = subprocess.run(
        [tool("cairn"), "keys", "create", "--admin", "--user", "ops", "--expires", "never"],
        env={**os.environ, "CAIRN_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    server = start_server(data_dir, "--auth", "api_key")
    yield server, created.stdout.strip()
    server.terminate(timeout=30)


def grpcurl(server: ServerProcess, method: str, body: dict, *headers: str):
    flags = [arg for header in headers for arg in ("-H", header)]
    return run_tool(
        tool("grpcurl"), "-plaintext", *flags, "-d", json.dumps(body), server.address, method
    )


def test_health_and_reflection_need_no_key(bootstrapped) -> None:
    server, _ = bootstrapped
    assert (
        "cairn.auth.v1.AuthService"
        in run_tool(tool("grpcurl"), "-plaintext", server.address, "list").stdout
    )
    health = grpcurl(server, "grpc.health.v1.Health/Check", {})
    assert '"status": "SERVING"' in health.stdout, health.stderr


def test_the_bootstrap_key_administers_and_both_headers_carry_it(bootstrapped) -> None:
    server, key = bootstrapped
    created = grpcurl(
        server,
        "cairn.auth.v1.AuthService/CreateProject",
        {"name": "team"},
        f"authorization: Bearer {key}",
    )
    assert created.returncode == 0, created.stderr
    search = "cairn.tracking.v1.TrackingService/SearchExperiments"
    refused = grpcurl(server, search, {"project": "team"})
    assert "Code: Unauthenticated" in refused.stderr
    allowed = grpcurl(server, search, {"project": "team"}, f"x-api-key: {key}")
    assert allowed.returncode == 0, allowed.stderr


def test_the_log_names_the_key_by_prefix_only(bootstrapped) -> None:
    server, key = bootstrapped
    grpcurl(server, "cairn.auth.v1.AuthService/GetProjects", {}, f"x-api-key: {key}x")
    log = server.log_path.read_text()
    assert key not in log
    assert key.split("_")[1] in log
