"""Request ids of the writes that claim their own (LogMetric, LogBatch): a repeat is
stored once, also one sent while the first is under way; another request under the
same id is REQUEST_ID_REUSED; LogMetric's kind of id is not a LogBatch's; and a write
that committed is answered OK even if merging small chunks after it fails."""

from __future__ import annotations

import asyncio
import functools
import uuid

import asyncpg
import pytest

import cairn
from cairn import _headers
from cairn.exceptions import FailedPreconditionError, InvalidArgumentError
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types import Metric, Param
from cairn.types import _tracking as types
from cairn_server.tracking.store import compaction
from cairn_server.tracking.store.write_statements import METRIC_REQUEST_PREFIX

_POINT = Metric("m", 0.5, 1, 1)
_CLAIMS = "SELECT count(*) FROM tracking.applied_batches WHERE run_id = $1 AND request_id = $2"


def _with_id(request_id: str) -> list[tuple[str, str]]:
    return [(_headers.REQUEST_ID_HEADER, request_id)]


async def _values(tracking: cairn.TrackingClient, run_id: str, key: str) -> list[float]:
    return [p.value for p in await tracking.get_metric_history(run_id, key)]


async def test_a_log_metric_id_sent_with_another_request_is_refused(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    same_id = _with_id(f"metric-{unique}")
    await tracking.log_metric(run_id, "m", 1.0, step=1, timestamp=5, metadata=same_id)
    await tracking.log_metric(run_id, "m", 1.0, step=1, timestamp=5, metadata=same_id)
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.log_metric(run_id, "m", 2.0, step=1, timestamp=5, metadata=same_id)
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert f"metric-{unique}" in str(raised.value)
    assert METRIC_REQUEST_PREFIX not in str(raised.value)
    assert await _values(tracking, run_id, "m") == [1.0]


# A batch's two forms: a few points alone are one statement, others a transaction.
BATCHES = {
    "a few points": ({"metrics": [Metric("m", 1.0, 1, 1)]}, {"metrics": [Metric("m", 2.0, 1, 1)]}),
    "params": ({"params": [Param("a", "1")]}, {"params": [Param("b", "2")]}),
}


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
async def test_a_log_batch_id_sent_with_another_batch_is_refused(
    tracking: cairn.TrackingClient, run_id: str, unique: str, batch: tuple[dict, dict]
) -> None:
    """It used to be taken for a repeat: answered OK, and the other batch dropped."""
    first, other = batch
    await tracking.log_batch(run_id, **first, request_id=f"batch-{unique}")
    await tracking.log_batch(run_id, **first, request_id=f"batch-{unique}")
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.log_batch(run_id, **other, request_id=f"batch-{unique}")
    assert raised.value.reason == "REQUEST_ID_REUSED"
    run = await tracking.get_run(run_id)
    assert run.data.params == {p.key: p.value for p in first.get("params", [])}
    assert await _values(tracking, run_id, "m") == [m.value for m in first.get("metrics", [])]


async def test_a_repeat_racing_the_first_call_is_stored_once(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool, unique: str
) -> None:
    """Repeats sent at once: their statements may or may not overlap in the database
    (the scheduler decides), so this shows they are stored once, not that they raced."""
    same_id = _with_id(f"race-{unique}")
    await asyncio.gather(
        *(
            tracking.log_metric(run_id, "m", 1.0, step=1, timestamp=5, metadata=same_id)
            for _ in range(2)
        )
    )
    small = [Metric("small", 1.0, 1, 1)]
    large = [Metric("large", float(i), i, 1) for i in range(100)]
    await asyncio.gather(
        *(tracking.log_batch(run_id, small, request_id=f"small-{unique}") for _ in range(2)),
        *(tracking.log_batch(run_id, large, request_id=f"large-{unique}") for _ in range(2)),
    )
    assert await _values(tracking, run_id, "m") == [1.0]
    assert await _values(tracking, run_id, "small") == [1.0]
    assert len(await _values(tracking, run_id, "large")) == 100
    run = uuid.UUID(run_id)
    for request_id in (f"{METRIC_REQUEST_PREFIX}race-", "small-", "large-"):
        assert await pool.fetchval(_CLAIMS, run, request_id + unique) == 1


async def test_log_batch_ids_may_not_take_log_metric_ids_kind(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    await tracking.log_metric(run_id, "m", 1.0, metadata=_with_id(unique))
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.log_batch(
            run_id, [Metric("m", 2.0, 1, 1)], request_id=f"{METRIC_REQUEST_PREFIX}{unique}"
        )
    assert raised.value.reason == "INVALID_ARGUMENT"
    assert await _values(tracking, run_id, "m") == [1.0]


async def test_a_write_is_answered_ok_when_merging_after_it_fails(
    tracking: cairn.TrackingClient, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    merges = []

    async def failing_merge(*args: object, **kwargs: object) -> None:
        merges.append(args)
        raise asyncpg.LockNotAvailableError("lock timeout")

    monkeypatch.setattr(compaction, "merge_small_chunks", failing_merge)
    # One chunk id in CHECK_EVERY consecutive ones is a multiple of it: that write merges.
    for step in range(compaction.CHECK_EVERY):
        await tracking.log_metric(run_id, "m", float(step), step=step)
    assert merges
    assert await _values(tracking, run_id, "m") == [float(s) for s in range(compaction.CHECK_EVERY)]


async def test_a_log_batch_without_an_id_of_its_own_takes_the_calls(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    """A LogBatch that leaves its request_id field empty (grpcurl, another language's
    client) is applied once per x-cairn-request-id, as every other write."""
    same_id = _with_id(f"header-{unique}")
    first = api.LogBatchRequest(
        project=tracking.project, run_id=run_id, metrics=types.metrics_to_columns([_POINT])
    )
    other = api.LogBatchRequest()
    other.CopyFrom(first)
    other.metrics.values[0] = 9.0
    send = functools.partial(tracking._transport.unary, tracking._stub.LogBatch)
    await send(first, metadata=same_id)
    await send(first, metadata=same_id)
    with pytest.raises(InvalidArgumentError) as raised:
        await send(other, metadata=same_id)
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert await _values(tracking, run_id, "m") == [_POINT.value]


async def test_log_batch_sends_a_request_id_given_in_its_metadata_as_the_batchs(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    same_id = _with_id(f"job-{unique}")
    for _ in range(2):  # a job restarted by its scheduler, say
        await tracking.log_batch(run_id, [_POINT], metadata=same_id)
    assert await _values(tracking, run_id, "m") == [_POINT.value]


async def test_a_call_id_of_log_metrics_kind_is_refused_naming_the_header(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    request = api.LogBatchRequest(
        project=tracking.project, run_id=run_id, metrics=types.metrics_to_columns([_POINT])
    )
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking._transport.unary(
            tracking._stub.LogBatch,
            request,
            metadata=_with_id(f"{METRIC_REQUEST_PREFIX}{unique}"),
        )
    assert [field for field, _ in raised.value.field_violations] == [_headers.REQUEST_ID_HEADER]
    assert await _values(tracking, run_id, "m") == []


async def test_a_repeat_of_a_stored_write_is_answered_ok_once_its_run_is_deleted(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    """A repeat is answered as the first call was, as every recorded write's is: a
    client whose answer was lost, and whose run was deleted meanwhile, is told its
    points were stored (ActiveRun would otherwise report them lost). A write never
    stored still meets the deleted run."""
    many = [Metric("m", float(i), 1, i) for i in range(40)]  # the COPY form
    writes = {
        "one point": lambda: tracking.log_metric(
            run_id, "m", 0.5, step=1, timestamp=1, metadata=_with_id(f"metric-{unique}")
        ),
        "a few points": lambda: tracking.log_batch(
            run_id, [Metric("m", 1.0, 1, 1)], request_id=f"few-{unique}"
        ),
        "many points": lambda: tracking.log_batch(run_id, many, request_id=f"many-{unique}"),
    }
    for write in writes.values():
        await write()
    await tracking.delete_run(run_id)
    for write in writes.values():
        await write()  # no RUN_DELETED
    with pytest.raises(FailedPreconditionError) as raised:
        await tracking.log_batch(run_id, [Metric("m", 1.0, 1, 1)], request_id=f"new-{unique}")
    assert raised.value.reason == "RUN_DELETED"
    with pytest.raises(InvalidArgumentError) as reused:
        await tracking.log_batch(run_id, [Metric("m", 9.0, 1, 1)], request_id=f"few-{unique}")
    assert reused.value.reason == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (_headers.REQUEST_ID_HEADER, "job-é"),
        (_headers.REQUEST_ID_HEADER, "job-42\n"),
        ("x-team", "日本"),
        ("X-Team", "vision"),
    ],
)
async def test_metadata_no_header_can_carry_is_refused_naming_it(
    tracking: cairn.TrackingClient, run_id: str, header: str, value: str
) -> None:
    """gRPC sends header values of printable ASCII under lower-case names only, and
    refuses any other with an error of its own: no CairnError, no status, no name of
    what was wrong ("Failed execute_batch")."""
    metadata = [(header, value)]
    writes = (
        lambda: tracking.log_param(run_id, "p", "v", metadata=metadata),
        lambda: tracking.log_batch(run_id, [_POINT], metadata=metadata),
        lambda: tracking.get_run(run_id, metadata=metadata),
        lambda: tracking.get_metric_history(run_id, "m", metadata=metadata),  # a stream
    )
    for write in writes:
        with pytest.raises(InvalidArgumentError) as raised:
            await write()
        assert [field for field, _ in raised.value.field_violations] == [f"metadata[{header}]"]
    assert await _values(tracking, run_id, "m") == []


async def test_headers_may_be_given_as_bytes_as_grpc_takes_them(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """gRPC takes a header's name and value as str or bytes."""
    await tracking.log_param(run_id, "p", "v", metadata=[(b"x-team", b"vision")])  # type: ignore[list-item]
    assert (await tracking.get_run(run_id)).data.params == {"p": "v"}
