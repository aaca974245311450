"""Starting, migrating and stopping the server process."""

import pytest

from tests.e2e.conftest import run_tool, start_server, tool

pytestmark = pytest.mark.e2e


def test_sigterm_ends_the_server_within_the_grace_period(tmp_path) -> None:
    server = start_server(tmp_path, "--shutdown-grace-seconds", "3")
    assert server.terminate(timeout=10) == 0
    lines = server.log_lines()
    assert lines[-1]["event"] == "stopped"
    shutting_down = [line for line in lines if line["event"] == "shutting down"]
    assert [line["signal"] for line in shutting_down] == ["SIGTERM"]


def test_a_single_service_runs_alone(tmp_path) -> None:
    server = start_server(tmp_path, "registry")
    try:
        listed = run_tool(tool("grpcurl"), "-plaintext", server.address, "list")
        assert "cairn.registry.v1.RegistryService" in listed.stdout
        assert "cairn.tracking.v1.TrackingService" not in listed.stdout
    finally:
        assert server.terminate(timeout=10) == 0


def test_migrate_command_applies_and_exits(tmp_path) -> None:
    result = run_tool(tool("cairn"), "migrate", "--data-dir", str(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "migrations up to date" in result.stdout + result.stderr


def test_unknown_service_is_a_usage_error(tmp_path) -> None:
    result = run_tool(tool("cairn"), "serve", "nope", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown service nope" in result.stderr
