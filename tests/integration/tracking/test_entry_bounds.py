"""A page of runs is bounded by its entries (params, tags, metric keys and inputs) as well
as by its bytes: runs made of many tiny entries are read in smaller pages, each whole,
its token continuing after its last run. Pages of ordinary runs are unchanged, and runs
of many entries, whose answers are built off the event loop, are read whole.

The runs of many entries are written with SQL, as fast as it goes: each is within what
log_batch would take (its run_sizes total is below the bound)."""

import uuid
from typing import cast

import asyncpg
import grpc

import cairn
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn.types import Param, RunTag
from cairn_server.common import answers
from cairn_server.tracking.store import pages, sizes
from cairn_server.tracking.store.runs import RUN_COLUMNS, RUN_FROM

from .rows_read import ExplainingConnection, read_in, scans_of

# Two such runs fit a page's entries, three do not; each is about 3.3 MB, within a run's
# bound (4 MiB), and three are far within a page's bytes.
ENTRIES_PER_RUN = sizes.MAX_PAGE_LOAD_ENTRIES * 9 // 20


async def _tag_many(pool: asyncpg.Pool, run_ids: list[str], count: int) -> None:
    """Gives each run count tags, "<n in hex>" = "", and counts them into run_sizes."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO tracking.tags (run_id, key, value)
               SELECT r, to_hex(g), '' FROM unnest($1::uuid[]) r, generate_series(1, $2) g""",
            [uuid.UUID(run_id) for run_id in run_ids],
            count,
        )
        await conn.execute(
            """UPDATE tracking.run_sizes SET bytes = tracking.run_bytes(run_id)
               WHERE run_id = ANY($1::uuid[])""",
            [uuid.UUID(run_id) for run_id in run_ids],
        )
        held = await conn.fetchval(
            "SELECT max(bytes) FROM tracking.run_sizes WHERE run_id = ANY($1::uuid[])",
            [uuid.UUID(run_id) for run_id in run_ids],
        )
    assert held <= sizes.bound_for(16 * 1024 * 1024)


def _many_tags(count: int) -> dict[str, str]:
    return {format(n, "x"): "" for n in range(1, count + 1)}


async def test_a_page_stops_before_the_run_past_its_entries_and_continues_after_it(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    runs = [(await tracking.create_run(experiment_id, start_time=n)).info.run_id for n in (1, 2, 3)]
    await _tag_many(pool, runs, ENTRIES_PER_RUN)
    newest_first = runs[::-1]

    first = await tracking.search_runs(experiment_id, max_results=1000)
    assert [run.info.run_id for run in first] == newest_first[:2]
    assert first.token
    second = await tracking.search_runs(experiment_id, max_results=1000, page_token=first.token)
    assert [run.info.run_id for run in second] == newest_first[2:]
    assert not second.token
    for run in [*first, *second]:
        assert run.data.tags == _many_tags(ENTRIES_PER_RUN)


async def test_a_columnar_page_stops_there_too(
    server_port: int, tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    runs = [(await tracking.create_run(experiment_id, start_time=n)).info.run_id for n in (1, 2, 3)]
    await _tag_many(pool, runs, ENTRIES_PER_RUN)
    request = api.SearchRunsRequest(experiment_ids=[experiment_id], page_size=1000, columnar=True)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}", options=options) as channel:
        stub = rpc.TrackingServiceStub(channel)
        first = await stub.SearchRuns(request)
        request.page_token = first.next_page_token
        second = await stub.SearchRuns(request)
    assert list(first.columns.run_ids) == [run_id for run_id in runs[::-1][:2]]
    assert list(first.columns.tag_counts) == [ENTRIES_PER_RUN] * 2
    assert first.next_page_token
    assert list(second.columns.run_ids) == [runs[0]]
    assert not second.next_page_token


async def test_pages_of_ordinary_runs_are_whole_beside_a_run_of_many_entries(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool, unique: str
) -> None:
    """A run of many entries elsewhere makes every page count its runs' entries; a page
    of runs of a few entries each still holds all it asks for."""
    elsewhere = await tracking.create_experiment(f"many-{unique}")
    large = (await tracking.create_run(elsewhere)).info.run_id
    await _tag_many(pool, [large], ENTRIES_PER_RUN)
    runs = []
    for n in range(40):
        run_id = (await tracking.create_run(experiment_id, start_time=n + 1)).info.run_id
        await tracking.log_batch(
            run_id,
            params=[Param(f"p{i}", f"{n}-{i}") for i in range(10)],
            tags=[RunTag(f"t{i}", f"{n}-{i}") for i in range(10)],
        )
        runs.append(run_id)

    page = await tracking.search_runs(experiment_id, max_results=1000)
    assert [run.info.run_id for run in page] == runs[::-1]
    assert not page.token
    for run, n in zip(page, range(39, -1, -1), strict=True):
        assert run.data.params == {f"p{i}": f"{n}-{i}" for i in range(10)}
        assert run.data.tags == {f"t{i}": f"{n}-{i}" for i in range(10)}


async def test_a_page_reads_only_its_own_runs_rows_beside_runs_of_many_entries(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool, unique: str
) -> None:
    """A page's runs' rows are looked up in each table's primary key. PostgreSQL plans a
    lookup of any run by the table's average rows a run, which a few runs of many tags
    raise to thousands: it then scanned the whole table for each run of the page, 1.75 s
    a page of 25 runs over 650,000 tags instead of 1 ms, for every search and get_run."""
    elsewhere = await tracking.create_experiment(f"many-{unique}")
    large = [(await tracking.create_run(elsewhere)).info.run_id for _ in range(2)]
    await _tag_many(pool, large, 20_000)
    await pool.execute("ANALYZE tracking.tags")
    runs = [uuid.UUID((await tracking.create_run(experiment_id)).info.run_id) for _ in range(5)]
    for run_id in runs:
        await tracking.set_tag(run_id.hex, "team", "vision")

    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.run_id = ANY($1)", runs
        )
        explaining = ExplainingConnection(conn)
        page = await pages.load_page(cast(asyncpg.Connection, explaining), rows)

    assert [run.tags for run in page.runs()] == [{"team": "vision"}] * 5
    [plan] = explaining.plans
    assert read_in(plan, "tags") == 5
    assert scans_of(plan, "tags") == [("Index Scan", "tags_pkey")]


async def test_a_run_of_many_entries_is_read_whole(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    """Its answer, more entries than are built on the event loop, is built off it."""
    count = answers.ON_LOOP_ENTRIES * 4
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_batch(run_id, params=[Param("p", "v")])
    await _tag_many(pool, [run_id], count)

    run = await tracking.get_run(run_id)
    assert run.data.tags == _many_tags(count)
    assert run.data.params == {"p": "v"}
    [found] = await tracking.search_runs(experiment_id)
    assert found.data.tags == _many_tags(count)
    table = await tracking.search_runs_table(experiment_id)
    assert list(table["run_id"]) == [run_id]
    assert table["tags.ff"][0] == ""
