"""Writes to one run racing each other: each answer is what some order of the calls
gives. Two values of one param are never both taken, and writes of the same entries in
other orders never deadlock (ABORTED, which the client sends again, after PostgreSQL's
second of deadlock detection)."""

import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from tests.conftest import status_codes

ROUNDS = 30
KEYS = [f"key{n:02}" for n in range(20)]


@pytest.fixture
async def stub(server_port: int) -> AsyncIterator[rpc.TrackingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield rpc.TrackingServiceStub(channel)


@pytest.fixture
async def experiment_id(stub: rpc.TrackingServiceStub, unique: str) -> str:
    request = api.CreateExperimentRequest(name=f"races-{unique}")
    return (await stub.CreateExperiment(request)).experiment.experiment_id


async def _run(stub: rpc.TrackingServiceStub, experiment_id: str) -> str:
    request = api.CreateRunRequest(experiment_id=experiment_id)
    return (await stub.CreateRun(request)).run.info.run_id


async def test_two_values_of_one_param_logged_at_once_are_not_both_taken(
    stub: rpc.TrackingServiceStub, experiment_id: str
) -> None:
    """Params are immutable: whichever comes second is FAILED_PRECONDITION
    (PARAM_ALREADY_LOGGED), and the run holds the value of the one answered OK."""
    for _ in range(ROUNDS):
        run_id = await _run(stub, experiment_id)
        values = ["0.1", "0.2"]
        codes = await status_codes(
            *(
                stub.LogParam(api.LogParamRequest(run_id=run_id, param=pb.Param(key="lr", value=v)))
                for v in values
            )
        )
        assert Counter(codes) == {grpc.StatusCode.OK: 1, grpc.StatusCode.FAILED_PRECONDITION: 1}
        run = (await stub.GetRun(api.GetRunRequest(run_id=run_id))).run
        kept = values[codes.index(grpc.StatusCode.OK)]
        assert {p.key: p.value for p in run.data.params} == {"lr": kept}


async def test_the_same_entries_written_at_once_in_other_orders_never_deadlock(
    stub: rpc.TrackingServiceStub, experiment_id: str
) -> None:
    seen: Counter[grpc.StatusCode] = Counter()
    for _ in range(ROUNDS):
        run_id = await _run(stub, experiment_id)

        def batch(keys: list[str], run_id: str = run_id) -> api.LogBatchRequest:
            tags = [pb.Tag(key=k, value="t") for k in keys]
            params = [pb.Param(key=k, value="p") for k in keys]
            return api.LogBatchRequest(
                run_id=run_id, request_id=uuid.uuid4().hex, tags=tags, params=params
            )

        def inputs(order: list[int], run_id: str = run_id) -> api.LogInputsRequest:
            given = [pb.RunInput(kind="dataset", name="d", uri=f"s3://b/{n}") for n in order]
            return api.LogInputsRequest(run_id=run_id, inputs=given)

        order = list(range(20))
        seen.update(
            await status_codes(
                stub.LogBatch(batch(KEYS)),
                stub.LogBatch(batch(KEYS[::-1])),
                stub.LogInputs(inputs(order)),
                stub.LogInputs(inputs(order[::-1])),
            )
        )
    assert seen == {grpc.StatusCode.OK: 4 * ROUNDS}


async def test_two_renames_of_a_run_by_its_name_tag_never_deadlock(
    stub: rpc.TrackingServiceStub, experiment_id: str
) -> None:
    """The mlflow.runName tag renames the run: a batch carrying it updates the run's
    row, which a batch only shares otherwise. Renamed at once, both are taken, as two
    UpdateRuns are, and the run is named by one of them."""
    seen: Counter[grpc.StatusCode] = Counter()
    for _ in range(ROUNDS):
        run_id = await _run(stub, experiment_id)
        names = [f"name-{uuid.uuid4().hex[:8]}" for _ in range(4)]
        tags = [pb.Tag(key="mlflow.runName", value=name) for name in names]
        seen.update(
            await status_codes(
                stub.SetTag(api.SetTagRequest(run_id=run_id, tag=tags[0])),
                stub.SetTag(api.SetTagRequest(run_id=run_id, tag=tags[1])),
                stub.LogBatch(api.LogBatchRequest(run_id=run_id, tags=[tags[2]])),
                stub.LogBatch(api.LogBatchRequest(run_id=run_id, tags=[tags[3]])),
            )
        )
        run = (await stub.GetRun(api.GetRunRequest(run_id=run_id))).run
        assert run.info.run_name in names
    assert seen == {grpc.StatusCode.OK: 4 * ROUNDS}
