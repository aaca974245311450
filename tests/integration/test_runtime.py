"""The shared runtime through real gRPC: health, reflection, error mapping, logging,
request ids and graceful shutdown. A small servicer of the real TrackingService
contract stands in for behaviour that later issues build."""

import asyncio
import logging
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
import structlog
from google.protobuf import descriptor, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

import cairn
from cairn import exceptions
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
from cairn_server import catalog
from cairn_server.common import errors, logs, reflection
from cairn_server.common.config import Config
from cairn_server.common.health import LIVENESS
from cairn_server.common.server import CairnServer
from cairn_server.common.service import Resources, ServiceSpec
from tests.conftest import eventually, with_overrides

SERVICE_NAMES = [spec.full_name for spec in catalog.select([])]


class _ScriptedTracking(tracking_service_pb2_grpc.TrackingServiceServicer):
    """Answers GetRun according to the run id it is asked for."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_arrived = asyncio.Event()

    async def GetRun(self, request, context):
        if request.run_id == "missing":
            raise errors.NotFound(
                "RUN_NOT_FOUND", "run missing not found", metadata={"run_id": "missing"}
            )
        if request.run_id == "bad":
            raise errors.invalid_field("run_id", "must be 32 hex characters")
        if request.run_id == "crash":
            raise RuntimeError('duplicate key value violates "runs_pkey" SELECT secret FROM runs')
        if request.run_id == "slow":
            self.slow_arrived.set()
            await self.release.wait()
        if request.run_id.startswith("busy"):  # past a deadline of 0.1 s without an await
            busy_until = time.monotonic() + 0.3
            while time.monotonic() < busy_until:
                pass
            if request.run_id == "busy-missing":
                raise errors.NotFound("RUN_NOT_FOUND", "run busy-missing not found")
        return tracking_service_pb2.GetRunResponse(
            run=tracking_pb2.Run(info=tracking_pb2.RunInfo(run_id=request.run_id))
        )

    async def GetMetricHistory(self, request, context):
        for step in range(3):
            yield tracking_service_pb2.GetMetricHistoryResponse(
                points=tracking_pb2.MetricColumns(steps=[step])
            )
        raise errors.FailedPrecondition("RUN_DELETED", "run was deleted mid-stream")


def _scripted_spec(servicer: _ScriptedTracking) -> ServiceSpec:
    def register(server: grpc.aio.Server, resources: Resources) -> None:
        tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="tracking",
        full_name=catalog.SERVICES["tracking"].full_name,
        schema="tracking",
        migrations_dir=Path("unused"),
        register=register,
        roles=catalog.SERVICES["tracking"].roles,
    )


@pytest.fixture
async def scripted(config: Config, pool: asyncpg.Pool):
    servicer = _ScriptedTracking()
    server = CairnServer(config, [catalog.AUTH, _scripted_spec(servicer)], pool)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", port)
    yield servicer, server, channel, client
    await client.close()
    await channel.close()
    await server.stop(grace=0)


async def _get_run(client: cairn.TrackingClient, run_id: str, **kwargs):
    request = tracking_service_pb2.GetRunRequest(project="default", run_id=run_id)
    return await client._transport.unary(client._stub.GetRun, request, **kwargs)


async def test_health_reports_serving_overall_and_per_service(server_port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", *SERVICE_NAMES]:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="cairn.nope.v1.Nope"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_headers_are_taken_or_refused_by_their_size_alone(server_port: int) -> None:
    """gRPC refuses headers past 8 KiB at random, more often the closer they are to its
    16 KiB hard limit: the same call of 12,000 bytes of headers was taken about half
    the time. Taken always up to 16 KiB now, refused always past it."""

    async def outcomes(header_bytes: int) -> set[grpc.StatusCode]:
        found = set()
        for _ in range(20):
            try:
                await health.Check(
                    health_pb2.HealthCheckRequest(), metadata=[("x-pad", "p" * header_bytes)]
                )
                found.add(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                found.add(error.code())
        return found

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert await outcomes(12_000) == {grpc.StatusCode.OK}
        assert await outcomes(17_000) == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_health_lists_every_name_with_its_status(server_port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    assert {name: reply.status for name, reply in listed.statuses.items()} == dict.fromkeys(
        ["", *SERVICE_NAMES, LIVENESS], health_pb2.HealthCheckResponse.SERVING
    )


async def test_reflection_lists_every_service(server_port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            listed = {s.name for s in reply.list_services_response.service}
            break
    assert listed == {
        *SERVICE_NAMES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_every_method_of_every_service_reaches_its_handler(server_port: int) -> None:
    """Services register their handlers as generic handlers only (server.py,
    _GenericHandlersOnly). Every method must still be served: its handler refuses bytes
    that are no message as INVALID_ARGUMENT, where a method not served is UNIMPLEMENTED."""
    services = [*SERVICE_NAMES, "grpc.health.v1.Health", *reflection.SERVICE_NAMES]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        for service in services:
            for method in descriptor_pool.Default().FindServiceByName(service).methods:
                code = await _answer_to_garbage(channel, f"/{service}/{method.name}", method)
                assert code == grpc.StatusCode.INVALID_ARGUMENT, method.full_name


async def _answer_to_garbage(
    channel: grpc.aio.Channel, path: str, method: descriptor.MethodDescriptor
) -> grpc.StatusCode:
    garbage = b"\xff"  # no valid field tag: not a message of any type
    try:
        if method.client_streaming and method.server_streaming:
            async for _ in channel.stream_stream(path)(iter([garbage])):
                pass
        elif method.client_streaming:
            await channel.stream_unary(path)(iter([garbage]))
        elif method.server_streaming:
            async for _ in channel.unary_stream(path)(garbage):
                pass
        else:
            await channel.unary_unary(path)(garbage)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_an_rpc_a_servicer_lacks_answers_unimplemented_with_a_reason(scripted) -> None:
    _, _, _, client = scripted
    request = tracking_service_pb2.CreateExperimentRequest(project="default", name="x")
    with pytest.raises(exceptions.UnimplementedError) as raised:
        await client._transport.unary(client._stub.CreateExperiment, request)
    assert raised.value.reason == "NOT_IMPLEMENTED"
    assert "CreateExperiment" in raised.value.message


async def test_domain_errors_keep_code_reason_and_metadata(scripted) -> None:
    _, _, _, client = scripted
    with pytest.raises(exceptions.NotFoundError) as raised:
        await _get_run(client, "missing")
    assert raised.value.reason == "RUN_NOT_FOUND"
    assert raised.value.metadata == {"run_id": "missing"}


async def test_bad_input_carries_field_violations(scripted) -> None:
    _, _, _, client = scripted
    with pytest.raises(exceptions.InvalidArgumentError) as raised:
        await _get_run(client, "bad")
    assert raised.value.reason == "INVALID_ARGUMENT"
    assert raised.value.field_violations == [("run_id", "must be 32 hex characters")]


async def test_unexpected_errors_hide_internals_behind_a_logged_correlation_id(scripted) -> None:
    _, _, _, client = scripted
    with (
        structlog.testing.capture_logs() as logged,
        pytest.raises(exceptions.InternalError) as raised,
    ):
        await _get_run(client, "crash", metadata=[("x-request-id", "req-42")])
    error = raised.value
    assert error.metadata == {"correlation_id": "req-42"}
    assert "req-42" in error.message
    assert "SELECT" not in error.message and "runs_pkey" not in error.message
    assert "Traceback" not in error.message
    line = next(entry for entry in logged if entry.get("method", "").endswith("/GetRun"))
    assert line["code"] == "INTERNAL"
    assert line["request_id"] == "req-42"
    assert line["log_level"] == "error"
    assert isinstance(line["exc_info"], RuntimeError)


async def test_one_log_line_per_call_with_a_generated_request_id(scripted) -> None:
    _, _, _, client = scripted
    with structlog.testing.capture_logs() as logged:
        await _get_run(client, "0" * 32)
    calls = [entry for entry in logged if entry.get("event") == "rpc"]
    assert len(calls) == 1
    assert calls[0]["code"] == "OK"
    assert calls[0]["method"] == "/cairn.tracking.v1.TrackingService/GetRun"
    assert len(calls[0]["request_id"]) == 32
    assert calls[0]["duration_ms"] >= 0


async def test_a_level_that_drops_the_call_line_still_counts_the_call(
    scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At CAIRN_LOG_LEVEL=warning the interceptor builds no line for an OK call (its
    metrics are still counted); an INTERNAL one is still written, at error level."""
    _, _, _, client = scripted
    monkeypatch.setattr(logs, "_least_level", logging.WARNING)
    sample = {"method": "/cairn.tracking.v1.TrackingService/GetRun", "code": "OK"}
    before = REGISTRY.get_sample_value("cairn_rpc_calls_total", sample) or 0
    with structlog.testing.capture_logs() as logged:
        await _get_run(client, "0" * 32)
        with pytest.raises(exceptions.InternalError):
            await _get_run(client, "crash")
    assert [entry["code"] for entry in logged if entry.get("event") == "rpc"] == ["INTERNAL"]
    assert REGISTRY.get_sample_value("cairn_rpc_calls_total", sample) == before + 1


