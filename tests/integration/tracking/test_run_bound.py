"""What a run holds is bounded, so that every run is read whole in one message: a write
that would pass the bound is refused whole, by every write path, and a run at its
bound is still read by get_run and search_runs.

The server's largest message is 1 MiB here, so a run holds 256 KiB: each param, tag,
metric key and input counts its strings' bytes in UTF-8 and 32 more."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn.exceptions import InvalidArgumentError, from_grpc_error
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc
from cairn.types import Metric, Param, RunInput, RunTag
from cairn_server.common import database, paging, server
from cairn_server.common.config import Config
from cairn_server.common.service import Unservable
from cairn_server.tracking import SPEC as TRACKING
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store import search, sizes, writes
from cairn_server.tracking.store.run_filters import RunQuery
from tests.conftest import eventually, serving, with_overrides

BOUND = sizes.bound_for(1024 * 1024)
ENTRY = sizes.ENTRY_BYTES
TAG_ENTRY = 4 + 8_000 + ENTRY  # "tNNN" and the longest value


@pytest.fixture
async def tracking(small_messages: int) -> AsyncIterator[cairn.TrackingClient]:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as client:
        yield client


async def _held(pool: asyncpg.Pool, run_id: str) -> int:
    """What the run holds, counted from its rows."""
    return await pool.fetchval("SELECT tracking.run_bytes($1)", uuid.UUID(run_id))


async def _run_holding(tracking: cairn.TrackingClient, unique: str, held: int) -> str:
    """A run whose tags take exactly held bytes."""
    experiment_id = await tracking.create_experiment(f"bound-{unique}")
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    tags: list[RunTag] = []
    left = held
    while left > TAG_ENTRY:
        tags.append(RunTag(f"t{len(tags):03}", "€" * 2_666 + "xx"))  # 8,000 bytes
        left -= TAG_ENTRY
    assert left >= 4 + ENTRY
    tags.append(RunTag("last", "x" * (left - 4 - ENTRY)))
    await tracking.log_batch(run_id, tags=tags)
    return run_id


Write = Callable[[cairn.TrackingClient, str], Awaitable[object]]
LONG_KEY = "k" * 100  # an entry of 132 bytes or more
# Each adds more than 100 bytes to the run.
WRITES: dict[str, Write] = {
    "log_metric": lambda t, run: t.log_metric(run, LONG_KEY, 1.0),
    "log_batch, a few points": lambda t, run: t.log_batch(run, [Metric(LONG_KEY, 1.0, 0, 0)]),
    "log_batch, many points": lambda t, run: t.log_batch(
        run, [Metric(LONG_KEY, float(n), 0, n) for n in range(100)]
    ),
    "log_param": lambda t, run: t.log_param(run, LONG_KEY, "v"),
    "set_tag": lambda t, run: t.set_tag(run, LONG_KEY, "v"),
    "log_inputs": lambda t, run: t.log_inputs(run, [RunInput(uri="s3://b/" + LONG_KEY)]),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_a_write_past_the_bound_is_refused_whole(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str, write: Write
) -> None:
    run_id = await _run_holding(tracking, unique, BOUND - 100)
    await tracking.log_metric(run_id, "m", 1.0, step=0)  # 1 + 32 bytes: fits
    before = await tracking.get_run(run_id)
    with pytest.raises(InvalidArgumentError) as refused:
        await write(tracking, run_id)
    assert refused.value.reason == "RUN_TOO_LARGE"
    assert await tracking.get_run(run_id) == before
    assert await _held(pool, run_id) == BOUND - 100 + 33
    # Points of a key the run has add nothing: taken at the bound too.
    await tracking.log_batch(run_id, [Metric("m", float(n), 0, n) for n in range(1, 100)])
    assert (await tracking.get_run(run_id)).data.metrics == {"m": 99.0}


async def test_a_run_at_its_bound_is_read_whole(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """Tags of three bytes a character, about 790 kB on the wire at most, well within
    the 1 MiB message a run with no bound passed."""
    run_id = await _run_holding(tracking, unique, BOUND)
    assert await _held(pool, run_id) == BOUND
    run = await tracking.get_run(run_id)
    assert sum(len(k) + len(v.encode()) + ENTRY for k, v in run.data.tags.items()) == BOUND
    found = await tracking.search_runs(run.info.experiment_id)
    assert [r.data.tags for r in found] == [run.data.tags]
    with pytest.raises(InvalidArgumentError):
        await tracking.log_param(run_id, "p", "v")


async def test_replaced_and_deleted_tags_leave_room(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A replaced tag counts its new value in place of the old, and a deleted one frees
    its room: at the bound, a tag is replaced again and again."""
    run_id = await _run_holding(tracking, unique, BOUND - 100)
    for n in range(40):  # 40 times a tag of 8 kB: five times the room
        await tracking.set_tag(run_id, "t000", f"{n:08}" + "x" * 7_992)
    await tracking.delete_tag(run_id, "t001")
    await tracking.set_tag(run_id, "t999", "€" * 2_666)
    assert await _held(pool, run_id) == BOUND - 100 - TAG_ENTRY + 4 + 7_998 + ENTRY


