"""Runs whose params and tags take more than the largest message a server sends are
still searched: a page holds the runs that fit and its token continues after them."""

import itertools

import grpc
import pytest

import cairn
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn.types import Param, Run, RunTag

RUNS = 8
MESSAGE = 1024 * 1024  # small_messages' largest message
# What a response keeps for framing, and what its count of a run's framing may pass the
# wire's by.
RESPONSE_ROOM = 64 * 1024
RUN_FRAMING_SLACK = 1024


def _values(run: int) -> dict[str, str]:
    """About 80 kB of params and tags in UTF-8, 240 kB for every other run ("€" takes
    three bytes, one character), within the 256 KiB a run holds here."""
    letter = "€" if run % 2 else "x"
    return {f"k{n}": f"{run}-{n}-" + letter * 4_000 for n in range(20)}


@pytest.fixture
async def large_runs(small_messages: int, unique: str) -> tuple[str, list[str]]:
    """An experiment of RUNS runs, 1.3 MB of params and tags in all; their ids newest
    first (the search's order)."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        experiment_id = await tracking.create_experiment(f"large-{unique}")
        run_ids = []
        for run in range(RUNS):
            run_id = (await tracking.create_run(experiment_id, start_time=run + 1)).info.run_id
            values = list(_values(run).items())
            await tracking.log_batch(
                run_id,
                params=[Param(k, v) for k, v in values[:10]],
                tags=[RunTag(k, v) for k, v in values[10:]],
            )
            run_ids.append(run_id)
    return experiment_id, run_ids[::-1]


async def test_a_search_of_runs_larger_than_a_message_is_answered_in_pages(
    small_messages: int, large_runs: tuple[str, list[str]]
) -> None:
    experiment_id, newest_first = large_runs
    found: list[Run] = []
    token: str | None = ""
    pages = 0
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        while True:
            page = await tracking.search_runs(experiment_id, max_results=1000, page_token=token)
            found += page
            pages += 1
            if not (token := page.token):
                break
        table = await tracking.search_runs_table(experiment_id)
    assert pages > 1
    assert [run.info.run_id for run in found] == newest_first
    for run, index in zip(found, range(RUNS - 1, -1, -1), strict=True):
        assert {**run.data.params, **run.data.tags} == _values(index)
    assert list(table["run_id"]) == newest_first


async def test_pages_of_runs_as_messages_are_cut_too(
    small_messages: int, large_runs: tuple[str, list[str]]
) -> None:
    """The same search answered run by run (columnar unset), as grpcurl asks. A page
    stops only before a run that would not fit: it fills its message, less the room
    kept for framing and the token."""
    experiment_id, newest_first = large_runs
    request = api.SearchRunsRequest(experiment_ids=[experiment_id], page_size=1000)
    replies = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_messages}") as channel:
        stub = rpc.TrackingServiceStub(channel)
        while True:
            replies.append(reply := await stub.SearchRuns(request))
            request.page_token = reply.next_page_token
            if not request.page_token:
                break
    assert len(replies) > 1
    assert [run.info.run_id for reply in replies for run in reply.runs] == newest_first
    for reply, following in itertools.pairwise(replies):
        room = MESSAGE - RESPONSE_ROOM - RUN_FRAMING_SLACK * len(reply.runs)
        assert reply.ByteSize() + following.runs[0].ByteSize() > room


async def test_a_search_ordered_by_long_values_pages_on(small_messages: int, unique: str) -> None:
    """A page token holds its last run's sort values: params of 6,000 characters of four
    bytes each in UTF-8, four of them in the order."""
    longest = "\U0001f600" * 6_000
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        experiment_id = await tracking.create_experiment(f"long-order-{unique}")
        run_ids = []
        for n in range(3):
            run_id = (await tracking.create_run(experiment_id)).info.run_id
            params = [Param(f"p{k}", longest[:-1] + str(n)) for k in range(4)]
            await tracking.log_batch(run_id, params=params)
            run_ids.append(run_id)
        order = [f"params.p{k} ASC" for k in range(4)]
        found, token = [], None
        while True:
            page = await tracking.search_runs(
                experiment_id, order_by=order, max_results=1, page_token=token
            )
            found += [run.info.run_id for run in page]
            if not (token := page.token):
                break
    assert found == run_ids


async def test_a_page_keeps_room_for_a_long_token(small_messages: int, unique: str) -> None:
    """Ordered by ten tags of 8,000 control characters, the token after a run takes
    640,000 bytes (each character six in JSON, then base64's third more): pages hold
    fewer runs, and every one still fits its message."""
    order = [f"tags.t{k} ASC" for k in range(10)]
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        experiment_id = await tracking.create_experiment(f"long-token-{unique}")
        run_ids = []
        for n in range(20):
            run_id = (await tracking.create_run(experiment_id)).info.run_id
            value = "\x01" * 7_998 + f"{n:02}"
            await tracking.log_batch(run_id, tags=[RunTag(f"t{k}", value) for k in range(10)])
            run_ids.append(run_id)
        found, pages, token = [], 0, None
        while True:
            page = await tracking.search_runs(
                experiment_id, order_by=order, max_results=1000, page_token=token
            )
            found += [run.info.run_id for run in page]
            pages += 1
            if not (token := page.token):
                break
    assert found == run_ids
    assert pages > 2