def _calls_counted(code: str) -> float:
    sample = {"method": "/cairn.tracking.v1.TrackingService/GetRun", "code": code}
    return REGISTRY.get_sample_value("cairn_rpc_calls_total", sample) or 0


@pytest.mark.parametrize(("timeout", "code"), [(0.2, "DEADLINE_EXCEEDED"), (None, "CANCELLED")])
async def test_a_call_past_its_deadline_is_counted_apart_from_one_cancelled(
    scripted, timeout: float | None, code: str
) -> None:
    """Both end the handler cancelled; a call whose deadline passed was counted and
    logged CANCELLED too, so slow calls hidden among clients that gave up."""
    servicer, _, channel, _ = scripted
    stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
    before = _calls_counted(code)
    with structlog.testing.capture_logs() as logged:
        call = stub.GetRun(
            tracking_service_pb2.GetRunRequest(project="default", run_id="slow"), timeout=timeout
        )
        await servicer.slow_arrived.wait()
        if timeout is None:
            call.cancel()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await call
        await eventually(lambda: _calls_counted(code) == before + 1, what=f"a call counted {code}")
    assert [entry["code"] for entry in logged if entry.get("event") == "rpc"] == [code]


@pytest.mark.parametrize(("run_id", "answered"), [("busy", "OK"), ("busy-missing", "NOT_FOUND")])
async def test_an_answer_made_past_the_deadline_is_counted_as_its_client_saw_it(
    scripted, run_id: str, answered: str
) -> None:
    """Its client was told DEADLINE_EXCEEDED; it was counted as answered, OK or an error."""
    _, _, channel, _ = scripted
    stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
    before = _calls_counted("DEADLINE_EXCEEDED")
    with structlog.testing.capture_logs() as logged:
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.GetRun(
                tracking_service_pb2.GetRunRequest(project="default", run_id=run_id), timeout=0.1
            )
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: _calls_counted("DEADLINE_EXCEEDED") == before + 1, what="counted")
    (line,) = [entry for entry in logged if entry.get("event") == "rpc"]
    assert (line["code"], line["answered"]) == ("DEADLINE_EXCEEDED", answered)