async def _total(pool: asyncpg.Pool, run_id: str) -> int:
    return await pool.fetchval(
        "SELECT bytes FROM tracking.run_sizes WHERE run_id = $1", uuid.UUID(run_id)
    )


FITTING: dict[str, Write] = {
    "set_tag": lambda t, run: t.set_tag(run, "new", "v" * 100),
    "log_metric": lambda t, run: t.log_metric(run, "k" * 100, 1.0),
    "log_batch, many points": lambda t, run: t.log_batch(
        run, [Metric("k" * 100, float(n), 0, n) for n in range(100)]
    ),
}


@pytest.mark.parametrize("write", FITTING.values(), ids=FITTING.keys())
async def test_a_write_that_fits_is_taken_though_the_total_is_above(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str, write: Write
) -> None:
    """Two writes racing to add the same new key both count it, so a run's total may be
    above what it holds. A write that fits what the run holds is still taken: past the
    bound, the run is counted exactly and the write tried again."""
    run_id = await _run_holding(tracking, unique, BOUND - 1_000)
    await pool.execute(
        "UPDATE tracking.run_sizes SET bytes = bytes + 10000 WHERE run_id = $1",
        uuid.UUID(run_id),
    )
    await write(tracking, run_id)
    assert await _total(pool, run_id) == await _held(pool, run_id) <= BOUND


