"""The README's bootstrap, end to end: a key from `cairn keys create`, then a served
process that requires keys, driven by grpcurl as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ServerProcess, run_tool, served_with_keys, tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    with served_with_keys(tmp_path_factory.mktemp("keys")) as keyed:
        yield keyed


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


def test_a_key_made_with_a_key_neither_outlives_nor_survives_it(bootstrapped) -> None:
    server, root = bootstrapped
    create = "cairn.auth.v1.AuthService/CreateApiKey"

    def made_with(key: str, expiration: str) -> str:
        made = grpcurl(
            server, create, {"name": expiration, "expiration": expiration}, f"x-api-key: {key}"
        )
        assert made.returncode == 0, made.stderr
        return str(json.loads(made.stdout)["api_key"])

    quarter = made_with(root, "API_KEY_EXPIRATION_90_DAYS")
    refused = grpcurl(
        server,
        create,
        {"name": "forever", "expiration": "API_KEY_EXPIRATION_NEVER"},
        f"x-api-key: {quarter}",
    )
    assert "Code: InvalidArgument" in refused.stderr
    assert "API_KEY_OUTLIVES_PARENT" in refused.stderr
    child = made_with(quarter, "API_KEY_EXPIRATION_30_DAYS")
    revoked = grpcurl(
        server, "cairn.auth.v1.AuthService/DeleteApiKey", {"apiKey": quarter}, f"x-api-key: {root}"
    )
    assert revoked.returncode == 0, revoked.stderr
    after = grpcurl(server, "cairn.auth.v1.AuthService/GetProjects", {}, f"x-api-key: {child}")
    assert "Code: Unauthenticated" in after.stderr
    assert "API_KEY_REVOKED" in after.stderr