async def test_a_call_cut_by_a_stop_is_counted_so_whatever_stop_comes_next(scripted) -> None:
    """A second stop with more grace moved the cut later on paper: the call cut by the
    first was counted CANCELLED, its client told UNAVAILABLE."""
    servicer, server, channel, _ = scripted
    stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
    before = _calls_counted("UNAVAILABLE")
    call = stub.GetRun(tracking_service_pb2.GetRunRequest(project="default", run_id="slow"))
    await servicer.slow_arrived.wait()
    stops = [asyncio.create_task(server.stop(grace=0.3))]
    await eventually(lambda: server._stopping.is_set(), what="the first stop begun")
    stops.append(asyncio.create_task(server.stop(grace=30)))
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await call
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    await eventually(lambda: _calls_counted("UNAVAILABLE") == before + 1, what="counted")
    await asyncio.gather(*stops)


async def test_a_call_its_client_cancels_during_a_shutdown_is_counted_cancelled(
    scripted,
) -> None:
    """A stopping server counted every call cancelled meanwhile UNAVAILABLE, as if its
    grace had ended and cut it."""
    servicer, server, channel, _ = scripted
    stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
    before = _calls_counted("CANCELLED")
    call = stub.GetRun(tracking_service_pb2.GetRunRequest(project="default", run_id="slow"))
    await servicer.slow_arrived.wait()
    stopping = asyncio.create_task(server.stop(grace=30))
    await eventually(lambda: server._stopping.is_set(), what="the stop begun")
    call.cancel()
    await eventually(lambda: _calls_counted("CANCELLED") == before + 1, what="counted")
    await stopping


