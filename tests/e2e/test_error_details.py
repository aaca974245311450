"""A client in another language decodes an error's google.rpc.Status and ErrorInfo with
nothing but protos/: buf curl (no reflection) and buf convert, as a Go or Node developer
would with their own protoc."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, run_tool, tool

pytestmark = pytest.mark.e2e

PROTOS = str(Path(__file__).resolve().parents[2] / "protos")
MISSING_RUN = "0" * 32
BINARY_TO_JSON = ["--from", "-#format=binpb", "--to", "-#format=json"]  # stdin to stdout
ERROR_INFO = {"reason": "RUN_NOT_FOUND", "domain": "cairn", "metadata": {"run_id": MISSING_RUN}}


def get_missing_run(served: ServerProcess) -> subprocess.CompletedProcess[str]:
    """GetRun of a run that does not exist, described by protos/ alone (no reflection)."""
    return run_tool(
        tool("buf"),
        "curl",
        "--schema",
        PROTOS,
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--verbose",
        "--data",
        json.dumps({"project": "default", "run_id": MISSING_RUN}),
        f"http://{served.address}/cairn.tracking.v1.TrackingService/GetRun",
    )


def decode(message_type: str, wire: bytes) -> dict:
    """The message in wire as JSON, by buf convert with protos/ as the schema."""
    converted = subprocess.run(
        [tool("buf"), "convert", PROTOS, "--type", message_type, *BINARY_TO_JSON],
        input=wire,
        capture_output=True,
        timeout=30,
    )
    assert converted.returncode == 0, converted.stderr.decode()
    return json.loads(converted.stdout)


def test_buf_curl_error_details_decode_to_error_info(served: ServerProcess) -> None:
    answer = get_missing_run(served)
    assert answer.returncode == 5 << 3, answer.stderr  # buf curl: NOT_FOUND shifted by 3
    error = json.loads(answer.stderr[answer.stderr.index("{") :])
    assert error["code"] == "not_found"
    (detail,) = error["details"]
    assert detail["type"] == "google.rpc.ErrorInfo"
    # buf curl prints a detail's bytes as base64 whatever the schema; protos/ decodes them.
    assert decode("google.rpc.ErrorInfo", base64.b64decode(detail["value"])) == ERROR_INFO


def test_the_status_trailer_decodes_to_status_with_error_info(served: ServerProcess) -> None:
    """grpc-status-details-bin, what gRPC libraries in every language hand over, is a
    google.rpc.Status whose details hold the ErrorInfo."""
    answer = get_missing_run(served)
    prefix = "buf: < (#1) Grpc-Status-Details-Bin: "
    (trailer,) = [
        line[len(prefix) :] for line in answer.stderr.splitlines() if line.startswith(prefix)
    ]
    status = decode("google.rpc.Status", base64.b64decode(trailer + "=" * (-len(trailer) % 4)))
    assert status == {
        "code": 5,
        "message": f"run {MISSING_RUN} not found",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", **ERROR_INFO}],
    }
