"""Server reflection under its stable name, grpc.reflection.v1, which newer grpcurl and
buf curl ask for first, as well as under v1alpha: raw calls, grpcurl and buf curl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

# v1 and v1alpha are the same messages in two packages: on the wire they are one protocol.
from grpc_reflection.v1alpha.reflection_pb2 import (
    ServerReflectionRequest,
    ServerReflectionResponse,
)

from tests.e2e.conftest import ServerProcess, run_tool, start_server, tool

pytestmark = pytest.mark.e2e

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


def ask(address: str, service: str, *requests: ServerReflectionRequest) -> list:
    """Sends requests on one ServerReflectionInfo stream of service; returns the answers."""
    with grpc.insecure_channel(address) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=ServerReflectionRequest.SerializeToString,
            response_deserializer=ServerReflectionResponse.FromString,
        )
        return list(info(iter(requests), timeout=30))


def files(answer: ServerReflectionResponse) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    return {proto.name: proto for proto in protos}


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_a_raw_call_lists_both_reflection_services(served: ServerProcess, service: str) -> None:
    (answer,) = ask(served.address, service, ServerReflectionRequest(list_services=""))
    listed = {s.name for s in answer.list_services_response.service}
    assert {V1, V1ALPHA, "grpc.health.v1.Health", "cairn.tracking.v1.TrackingService"} <= listed


def test_a_raw_v1_call_answers_file_descriptors(served: ServerProcess) -> None:
    tracking, reflection = ask(
        served.address,
        V1,
        ServerReflectionRequest(file_containing_symbol="cairn.tracking.v1.TrackingService"),
        ServerReflectionRequest(file_containing_symbol=V1),
    )
    service = files(tracking)["cairn/tracking/v1/tracking_service.proto"].service[0]
    assert service.name == "TrackingService"
    assert "LogBatch" in {method.name for method in service.method}
    v1 = files(reflection)["grpc/reflection/v1/reflection.proto"]
    assert v1.package == "grpc.reflection.v1"
    (method,) = v1.service[0].method
    assert (method.name, method.input_type, method.output_type) == (
        "ServerReflectionInfo",
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert method.client_streaming and method.server_streaming
    assert not v1.options.deprecated  # v1alpha's is deprecated; v1 is not


def test_grpcurl_describes_reflection_v1(served: ServerProcess) -> None:
    result = run_tool(tool("grpcurl"), "-plaintext", served.address, "describe", V1)
    assert result.returncode == 0, result.stderr
    assert (
        "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )"
        " returns ( stream .grpc.reflection.v1.ServerReflectionResponse )"
    ) in result.stdout


def test_grpcurl_calls_reflection_v1_by_its_reflected_schema(served: ServerProcess) -> None:
    """grpcurl learns v1's messages through reflection, then calls the v1 method."""
    result = run_tool(
        tool("grpcurl"),
        "-plaintext",
        "-d",
        json.dumps({"list_services": ""}),
        served.address,
        f"{V1}/ServerReflectionInfo",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["list_services_response"]  # grpcurl keeps proto names
    listed = {service["name"] for service in answer["service"]}
    assert {V1, V1ALPHA, "cairn.registry.v1.RegistryService"} <= listed


def buf_curl_v1(*args: str) -> list[str]:
    """buf curl over gRPC (its default, Connect, is not served) told to use reflection v1
    only (it would fall back to v1alpha otherwise)."""
    result = run_tool(
        tool("buf"), "curl", "--protocol", "grpc", "--reflect-protocol", "grpc-v1", *args
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")


def test_buf_curl_lists_and_calls_through_reflection_v1(served: ServerProcess) -> None:
    listed = buf_curl_v1("--list-services", f"http://{served.address}")
    assert {V1, V1ALPHA, "cairn.artifacts.v1.ArtifactService"} <= set(listed)
    answer = buf_curl_v1(
        "--header",
        "x-request-id: reflection-v1",
        "--reflect-header",
        "*",
        "--data",
        json.dumps({"service": "cairn.auth.v1.AuthService"}),
        f"http://{served.address}/grpc.health.v1.Health/Check",
    )
    assert json.loads("\n".join(answer)) == {"status": "SERVING"}
    reflected = {
        (line["method"], line["code"])
        for line in served.log_lines()
        if line.get("request_id") == "reflection-v1"
    }
    assert reflected == {
        (f"/{V1}/ServerReflectionInfo", "OK"),
        ("/grpc.health.v1.Health/Check", "OK"),
    }


@pytest.fixture(scope="module")
def keys_required(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keys-required")
    server = start_server(data_dir, "--auth", "api_key")
    yield server
    server.terminate(timeout=30)


def test_reflection_v1_needs_no_key(keys_required: ServerProcess) -> None:
    """Reflection is outside every role table, so the interceptor admits it without a key."""
    (answer,) = ask(keys_required.address, V1, ServerReflectionRequest(list_services=""))
    assert V1 in {s.name for s in answer.list_services_response.service}
    refused = run_tool(
        tool("grpcurl"),
        "-plaintext",
        "-d",
        json.dumps({"project": "default"}),
        keys_required.address,
        "cairn.tracking.v1.TrackingService/SearchExperiments",
    )
    assert "Code: Unauthenticated" in refused.stderr