async def test_a_run_inserted_by_another_server_version_is_bounded(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A server of the version before the bound, still running during a rolling upgrade,
    inserts runs without a total: the database gives each one."""
    experiment_id = await tracking.create_experiment(f"older-{unique}")
    run_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO tracking.runs (run_id, project, experiment_id, run_name, status,
               start_time, artifact_uri)
           VALUES ($1, 'default', $2, 'older', 1, 1, '')""",
        run_id,
        int(experiment_id),
    )
    assert await _total(pool, run_id.hex) == 0
    tags = [RunTag(f"t{n:03}", "x" * 8_000) for n in range(BOUND // TAG_ENTRY + 1)]
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.log_batch(run_id.hex, tags=tags)
    assert refused.value.reason == "RUN_TOO_LARGE"


async def test_a_refused_batch_claims_no_request_id(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    """Refused whole: the same batch with the same request id is applied once there is
    room."""
    run_id = await _run_holding(tracking, unique, BOUND - 100)
    batch: dict[str, Any] = {"params": [Param("p", "v" * 1_000)], "request_id": f"batch-{unique}"}
    with pytest.raises(InvalidArgumentError):
        await tracking.log_batch(run_id, **batch)
    await tracking.delete_tag(run_id, "t000")
    await tracking.log_batch(run_id, **batch)
    assert (await tracking.get_run(run_id)).data.params == {"p": "v" * 1_000}


async def test_two_batches_that_fit_only_one_at_a_time_are_not_both_taken(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    run_id = await _run_holding(tracking, unique, BOUND - 10_000)
    outcomes = await asyncio.gather(
        *(tracking.log_batch(run_id, params=[Param(key, "x" * 6_000)]) for key in ("a", "b")),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, InvalidArgumentError)]
    assert len(refused) == 1 and refused[0].reason == "RUN_TOO_LARGE"
    assert await _held(pool, run_id) == BOUND - 10_000 + 1 + 6_000 + ENTRY


async def test_a_run_created_with_tags_past_the_bound_is_refused(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    experiment_id = await tracking.create_experiment(f"bound-create-{unique}")
    tags = {f"t{n:03}": "x" * 8_000 for n in range(BOUND // TAG_ENTRY + 1)}
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.create_run(experiment_id, tags=tags)
    assert refused.value.reason == "RUN_TOO_LARGE"
    assert not await tracking.search_runs(experiment_id)


async def test_the_running_total_is_what_the_run_holds(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """Written one call at a time through every path, replacing and deleting entries, a
    run's total is exact: only writes racing on the same keys leave it above."""
    experiment_id = await tracking.create_experiment(f"total-{unique}")
    run_id = (await tracking.create_run(experiment_id, tags={"a": "€" * 10})).info.run_id
    await tracking.log_metric(run_id, "loss", 1.0)
    await tracking.log_metric(run_id, "loss", 0.5, step=1)
    await tracking.log_batch(run_id, [Metric(f"m{n % 3}", 1.0, 0, n) for n in range(10)])
    await tracking.log_batch(run_id, [Metric(f"m{n % 4}", 1.0, 0, n) for n in range(100)])
    await tracking.log_batch(run_id, params=[Param("p", "1"), Param("q", "22")])
    await tracking.log_param(run_id, "p", "1")
    await tracking.log_batch(run_id, tags=[RunTag("a", "shorter"), RunTag("b", "x" * 300)])
    await tracking.set_tag(run_id, "b", "y")
    await tracking.delete_tag(run_id, "a")
    inputs = [RunInput(uri="s3://b/train", name="train"), RunInput(uri="s3://b/test")]
    await tracking.log_inputs(run_id, inputs)
    await tracking.log_inputs(run_id, [RunInput(uri="s3://b/train", name="renamed")])
    assert await _total(pool, run_id) == await _held(pool, run_id) > 0


async def test_an_input_repeated_in_one_call_is_counted_once(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """An input given 200 times in one call (2 KB each) is one row, and the run counts
    it once. Each copy was counted before: the call was refused RUN_TOO_LARGE, and 1,000
    copies of a smaller one grew the run by what 1,000 rows hold. The last copy is the
    one kept, as a later call would replace it."""
    experiment_id = await tracking.create_experiment(f"repeated-{unique}")
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    uri = "s3://b/" + "x" * 2_000
    await tracking.log_inputs(run_id, [RunInput(uri, name=f"copy-{n}") for n in range(200)])
    assert await _total(pool, run_id) == await _held(pool, run_id)
    assert [i.name for i in (await tracking.get_run(run_id)).inputs] == ["copy-199"]


async def test_a_page_loads_only_the_runs_that_its_budget_holds(
    tracking: cairn.TrackingClient,
    pool: asyncpg.Pool,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of 1,000 runs at their bound would load GiBs: a page loads the runs whose
    totals fit its budget together, and its token continues after them. The budget is
    two runs here and a page cut by it alone, so the pages hold two runs each."""
    experiment_id = await tracking.create_experiment(f"loads-{unique}")
    run_ids = []
    for n in range(7):
        run_id = (await tracking.create_run(experiment_id, start_time=7 - n)).info.run_id
        await tracking.set_tag(run_id, "t", "x" * 8_000)  # 8,033 bytes
        run_ids.append(run_id)
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 2 * 8_033)
    query = RunQuery("default", [int(experiment_id)], "", [], ViewType.ACTIVE_ONLY, 1000, "")
    pages = []
    while True:
        page, token = await search.search_page(pool, query)
        pages.append([info.run_id for info in page.infos])
        if not token:
            break
        query = dataclasses.replace(query, page_token=token)
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert [run_id for p in pages for run_id in p] == run_ids


async def test_a_server_whose_messages_cannot_carry_a_stored_run_does_not_start(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """Runs written under 2 MiB messages hold up to 512 KiB; a server of 1 MiB messages
    could not send one of more than 320 KiB beside its framing (64 KiB) and the longest
    page token (640 KiB)."""
    async with (
        serving(config, pool, ["tracking"], max_message_bytes=2 * 1024 * 1024) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as larger,
    ):
        run_id = await _run_holding(larger, unique, 320 * 1024 + 1)
    try:
        # A server that started would serve until stopped: the timeout fails the test.
        with pytest.raises(Unservable) as refused:
            async with asyncio.timeout(60):
                await server.run(with_overrides(config, max_message_bytes=1024 * 1024), [TRACKING])
        assert "CAIRN_MAX_MESSAGE_BYTES=1048576" in str(refused.value)
        assert "serve with CAIRN_MAX_MESSAGE_BYTES of at least" in str(refused.value)
    finally:  # no later server of this session is to be refused for it
        await pool.execute("DELETE FROM tracking.runs WHERE run_id = $1", uuid.UUID(run_id))


async def _run_counted_past_the_largest_bound(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> tuple[str, int]:
    """A run of 10,000 bytes whose total says more than any server's bound, as racing
    writes may leave it; and that bound."""
    run_id = await _run_holding(tracking, unique, 10_000)
    largest_bound = sizes.bound_for(Config().max_message_bytes)
    await pool.execute(
        "UPDATE tracking.run_sizes SET bytes = $2 WHERE run_id = $1",
        uuid.UUID(run_id),
        largest_bound + 1,
    )
    return run_id, largest_bound


async def test_runs_past_a_bound_are_counted_exactly_before_a_server_is_refused(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A total racing writes left above what its run holds refuses no server."""
    run_id, largest_bound = await _run_counted_past_the_largest_bound(tracking, pool, unique)
    assert await sizes.held_past(pool, largest_bound) == (0, 0)
    assert await _total(pool, run_id) == await _held(pool, run_id) == 10_000


async def test_the_start_up_check_outlasts_the_statement_timeout(
    config: Config, tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """The check may wait on writes that hold the runs it counts (or count many runs):
    cut short by the statement timeout, it would fail every start with a traceback."""
    run_id, largest_bound = await _run_counted_past_the_largest_bound(tracking, pool, unique)
    timeout = 0.05
    strict = await database.create_pool(
        config.database_url, with_overrides(config, db_statement_timeout_seconds=timeout)
    )
    try:
        async with pool.acquire() as writer:
            holding = writer.transaction()
            await holding.start()
            await writer.execute(
                "SELECT 1 FROM tracking.run_sizes WHERE run_id = $1 FOR UPDATE", uuid.UUID(run_id)
            )
            checking = asyncio.create_task(sizes.held_past(strict, largest_bound))

            async def waited_past_the_timeout() -> bool:
                return checking.done() or await pool.fetchval(
                    """SELECT count(*) > 0 FROM pg_stat_activity
                       WHERE wait_event_type = 'Lock' AND query LIKE '%run_sizes WHERE bytes%'
                         AND clock_timestamp() - query_start > $1 * interval '1 second'""",
                    4 * timeout,
                )

            await eventually(waited_past_the_timeout, what="the check waiting on the write")
            await holding.rollback()
        assert await checking == (0, 0)
    finally:
        await database.close_pool(strict)


async def test_a_start_up_check_kept_waiting_by_a_held_run_refuses_with_why(
    config: Config,
    tracking: cairn.TrackingClient,
    pool: asyncpg.Pool,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await _run_holding(tracking, unique, 10_000)
    await pool.execute(  # a total no response carries, as racing writes may leave one
        "UPDATE tracking.run_sizes SET bytes = $2 WHERE run_id = $1",
        uuid.UUID(run_id),
        config.max_message_bytes,
    )
    monkeypatch.setattr(sizes, "HELD_RUN_WAIT_SECONDS", 0.2)
    assert TRACKING.servable is not None
    async with pool.acquire() as writer, writer.transaction():
        await writer.execute(
            "SELECT 1 FROM tracking.run_sizes WHERE run_id = $1 FOR UPDATE", uuid.UUID(run_id)
        )
        with pytest.raises(Unservable, match="a transaction held one of them"):
            await TRACKING.servable(pool, config)
    assert await sizes.held_past(pool, sizes.bound_for(Config().max_message_bytes)) == (0, 0)


async def test_a_run_larger_than_64_mib_is_read_from_a_server_given_larger_messages(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A server may be given messages of up to 2 GiB, and a run may hold a quarter of
    that; the client took answers of 64 MiB at most, so get_run of such a run failed
    with RESOURCE_EXHAUSTED on the client's side."""
    tag_bytes = 8_000 * 4  # the longest value, of 4-byte characters
    tags = 65 * 1024 * 1024 // tag_bytes + 1
    async with (
        serving(config, pool, ["tracking"], max_message_bytes=2**31 - 1) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        run_id = (await client.create_run(await client.create_experiment(unique))).info.run_id
        value = "\U0001f525" * 8_000
        for first in range(0, tags, 1_000):
            batch = [RunTag(f"t{i}", value) for i in range(first, min(first + 1_000, tags))]
            await client.log_batch(run_id, tags=batch)
        run = await client.get_run(run_id)
    assert len(run.data.tags) == tags and run.data.tags["t0"] == value


async def test_recorded_writes_refused_at_the_bound_do_not_drain_the_pool(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A write recorded by its request id (set_tag, log_param, log_inputs) runs in its
    call's transaction, on a connection it holds to the end. Refused at the bound, it
    took a second connection to count the run exactly: as many such calls as the pool
    holds waited for each other's until the pool's wait ran out, and failed
    DATABASE_BUSY instead of RUN_TOO_LARGE, with every other call of the server stalled."""
    small = with_overrides(config, db_pool_size=3, db_pool_min_size=1, db_acquire_timeout_seconds=1)
    few = await database.create_pool(small.database_url, small)  # pool: migrated
    try:
        async with (
            serving(small, few, ["tracking"], max_message_bytes=1024 * 1024) as port,
            cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking,
        ):
            run_id = await _run_holding(tracking, unique, BOUND - 100)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)

                async def set_tag(n: int) -> str:
                    request = tracking_service_pb2.SetTagRequest(
                        run_id=run_id, tag=tracking_pb2.Tag(key=f"{n}{LONG_KEY}", value="v")
                    )
                    try:
                        await stub.SetTag(request, metadata=[("x-cairn-request-id", f"t{n}")])
                    except grpc.aio.AioRpcError as error:
                        return from_grpc_error(error).reason or ""
                    return "OK"

                reasons = await asyncio.gather(*(set_tag(n) for n in range(12)))
            assert reasons == ["RUN_TOO_LARGE"] * 12
            await tracking.set_tag(run_id, "m", "v")  # what fits is still taken
    finally:
        await database.close_pool(few)


def _noting_batch_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of each batch write tried from now on (its transaction begun)."""
    written: list[tuple[Any, ...]] = []
    write = writes.RunWriter._write

    async def noted(self: Any, *args: Any) -> Any:
        written.append(args)
        return await write(self, *args)

    monkeypatch.setattr(writes.RunWriter, "_write", noted)
    return written


async def test_a_batch_larger_than_any_run_is_refused_before_it_is_written(
    tracking: cairn.TrackingClient, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose own keys pass the bound can never fit, whatever the run holds. It
    was written whole, refused, counted, written whole again and refused: seconds and
    hundreds of MB for a large one. Now it is refused before any write."""
    experiment_id = await tracking.create_experiment(f"huge-{unique}")
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    written = _noting_batch_writes(monkeypatch)
    keys = [f"{n:04}" + "k" * 246 for n in range(BOUND // (250 + ENTRY) + 1)]
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.log_batch(run_id, [Metric(key, 1.0, 0, 0) for key in keys])
    assert refused.value.reason == "RUN_TOO_LARGE"
    assert written == []
    await tracking.log_batch(run_id, [Metric(key, 1.0, 0, 0) for key in keys[:-1]])  # fits
    assert len(written) == 1
