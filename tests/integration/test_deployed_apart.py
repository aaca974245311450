"""Services served by separate processes, as the Kubernetes Deployments serve them: a
client given one address per service reaches each, run artifacts included, and every
gRPC target form reaches a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn.exceptions import DeadlineExceededError, UnimplementedError
from cairn_server import catalog
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer


@pytest.fixture(scope="module")
async def apart(config: Config, pool: asyncpg.Pool) -> AsyncIterator[dict[str, int]]:
    """The port of each service, each hosted by a server of its own."""
    servers = {name: CairnServer(config, catalog.select([name]), pool) for name in catalog.SERVICES}
    ports = {name: await server.start() for name, server in servers.items()}
    yield ports
    for server in servers.values():
        await server.stop(grace=0)


def _client(ports: dict[str, int], **kwargs: object) -> cairn.Client:
    return cairn.Client(
        "127.0.0.1",
        ports["tracking"],
        is_secure=False,
        service_addresses={
            "registry": f"127.0.0.1:{ports['registry']}",
            "artifacts": f"127.0.0.1:{ports['artifacts']}",
        },
        **kwargs,  # type: ignore[arg-type]
    )


async def test_run_artifacts_reach_the_artifact_service_at_its_own_address(
    apart: dict[str, int], unique: str, tmp_path: Path
) -> None:
    local = tmp_path / "weights.bin"
    local.write_bytes(b"\x00\x01" * 1000)
    async with _client(apart) as client:
        experiment = await client.tracking.create_experiment(f"apart-{unique}")
        run = (await client.tracking.create_run(experiment)).info.run_id
        await client.tracking.log_text(run, "hello", "notes/hello.txt")
        await client.tracking.log_dict(run, {"lr": 0.1}, "config.json")
        await client.tracking.log_artifact(run, local, "model")
        listed = await client.tracking.list_artifacts(run)
        assert sorted(a.path for a in listed) == ["config.json", "model", "notes"]
        target = await client.tracking.download_artifacts(run, "model", tmp_path / "out")
        assert (Path(target) / "weights.bin").read_bytes() == local.read_bytes()
        await client.registry.create_registered_model(f"model-{unique}")
        assert (await client.registry.get_registered_model(f"model-{unique}")).name == (
            f"model-{unique}"
        )


async def test_a_tracking_client_alone_reaches_no_artifact_service(
    apart: dict[str, int], unique: str
) -> None:
    """What service_addresses is for: the tracking server alone does not serve artifacts."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", apart["tracking"]) as alone:
        experiment = await alone.create_experiment(f"alone-{unique}")
        run = (await alone.create_run(experiment)).info.run_id
        with pytest.raises(UnimplementedError):
            await alone.log_text(run, "hello", "hello.txt")


@pytest.mark.parametrize(
    "address",
    ["dns:///127.0.0.1:{port}", "dns:///localhost", "ipv4:127.0.0.1:{port}", "ipv4:127.0.0.1"],
)
async def test_grpc_targets_reach_the_server(apart: dict[str, int], address: str) -> None:
    port = apart["tracking"]
    async with cairn.TrackingClient.insecure_connection(address.format(port=port), port) as client:
        await client.search_experiments()


async def test_service_addresses_take_urls_and_address_lists(
    apart: dict[str, int], unique: str
) -> None:
    """A URL's scheme agrees with the client's TLS; an ipv4: entry without its port
    takes the client's."""
    client = cairn.Client(
        f"http://127.0.0.1:{apart['tracking']}",
        service_addresses={
            "registry": f"http://127.0.0.1:{apart['registry']}",
            "auth": "ipv4:127.0.0.1",
        },
    )
    async with client:
        await client.registry.create_registered_model(f"url-{unique}")
        assert [p.name for p in await client.auth.get_projects()]


async def test_a_unix_socket_target_reaches_the_server(tmp_path: Path) -> None:
    """A bare gRPC server on a socket answers UNIMPLEMENTED: the call arrived."""
    server = grpc.aio.server()
    socket = f"unix:{tmp_path / 'cairn.sock'}"
    server.add_insecure_port(socket)
    await server.start()
    try:
        async with cairn.TrackingClient.insecure_connection(socket) as client:
            with pytest.raises(UnimplementedError):
                await client.search_experiments()
    finally:
        await server.stop(0)


class _Unanswering(grpc.GenericRpcHandler):
    """A server that takes every call and never answers it, as a hung one does."""

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        async def hang(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await asyncio.Event().wait()
            return b""

        return grpc.unary_unary_rpc_method_handler(hang)


async def test_a_run_s_artifact_calls_keep_the_client_s_deadline(
    apart: dict[str, int], unique: str, tmp_path: Path
) -> None:
    """A run's and a model's artifact calls went to an ArtifactClient made without a
    deadline: against an artifact service that never answered, list_artifacts (and the
    CLI's `artifacts list -r`, despite --timeout) waited for ever, and log_model and
    load_model, whose first read of a manifest is a stream, still did."""
    async with _client(apart) as client:
        await client.registry.create_artifact(f"data-{unique}", "dataset", files=b"rows")
    hung = grpc.aio.server()
    hung.add_generic_rpc_handlers([_Unanswering()])
    port = hung.add_insecure_port("127.0.0.1:0")
    await hung.start()
    try:
        async with cairn.Client(
            "127.0.0.1",
            apart["tracking"],
            is_secure=False,
            timeout=1,
            service_addresses={
                "registry": f"127.0.0.1:{apart['registry']}",
                "artifacts": f"127.0.0.1:{port}",
            },
        ) as client:
            experiment = await client.tracking.create_experiment(f"hung-{unique}")
            run = (await client.tracking.create_run(experiment)).info.run_id
            calls = [
                client.tracking.list_artifacts(run),
                client.tracking.download_artifacts(run, "model", tmp_path / "out"),
                # Their first calls read a manifest, a byte stream, which takes no
                # deadline of its own.
                client.tracking.log_model(run, {"v": 1}, "model", flavor="pickle"),
                client.tracking.load_model(f"runs:/{run}/model", allow_pickle=True),
                (await client.registry.get_artifact(f"data-{unique}")).files(),
            ]
            for call in calls:
                with pytest.raises(DeadlineExceededError):
                    await asyncio.wait_for(call, 30)
    finally:
        await hung.stop(grace=0)
