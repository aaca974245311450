"""The served process driven by real grpcurl and buf curl, as a person debugging would."""

import json
import sys

import pytest

from tests.e2e.conftest import ServerProcess, run_tool, tool

pytestmark = pytest.mark.e2e

SERVICES = [
    "cairn.tracking.v1.TrackingService",
    "cairn.registry.v1.RegistryService",
    "cairn.artifacts.v1.ArtifactService",
    "cairn.auth.v1.AuthService",
    "cairn.operations.v1.OperationService",
]


def test_grpcurl_lists_every_service(served: ServerProcess) -> None:
    result = run_tool(tool("grpcurl"), "-plaintext", served.address, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(
        [
            *SERVICES,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    )


def test_grpcurl_describes_a_service_from_reflection(served: ServerProcess) -> None:
    result = run_tool(tool("grpcurl"), "-plaintext", served.address, "describe", SERVICES[0])
    assert result.returncode == 0, result.stderr
    assert "rpc LogBatch ( .cairn.tracking.v1.LogBatchRequest )" in result.stdout
    assert "returns ( stream .cairn.tracking.v1.GetMetricHistoryResponse )" in result.stdout


@pytest.mark.parametrize("service", ["", *SERVICES])
def test_grpcurl_health_check_is_serving(served: ServerProcess, service: str) -> None:
    result = run_tool(
        tool("grpcurl"),
        "-plaintext",
        "-d",
        json.dumps({"service": service}),
        served.address,
        "grpc.health.v1.Health/Check",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_buf_curl_reaches_the_server_through_reflection(served: ServerProcess) -> None:
    result = run_tool(
        tool("buf"),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--data",
        json.dumps({"service": SERVICES[1]}),
        f"http://{served.address}/grpc.health.v1.Health/Check",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_an_error_reaches_grpcurl_with_its_status_and_reason(served: ServerProcess) -> None:
    result = run_tool(
        tool("grpcurl"),
        "-plaintext",
        "-d",
        json.dumps({"project": "default", "run_id": "0" * 32}),
        served.address,
        "cairn.tracking.v1.TrackingService/GetRun",
    )
    assert result.returncode == 64 + 5, result.stderr  # grpcurl: 64 + NOT_FOUND
    assert '"reason":"RUN_NOT_FOUND"' in result.stderr.replace(" ", "")


def test_every_call_is_logged_with_request_id(served: ServerProcess) -> None:
    run_tool(
        tool("grpcurl"),
        "-plaintext",
        "-H",
        "x-request-id: e2e-trace-1",
        "-d",
        "{}",
        served.address,
        "grpc.health.v1.Health/Check",
    )
    # grpcurl sends the header on its reflection calls too; one line per call each.
    lines = [
        line
        for line in served.log_lines()
        if line.get("request_id") == "e2e-trace-1"
        and line["method"] == "/grpc.health.v1.Health/Check"
    ]
    assert len(lines) == 1
    assert lines[0]["code"] == "OK"
    assert lines[0]["level"] == "info"


def test_cairn_says_its_version() -> None:
    answer = run_tool(tool("cairn"), "--version")
    assert answer.returncode == 0, answer.stderr
    version = answer.stdout.split()
    assert version[0] == "cairn" and version[1][0].isdigit(), answer.stdout


def test_the_module_form_says_its_version_too() -> None:
    """`python -m cairn_server.cli` runs the module as __main__: what main() uses must be
    defined before the module calls it."""
    answer = run_tool(sys.executable, "-m", "cairn_server.cli", "--version")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("cairn "), answer.stdout