async def test_calls_of_methods_not_served_are_counted_under_one_name(scripted) -> None:
    """gRPC answers them before any handler: they were not counted, so a server called
    for another service (a client pointed at the wrong one) looked idle."""
    _, _, channel, _ = scripted
    sample = {"method": "unknown", "code": "UNIMPLEMENTED"}
    before = REGISTRY.get_sample_value("cairn_rpc_calls_total", sample) or 0
    called = {"/cairn.tracking.v1.TrackingService/Nothing", "/no.such.Service/Call"}
    for method in called:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(method)(b"")
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert REGISTRY.get_sample_value("cairn_rpc_calls_total", sample) == before + 2
    counted = {
        sample.labels.get("method") for family in REGISTRY.collect() for sample in family.samples
    }
    assert not called & counted


async def test_errors_raised_mid_stream_reach_the_client(scripted) -> None:
    _, _, _, client = scripted
    request = tracking_service_pb2.GetMetricHistoryRequest(project="default", run_id="r")
    steps = []
    with pytest.raises(exceptions.FailedPreconditionError) as raised:
        async for chunk in client._transport.server_stream(client._stub.GetMetricHistory, request):
            steps.extend(chunk.points.steps)
    assert steps == [0, 1, 2]
    assert raised.value.reason == "RUN_DELETED"


async def test_shutdown_reports_not_serving_and_lets_calls_finish(scripted) -> None:
    servicer, server, channel, client = scripted
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.create_task(_get_run(client, "slow"))
    await asyncio.wait_for(servicer.slow_arrived.wait(), timeout=5)
    stopping = asyncio.create_task(server.stop(grace=5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    # No event marks "the stop did not cut the call": give a wrong cut time to show.
    await asyncio.sleep(0.2)
    assert not in_flight.done() and not stopping.done()
    servicer.release.set()
    reply = await in_flight
    assert reply.run.info.run_id == "slow"
    await asyncio.wait_for(stopping, timeout=5)


async def test_health_watches_are_bounded_on_both_ports(
    config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Health needs no key, and each Watch stays open as long as its client wants: 20,000
    of them took 175 MiB of the server, from anyone who could reach a port."""
    monkeypatch.setattr("cairn_server.common.health.MAX_WATCHERS", 2)
    server = CairnServer(with_overrides(config, health_address="127.0.0.1:0"), [catalog.AUTH], pool)
    port = await server.start()
    request = health_pb2.HealthCheckRequest(service="")
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as main,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as probes,
        ):
            watches = [health_pb2_grpc.HealthStub(main).Watch(request) for _ in range(2)]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            for channel in (main, probes):
                refused = health_pb2_grpc.HealthStub(channel).Watch(request)
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await refused.read()
                assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert exceptions.from_grpc_error(error.value).reason == "TOO_MANY_WATCHERS"
            # Checks go on, and a watch that ends frees its place.
            checked = await health_pb2_grpc.HealthStub(probes).Check(request)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            watches[0].cancel()

            async def watched_again() -> bool:
                again = health_pb2_grpc.HealthStub(probes).Watch(request)
                try:
                    return (await again.read()).status == health_pb2.HealthCheckResponse.SERVING
                except grpc.aio.AioRpcError:
                    return False
                finally:
                    again.cancel()

            await eventually(watched_again, what="a watch taking the freed place")
    finally:
        await server.stop(grace=0)


async def test_one_client_holds_a_share_of_the_health_watches(
    scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client opening MAX_WATCHERS watches left none to anyone else, and gRPC's
    client-side health checking takes a refused watch for a server down."""
    monkeypatch.setattr("cairn_server.common.health.MAX_WATCHERS", 10)
    monkeypatch.setattr("cairn_server.common.health.MAX_WATCHERS_PER_CLIENT", 2)
    _, _, channel, _ = scripted
    request = health_pb2.HealthCheckRequest(service="")
    watches = [health_pb2_grpc.HealthStub(channel).Watch(request) for _ in range(2)]
    for watch in watches:
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health_pb2_grpc.HealthStub(channel).Watch(request).read()
    assert exceptions.from_grpc_error(refused.value).reason == "TOO_MANY_WATCHERS"
    assert "of this client's" in str(refused.value.details())
    for watch in watches:
        watch.cancel()


async def test_a_health_watch_ends_once_shutdown_begins(scripted) -> None:
    """A Watch on the main port (as gRPC's client-side health checking keeps open) was
    told NOT_SERVING and then kept open: an in-flight call, which the stop waited for
    until its whole grace period had passed."""
    _, server, channel, _ = scripted
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.wait_for(server.stop(grace=60), timeout=10)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await watch.read() is grpc.aio.EOF
    assert await watch.code() == grpc.StatusCode.OK
