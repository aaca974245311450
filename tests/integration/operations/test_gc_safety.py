"""What a garbage collection must never remove: files written under a location after
it was let go of, files no experiment owns under a location chosen by hand, and an
experiment someone restores; and it must get through a run of any size."""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import asyncpg
import pytest

import cairn
from cairn.exceptions import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from cairn.types import Metric, Operation, OperationState, Param, RunInput, RunTag
from cairn_server import catalog
from cairn_server.artifacts.publication import PUBLISHES_OF_PROJECT
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.errors import FailedPrecondition
from cairn_server.common.idempotency import Idempotency
from cairn_server.common.server import CairnServer
from cairn_server.common.service import Resources
from cairn_server.operations import queue
from cairn_server.operations.model import State
from cairn_server.operations.runner import Runner
from cairn_server.operations.store import OperationStore
from cairn_server.tracking.store import purge
from tests.conftest import (
    HeldBack,
    another_transaction,
    eventually,
    holds_up_another,
    new_project,
    with_overrides,
)
from tests.integration.tracking.rows_read import ExplainingConnection, read_in

NOW = datetime.timedelta(0)
NOTHING_DELETED_YET = datetime.timedelta(days=3650)  # a cut-off before every deletion


@pytest.fixture
async def ports(
    config: Config, pool: asyncpg.Pool, server_port: int
) -> AsyncIterator[dict[str, int]]:
    """Tracking and artifacts apart, and all services together ("all", the session's
    server), on one database."""
    quiet = with_overrides(config, artifact_janitor_interval_seconds=0)  # drained by GCs only
    servers = {
        name: CairnServer(quiet, catalog.select([name]), pool) for name in ("tracking", "artifacts")
    }
    ports = {name: await server.start() for name, server in servers.items()}
    yield {**ports, "all": server_port}
    for server in servers.values():
        await server.stop(grace=0)


async def _collect(client: cairn.Client, older_than: datetime.timedelta) -> Operation:
    started = await client.operations.start_garbage_collection(older_than)
    done = await client.operations.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED, done.errors
    return done


async def _assert_purged(client: cairn.Client, run_id: str) -> None:
    """The run is gone for good. (A collection's count takes in every project's deleted
    runs, other tests' too.)"""
    with pytest.raises(NotFoundError):
        await client.tracking.get_run(run_id)


@pytest.mark.parametrize("drained_by", ["artifacts", "all"])
async def test_a_location_reused_before_it_is_drained_keeps_what_was_written_since(
    ports: dict[str, int], drained_by: str, unique: str
) -> None:
    project = await new_project(ports["all"], f"reuse-{unique}")
    location = f"cairn-artifacts://{project}/team/churn"

    def connect(service: str) -> cairn.Client:
        return cairn.Client(f"http://127.0.0.1:{ports[service]}", project=project)

    async with connect("tracking") as tracking, connect(drained_by) as drainer:
        old = await tracking.tracking.create_experiment("churn", artifact_location=location)
        old_run = await tracking.tracking.create_run(old)
        old_root = old_run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await drainer.artifacts.upload(f"{old_root}/old.bin", b"o" * 10)
        await tracking.tracking.delete_experiment(old)
        await _collect(tracking, NOW)  # the rows go, the run's directory is queued

        new = await tracking.tracking.create_experiment("churn", artifact_location=location)
        run = await tracking.tracking.create_run(new)
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await drainer.artifacts.upload(f"{root}/model.bin", b"m" * 100)
        await _collect(drainer, NOTHING_DELETED_YET)

        assert (await drainer.artifacts.stat(f"{root}/model.bin")).size == 100
        with pytest.raises(NotFoundError):  # the old run's own, which no run takes again
            await drainer.artifacts.stat(f"{old_root}/old.bin")


@pytest.mark.parametrize("drained_by", ["artifacts", "all"])
async def test_a_collected_runs_directory_keeps_nothing_written_late_and_takes_no_more(
    ports: dict[str, int], pool: asyncpg.Pool, drained_by: str, unique: str, tmp_path: Path
) -> None:
    """A write that outlived its run (a log_artifacts still sending as the run was
    collected) was kept as a reuse's, under a directory no run owns, past every later
    collection. A run's directory is its own, no run has its id again: from its queueing
    on it takes no file, and what a server of the release before wrote there after goes
    at the drain."""
    project = await new_project(ports["all"], f"closed-{unique}")

    def connect(service: str) -> cairn.Client:
        return cairn.Client(f"http://127.0.0.1:{ports[service]}", project=project)

    async with connect("tracking") as tracking, connect(drained_by) as drainer:
        run = await tracking.tracking.create_run(await tracking.tracking.create_experiment("c"))
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await drainer.artifacts.upload(f"{root}/first.bin", b"f")
        await tracking.tracking.delete_run(run.info.run_id)
        await _collect(tracking, NOW)  # the run goes, its directory is queued, not drained
        for late in ("late.bin", "deep/later.bin"):
            with pytest.raises(FailedPreconditionError) as refused:
                await drainer.artifacts.upload(f"{root}/{late}", b"l")
            assert refused.value.reason == "LOCATION_DELETED"
        for name in ("a", "b"):  # small files: one UploadFiles call
            (tmp_path / name).write_bytes(name.encode())
        with pytest.raises(FailedPreconditionError) as refused:
            await drainer.artifacts.upload_tree(f"{root}/tree", tmp_path)
        assert refused.value.reason == "LOCATION_DELETED"
        assert refused.value.metadata == {"path": f"{root}/tree/a"}
        await pool.execute(_PUBLISHED_BY_THE_VERSION_BEFORE, project, f"{root}/old.bin", unique)
        await _collect(drainer, NOTHING_DELETED_YET)  # drained

        assert await drainer.artifacts.list(root, recursive=True) == []
        with pytest.raises(FailedPreconditionError) as refused:
            await drainer.artifacts.upload(f"{root}/after.bin", b"x")
        assert refused.value.reason == "LOCATION_DELETED"


async def test_an_overwrite_by_a_server_of_the_version_before_is_kept(
    ports: dict[str, int], pool: asyncpg.Pool, unique: str
) -> None:
    """A server of the version before (a rolling update, a rollback) replaces an object
    without a word of when its upload began: the replaced upload's time stayed, and
    the drain took a reuse's bytes, written after the queueing, for the old owner's."""
    project = await new_project(ports["all"], f"rollback-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{ports['all']}", project=project) as client:
        experiment = await client.tracking.create_experiment("r")
        location = (await client.tracking.get_experiment(experiment)).artifact_location
        # A file of the experiment's own location, which one made by hand may name again.
        path = location.removeprefix(f"cairn-artifacts://{project}/") + "/x.bin"
        await client.artifacts.upload(path, b"old owner's")
        await client.tracking.delete_experiment(experiment)
        async with cairn.Client(
            f"http://127.0.0.1:{ports['tracking']}", project=project
        ) as tracking:
            await _collect(tracking, NOW)  # queued, not drained
        await pool.execute(_PUBLISHED_BY_THE_VERSION_BEFORE, project, path, f"older-{unique}")
        await _collect(client, NOTHING_DELETED_YET)
        assert (await client.artifacts.stat(path)).size == 5


# The upsert of a publication as servers before artifacts migration 0011 wrote it.
_PUBLISHED_BY_THE_VERSION_BEFORE = """
INSERT INTO artifacts.objects (project, path, size, sha256, content_type, storage_key)
VALUES ($1, $2, 5, repeat('0', 64), 'application/octet-stream', $3)
ON CONFLICT (project, path) DO UPDATE SET size = excluded.size,
    sha256 = excluded.sha256, content_type = excluded.content_type,
    storage_key = excluded.storage_key, request_id = excluded.request_id,
    update_time = clock_timestamp()"""


async def test_an_overwrite_committing_as_the_drain_reaches_it_is_kept(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """An object overwritten after its location was queued, whose publication is under
    way when the drain comes, is kept: the drain waits for it to commit and sees its
    new version. The interleaving is forced: an uncommitted garbage row under the key
    being replaced holds the publication just after it updated the object's row."""
    project = await new_project(server_port, f"overwrite-{unique}")
    path = "runs/r1/artifacts/model.bin"
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        await client.artifacts.upload(path, b"old bytes")
        replaced = await _storage_key(pool, project, path)
        async with pool.acquire() as conn:  # as a purge lets go of the run's directory
            await queue.enqueue(conn, [f"cairn-artifacts://{project}/runs/r1"])
        async with pool.acquire() as holder:
            held = holder.transaction()
            await held.start()
            try:
                await holder.execute(
                    "INSERT INTO artifacts.garbage (storage_key) VALUES ($1)", replaced
                )
                overwrite = asyncio.ensure_future(
                    client.artifacts.upload(path, b"new bytes", overwrite=True)
                )
                await eventually(
                    lambda: _waiting_on_a_lock(pool, "INSERT INTO artifacts.garbage"),
                    what="the publication waiting after its update of the object",
                )
                collected = asyncio.ensure_future(_collect(client, NOTHING_DELETED_YET))
                await eventually(
                    lambda: _waiting_on_a_lock(pool, _DRAIN_WAITING),
                    what="the drain waiting for the publication",
                )
            finally:
                await held.rollback()
        written = await overwrite
        await collected
        assert (await client.artifacts.stat(path)).sha256 == written.sha256
        new_key = await _storage_key(pool, project, path)
        assert not await pool.fetchval(
            "SELECT count(*) FROM artifacts.garbage WHERE storage_key = $1", new_key
        )


# The drain's wait for the publications of a project under way.
_DRAIN_WAITING = f"SELECT pg_advisory_xact_lock({PUBLISHES_OF_PROJECT})"


async def test_an_upload_publishing_when_its_location_is_drained_goes_with_it(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """An object inserted before its run's directory was queued, whose publication had
    not committed when the drain came, was invisible to the drain's DELETE: the
    location was marked done and the object kept for ever, past the cut-off. The drain
    now waits for publications under way. The interleaving is forced: a trigger holds
    the publication on a lock the test holds, just after its row was inserted."""
    project = await new_project(server_port, f"publishing-{unique}")
    hold = f"""CREATE FUNCTION public.hold_{unique}() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_advisory_xact_lock(7227); RETURN NEW; END $$"""
    trigger = f"""CREATE TRIGGER hold_{unique} AFTER INSERT ON artifacts.objects FOR EACH ROW
                  WHEN (NEW.project = '{project}') EXECUTE FUNCTION public.hold_{unique}()"""
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        experiment = await client.tracking.create_experiment("publishing")
        run = await client.tracking.create_run(experiment)
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await client.tracking.delete_run(run.info.run_id)
        async with pool.acquire() as holder:
            await holder.execute(hold)
            await holder.execute(trigger)
            await holder.execute("SELECT pg_advisory_lock(7227)")
            try:
                upload = asyncio.ensure_future(client.artifacts.upload(f"{root}/late.bin", b"x"))
                await eventually(
                    lambda: _waiting_on_a_lock(pool, "INSERT INTO artifacts.objects"),
                    what="the publication held after inserting its row",
                )
                collected = asyncio.ensure_future(_collect(client, NOW))
                drain_waits = asyncio.ensure_future(
                    eventually(lambda: _waiting_on_a_lock(pool, _DRAIN_WAITING), timeout=30)
                )
                await asyncio.wait([collected, drain_waits], return_when=asyncio.FIRST_COMPLETED)
            finally:
                await holder.execute("SELECT pg_advisory_unlock(7227)")
                await holder.execute(f"DROP TRIGGER hold_{unique} ON artifacts.objects")
                await holder.execute(f"DROP FUNCTION public.hold_{unique}()")
        await upload
        assert (await collected).counts["runs"] >= 1
        drain_waits.cancel()
        with pytest.raises(NotFoundError):
            await client.artifacts.stat(f"{root}/late.bin")


async def test_an_upload_begun_before_its_run_was_collected_does_not_outlive_it(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """An upload under way as its deleted run was collected published afterwards, and
    its object stayed under a directory no run owns, past every later collection: the
    drain keeps what is written after a location is queued (a reuse's). It now ends the
    uploads under the location begun before it was queued, as an expiry would."""
    project = await new_project(server_port, f"begun-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        experiment = await client.tracking.create_experiment("begun")
        run = await client.tracking.create_run(experiment)
        path = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/") + "/late.bin"
        source = HeldBack()
        upload = asyncio.ensure_future(client.artifacts.upload(path, source))  # type: ignore[arg-type]
        try:
            assert await asyncio.to_thread(source.under_way.wait, 30)
            assert await pool.fetchval(_UPLOADS_AT, project, path) == 1
            await client.tracking.delete_run(run.info.run_id)
            await _collect(client, NOW)
            await _assert_purged(client, run.info.run_id)
        finally:
            source.go.set()
        with pytest.raises(FailedPreconditionError) as ended:  # under a run's directory
            await upload
        assert ended.value.reason == "LOCATION_DELETED"
        await _collect(client, NOW)
        with pytest.raises(NotFoundError):
            await client.artifacts.stat(path)
        assert await pool.fetchval(_UPLOADS_AT, project, path) == 0


async def test_an_upload_its_completion_holds_as_its_run_is_drained_publishes_nothing(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """An upload a completion held (reading its object back, on S3) as its run's
    directory was drained was left to the completion, and the directory taken off the
    queue: what the completion published after stayed for good. The directory stays
    queued while such an upload is held, and takes no publication any more."""
    project = await new_project(server_port, f"held-{unique}")
    objects = ObjectStore(pool)
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        run = await client.tracking.create_run(await client.tracking.create_experiment("held"))
        path = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/") + "/big.bin"
        upload = await objects.begin(project, path, overwrite=False)
        completion = uuid.uuid4()  # a lease as a completion takes it (leases.py)
        await pool.execute(
            """UPDATE artifacts.uploads SET completion = $2,
                   completing_until = clock_timestamp() + interval '1 hour'
               WHERE upload_id = $1""",
            upload.upload_id,
            completion,
        )
        await client.tracking.delete_run(run.info.run_id)
        await _collect(client, NOW)
        await _assert_purged(client, run.info.run_id)

        with pytest.raises(FailedPrecondition) as refused:  # its read-back done
            await objects.publish(upload, 3, "0" * 64, "application/octet-stream", lease=completion)
        assert refused.value.reason == "LOCATION_DELETED"
        assert await pool.fetchval(_QUEUED, project) == 1  # left to the completion
        await objects.abandon(upload, lease=completion)  # as the refused completion does
        await _collect(client, NOW)
        assert await pool.fetchval(_QUEUED, project) == 0
        with pytest.raises(NotFoundError):
            await client.artifacts.stat(path)


async def test_an_upload_its_runs_collection_ended_is_told_the_directory_went(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """Confirming a presigned PUT (or completing presigned parts) whose upload the
    collection of its run ended answered NOT_FOUND UPLOAD_NOT_FOUND: nothing said that
    the run's directory went for good, where an upload begun there is LOCATION_DELETED."""
    project = await new_project(server_port, f"ended-{unique}")
    objects = ObjectStore(pool)
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        run = await client.tracking.create_run(await client.tracking.create_experiment("e"))
        path = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/") + "/put.bin"
        put = await objects.begin(project, path, False, url_expires=datetime.timedelta(hours=1))
        await client.tracking.delete_run(run.info.run_id)
        await _collect(client, NOW)
    with pytest.raises(FailedPrecondition) as refused:
        await objects.upload(project, path, put.upload_id, kind="put")
    assert refused.value.reason == "LOCATION_DELETED"


_UPLOADS_AT = "SELECT count(*) FROM artifacts.uploads WHERE project = $1 AND path = $2"
_QUEUED = "SELECT count(*) FROM operations.discarded_locations WHERE project = $1"


async def _storage_key(pool: asyncpg.Pool, project: str, path: str) -> str:
    key: str = await pool.fetchval(
        "SELECT storage_key FROM artifacts.objects WHERE project = $1 AND path = $2",
        project,
        path,
    )
    return key


async def _waiting_on_a_lock(pool: asyncpg.Pool, statement: str) -> bool:
    waiting = await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0""",
        statement,
    )
    return bool(waiting)


async def test_an_experiment_at_a_location_chosen_by_hand_leaves_other_files_there(
    server_port: int, unique: str
) -> None:
    project = await new_project(server_port, f"custom-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        await client.artifacts.upload("registry/artifacts/ds/v1/data.csv", b"x" * 10)
        await client.artifacts.upload("shared/notes.txt", b"n" * 5)
        experiment = await client.tracking.create_experiment(
            "custom", artifact_location=f"cairn-artifacts://{project}/shared"
        )
        run = await client.tracking.create_run(experiment)
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await client.artifacts.upload(f"{root}/model.bin", b"m" * 10)
        await client.artifacts.upload("registry/x", b"r")
        empty = await client.tracking.create_experiment(
            "empty", artifact_location=f"cairn-artifacts://{project}/registry"
        )
        for experiment_id in (experiment, empty):
            await client.tracking.delete_experiment(experiment_id)
        done = await _collect(client, NOW)
        assert done.counts["experiments"] >= 2

        with pytest.raises(NotFoundError):  # the run's own directory goes
            await client.artifacts.stat(f"{root}/model.bin")
        for kept in ("registry/artifacts/ds/v1/data.csv", "shared/notes.txt", "registry/x"):
            assert (await client.artifacts.stat(kept)).size >= 1


async def test_the_generated_location_goes_unless_another_experiment_keeps_files_in_it(
    pool: asyncpg.Pool, unique: str
) -> None:
    """`unshared`: a location is kept when an experiment's is the same, inside it or
    around it; a sibling whose name merely starts the same does not keep it."""
    project = f"unshared-{unique}"
    base = f"cairn-artifacts://{project}/experiments"
    kept_by = {"same": f"{base}/7", "inside": f"{base}/8/inner", "around": f"{base}/9"}
    async with pool.acquire() as conn:
        rollback = conn.transaction()
        await rollback.start()
        try:
            for name, location in {**kept_by, "sibling": f"{base}/100"}.items():
                await conn.execute(
                    """INSERT INTO tracking.experiments (project, name, artifact_location)
                       VALUES ($1, $2, $3)""",
                    project,
                    name,
                    location,
                )
            candidates = [f"{base}/7", f"{base}/8", f"{base}/9/sub", f"{base}/10"]
            assert await purge.unshared(conn, candidates) == [f"{base}/10"]
        finally:
            await rollback.rollback()


async def test_the_look_above_a_location_reads_only_the_experiments_at_its_parts(
    pool: asyncpg.Pool, unique: str
) -> None:
    """An experiment around a location is one at its part before one of its "/", looked
    up in the index of locations: each location was compared to every experiment's
    (9 s for 100 locations among 100,000 experiments)."""
    project = f"above-{unique}"
    base = f"cairn-artifacts://{project}/experiments"
    candidates = [f"{base}/x7/sub/deeper", f"{base}/y/sub", f"{base}/x70000/sub"]
    async with pool.acquire() as conn:
        rollback = conn.transaction()
        await rollback.start()
        try:
            await conn.execute(
                """INSERT INTO tracking.experiments (project, name, artifact_location)
                   SELECT $1, 'e' || g, $2 || '/x' || g FROM generate_series(1, 5000) g""",
                project,
                base,
            )
            await conn.execute("ANALYZE tracking.experiments")  # as autovacuum has (0020)
            explaining = ExplainingConnection(conn)
            left = await purge.unshared(cast(asyncpg.Connection, explaining), candidates)
        finally:
            await rollback.rollback()

    assert left == candidates[1:]
    [plan] = explaining.plans
    assert read_in(plan, "experiments") <= 1  # the one around the first


async def test_an_experiment_whose_purge_began_cannot_be_restored(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    project = await new_project(server_port, f"restore-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("half")
        runs = [(await tracking.create_run(experiment)).info.run_id for _ in range(2)]
        await tracking.delete_experiment(experiment)
        async with pool.acquire() as holder, holder.transaction():
            # A writer holds one run: this GC removes the other and skips it.
            await holder.execute(
                "SELECT FROM tracking.runs WHERE run_id = $1::uuid FOR UPDATE", runs[1]
            )
            done = await _collect(client, NOW)
        assert done.counts["runs_skipped"] == 1 and done.counts["experiments_skipped"] == 1
        with pytest.raises(FailedPreconditionError) as refused:
            await tracking.restore_experiment(experiment)
        assert refused.value.reason == "EXPERIMENT_BEING_PURGED"
        done = await _collect(client, NOW)  # the next one finishes the work
        assert done.counts["runs_skipped"] == 0
        with pytest.raises(NotFoundError):
            await tracking.get_experiment(experiment)


async def _deleted_run(client: cairn.Client, *, with_its_experiment: bool) -> str:
    """A run deleted on its own, in an experiment deleted too if with_its_experiment."""
    experiment = await client.tracking.create_experiment("one run")
    run: str = (await client.tracking.create_run(experiment)).info.run_id
    await client.tracking.delete_run(run)
    if with_its_experiment:
        await client.tracking.delete_experiment(experiment)
    return run


async def test_a_held_run_of_a_deleted_experiment_deleted_itself_is_skipped_once(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """Deleted on its own in an experiment deleted too, the run is in both of a
    collection's selections: held by a writer, it was counted skipped twice."""
    project = await new_project(server_port, f"held-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        run = await _deleted_run(client, with_its_experiment=True)
        async with pool.acquire() as writer, writer.transaction():
            # The lock a write to the run takes (lock_writable).
            await writer.execute("SELECT FROM tracking.runs WHERE run_id = $1::uuid FOR SHARE", run)
            done = await _collect(client, NOW)
        assert (done.counts["runs_skipped"], done.counts["experiments_skipped"]) == (1, 1)
        done = await _collect(client, NOW)
        assert done.counts["runs_skipped"] == 0
        await _assert_purged(client, run)


async def test_a_run_another_collection_is_removing_is_not_counted_skipped(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """Another collection claimed the run and is deleting its row: the run goes with that
    one, not with the next, so this one does not count it skipped (it did)."""
    project = await new_project(server_port, f"claimed-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        run = await _deleted_run(client, with_its_experiment=False)
        await pool.execute(  # the other collection's claim, committed
            "UPDATE tracking.runs SET purge_time = clock_timestamp() WHERE run_id = $1::uuid", run
        )
        async with pool.acquire() as other, other.transaction():
            # Its DELETE of the runs' rows, under way.
            await other.execute("SELECT FROM tracking.runs WHERE run_id = $1::uuid FOR UPDATE", run)
            done = await _collect(client, NOW)
            assert done.counts["runs_skipped"] == 0
            await other.execute("DELETE FROM tracking.runs WHERE run_id = $1::uuid", run)
        await _assert_purged(client, run)


async def test_a_restore_before_the_purge_began_keeps_the_experiment_whole(
    server_port: int, unique: str
) -> None:
    project = await new_project(server_port, f"restored-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("back")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.delete_experiment(experiment)
        await tracking.restore_experiment(experiment)
        await _collect(client, NOW)
        assert (await tracking.get_run(run)).info.run_id == run


async def test_delete_restore_delete_counts_from_the_last_delete(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    project = await new_project(server_port, f"redelete-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("again")
        await tracking.delete_experiment(experiment)
        await pool.execute(
            """UPDATE tracking.experiments SET delete_time = delete_time - interval '2 hours'
               WHERE experiment_id = $1::text::bigint""",
            experiment,
        )
        await tracking.restore_experiment(experiment)
        assert await _delete_time(pool, experiment) is None
        await tracking.delete_experiment(experiment)
        await _collect(client, datetime.timedelta(hours=1))  # deleted just now: kept
        assert (await tracking.get_experiment(experiment)).experiment_id == experiment


async def _delete_time(pool: asyncpg.Pool, experiment_id: str) -> datetime.datetime | None:
    value: datetime.datetime | None = await pool.fetchval(
        "SELECT delete_time FROM tracking.experiments WHERE experiment_id = $1::text::bigint",
        experiment_id,
    )
    return value


# Rows of a run or an experiment as calls leave them: the column naming their owner,
# and an insert of one ($1 the owner, $2 the row's number).
_HISTORY_ROWS = {
    "metric_chunks": (
        "run_id",
        """INSERT INTO tracking.metric_chunks
               (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
           VALUES ($1::uuid, 'loss', $2, $2, ARRAY[$2::bigint], ARRAY[0.5], ARRAY[0])""",
    ),
    # A LogBatch or LogMetric call's request id: a run may have millions.
    "applied_batches": (
        "run_id",
        """INSERT INTO tracking.applied_batches (run_id, request_id)
           VALUES ($1::uuid, 'batch-' || $2::bigint)""",
    ),
    # Bounded in bytes, but a small tag is a row of its own.
    "experiment_tags": (
        "experiment_id",
        """INSERT INTO tracking.experiment_tags (experiment_id, key, value)
           VALUES ($1::text::bigint, 't' || $2::bigint, '')""",
    ),
}


@pytest.mark.parametrize("table", _HISTORY_ROWS)
async def test_a_long_history_goes_in_bounded_pieces(
    server_port: int, pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    """Every statement removes at most PIECE of a run's metric chunks or request ids, or
    of an experiment's tags, however many there are, so none runs into the statement
    timeout; none is left to the cascade of the one DELETE of the runs' or experiments'
    rows (a statement-level trigger counts the rows each statement removed, cascades
    included)."""
    monkeypatch.setattr(purge, "PIECE", 5)
    owner_column, insert = _HISTORY_ROWS[table]
    project = await new_project(server_port, f"pieces-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("long")
        run = (await tracking.create_run(experiment)).info.run_id
        owner = run if owner_column == "run_id" else experiment
        await pool.executemany(insert, [(owner, row) for row in range(23)])
        await tracking.delete_run(run)
        await tracking.delete_experiment(experiment)
        counter, owned = f"pieces_{unique}", f"{owner_column} = '{owner}'"
        await pool.execute(_COUNTING_TRIGGER.format(counter=counter, table=table, owned=owned))
        try:
            await _collect(client, NOW)
            pieces = [r["n"] for r in await pool.fetch(f"SELECT n FROM {counter} WHERE n > 0")]
        finally:
            await pool.execute(
                f"""DROP TRIGGER {counter} ON tracking.{table};
                    DROP FUNCTION {counter}(); DROP TABLE {counter}"""
            )
        assert sum(pieces) == 23 and max(pieces) <= 5 and len(pieces) >= 5, pieces


# Records how many of the owner's rows each DELETE statement on the table removed.
_COUNTING_TRIGGER = """
CREATE TABLE {counter} (n bigint);
CREATE FUNCTION {counter}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {counter} SELECT count(*) FROM gone WHERE {owned};
    RETURN NULL;
END $$;
CREATE TRIGGER {counter} AFTER DELETE ON tracking.{table}
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION {counter}();
"""


def test_steps_run_producers_first_whatever_the_order_services_are_named_in() -> None:
    for names in (["artifacts", "tracking"], ["artifacts", "registry", "tracking"], []):
        hosted = [spec.name for spec in catalog.select(names) if spec.purge is not None]
        assert hosted[-1] == "artifacts" and hosted.index("tracking") == 0, names


async def test_a_failed_operation_tells_an_error_id_not_the_servers_internals(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """The step's statement times out behind a lock: clients read a fixed message and
    an id; the SQL and table names stay in the server's log."""
    impatient = with_overrides(config, db_statement_timeout_seconds=0.2)
    own_pool = await database.create_pool(impatient.database_url, impatient)
    server = CairnServer(impatient, catalog.select(["tracking"]), own_pool)
    port = await server.start()
    try:
        async with (
            cairn.Client(f"http://127.0.0.1:{port}") as client,
            pool.acquire() as holder,
            holder.transaction(),
        ):
            await holder.execute("LOCK TABLE tracking.runs IN ACCESS EXCLUSIVE MODE")
            started = await client.operations.start_garbage_collection(NOTHING_DELETED_YET)
            done = await client.operations.wait_operation(started.name, timeout=60)
    finally:
        await server.stop(grace=0)
        await database.close_pool(own_pool)
    assert done.state is OperationState.FAILED
    [error] = done.errors
    assert re.fullmatch(r"the operation failed on the server; .* \(error [0-9a-f]{12}\)", error)


async def test_a_restore_under_way_when_the_purge_comes_wins(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    project = await new_project(server_port, f"race-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("raced")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.delete_experiment(experiment)
        async with pool.acquire() as restorer, restorer.transaction():
            # A restore's update, not yet committed, as the collection runs.
            await restorer.execute(
                """UPDATE tracking.experiments SET lifecycle_stage = 1, delete_time = NULL
                   WHERE experiment_id = $1::text::bigint""",
                experiment,
            )
            done = await _collect(client, NOW)
        assert done.counts["runs_skipped"] >= 1
        assert (await tracking.get_experiment(experiment)).lifecycle_stage == "active"
        assert (await tracking.get_run(run)).info.lifecycle_stage == "active"


async def test_a_server_does_not_take_over_what_it_runs_when_its_lease_passed(
    config: Config, pool: asyncpg.Pool
) -> None:
    """The lease lapses while the operation is blocked (the database slow, say): the
    takeover check of the same server starts no second attempt beside the first."""
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    runner = Runner(resources, catalog.select(["tracking"]))
    async with pool.acquire() as holder:
        blocking = holder.transaction()
        await blocking.start()
        await holder.execute("LOCK TABLE tracking.runs IN ACCESS EXCLUSIVE MODE")
        operation = await runner.start_garbage_collection(NOTHING_DELETED_YET)
        task = runner._running[operation.operation_id]
        await pool.execute(
            """UPDATE operations.operations SET lease_until = clock_timestamp()
               WHERE operation_id = $1""",
            operation.operation_id,
        )
        await runner._take_over()
        assert runner._running[operation.operation_id] is task
        # The lease back at once: the session's own server, whose takeover runs every
        # CLAIM_SECONDS, would rightly take over an operation whose lease stayed past.
        await pool.execute(
            """UPDATE operations.operations SET lease_until = clock_timestamp() + interval '1 hour'
               WHERE operation_id = $1""",
            operation.operation_id,
        )
        await blocking.rollback()
    await task
    done = await OperationStore(pool).get(operation.name)
    assert done.state is State.SUCCEEDED and done.attempts == 1


async def test_a_purged_run_leaves_an_experiment_kept_inside_its_directory(
    server_port: int, unique: str
) -> None:
    """An experiment's location chosen by hand may lie inside a run's directory: the
    run's purge leaves it, as an experiment's purge leaves another's."""
    project = await new_project(server_port, f"nested-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        outer = await client.tracking.create_experiment("outer")
        purged = await client.tracking.create_run(outer)
        inner = await client.tracking.create_experiment(
            "inner", artifact_location=f"{purged.info.artifact_uri}/shared"
        )
        live = await client.tracking.create_run(inner)
        root = live.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await client.artifacts.upload(f"{root}/model.bin", b"live weights")
        await client.tracking.delete_run(purged.info.run_id)
        done = await _collect(client, NOW)
        assert done.counts["runs"] >= 1
        assert (await client.artifacts.stat(f"{root}/model.bin")).size == 12


@pytest.mark.parametrize(
    "spelling",
    [
        "Cairn-Artifacts://{p}/x",
        " cairn-artifacts://{p}/x",
        "cairn-artifacts://{p}/x\t",
        "cairn-artifacts://{p}/x\ty",
    ],
)
async def test_a_location_is_taken_in_one_spelling_only(
    server_port: int, unique: str, spelling: str
) -> None:
    """Another spelling of a location another experiment keeps would not look shared to
    the purge, which would take that experiment's files with it."""
    project = await new_project(server_port, f"spelled-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        with pytest.raises(InvalidArgumentError) as refused:
            await client.tracking.create_experiment(
                "odd", artifact_location=spelling.format(p=project)
            )
        assert refused.value.reason == "INVALID_ARTIFACT_LOCATION"


async def test_runs_of_long_histories_go_within_the_statement_timeout(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """Deleted in one transaction, a batch's history made each piece rescan what the
    earlier ones deleted, and the cascade of the runs' own DELETE all of it: past the
    statement timeout, every collection failed the same way, and the runs stayed.
    Right after a bulk load, before statistics exist, as here, the cascade scans."""
    impatient = with_overrides(config, db_statement_timeout_seconds=_IMPATIENT)
    own_pool = await database.create_pool(impatient.database_url, impatient)
    server = CairnServer(impatient, catalog.select(["tracking"]), own_pool)
    port = await server.start()
    project = await new_project(port, f"long-{unique}")
    try:
        async with cairn.Client(f"http://127.0.0.1:{port}", project=project) as client:
            experiment = await client.tracking.create_experiment("long")
            runs = [(await client.tracking.create_run(experiment)).info.run_id for _ in range(20)]
            await pool.execute(_CHUNKS, runs, _CHUNKS_A_RUN * len(runs))
            for run in runs:
                await client.tracking.delete_run(run)
            done = await _collect(client, NOW)
    finally:
        await server.stop(grace=0)
        await database.close_pool(own_pool)
    assert done.counts["runs"] >= len(runs)  # and the deleted runs of other tests
    for table in ("runs", "metric_chunks"):
        left = f"SELECT count(*) FROM tracking.{table} WHERE run_id = ANY($1::text[]::uuid[])"
        assert await pool.fetchval(left, runs) == 0, table


_IMPATIENT = 0.5  # seconds a statement of the collection may take
_CHUNKS_A_RUN = 30_000
# Runs logged side by side: their chunks interleave on the table's pages.
_CHUNKS = """INSERT INTO tracking.metric_chunks
                 (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
             SELECT ($1::text[]::uuid[])[1 + n % cardinality($1::text[])], 'loss', n, n,
                    ARRAY[n], ARRAY[0.5], ARRAY[0]
             FROM generate_series(1, $2::bigint) AS n"""


async def test_a_run_whose_purge_began_is_not_restored_and_a_later_collection_ends_it(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """A collection stopped after claiming a run (killed, say) left it with part of its
    history: a restore would bring it back so, as would a server of the release before,
    which knows no purge_time (the database refuses it that restore)."""
    project = await new_project(server_port, f"claimed-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("claimed")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.log_param(run, "lr", "0.1")
        await tracking.delete_run(run)
        # What a collection's claim commits before the run's history goes.
        await pool.execute(
            "UPDATE tracking.runs SET purge_time = clock_timestamp() WHERE run_id = $1::uuid", run
        )
        with pytest.raises(FailedPreconditionError) as refused:
            await tracking.restore_run(run)
        assert refused.value.reason == "RUN_BEING_PURGED"
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
            await pool.execute(_OLD_RESTORE, run)
        await tracking.delete_run(run)  # deleting it again is no restore: allowed
        await _collect(client, NOW)
        with pytest.raises(NotFoundError):
            await tracking.get_run(run)


async def test_a_claimed_run_of_a_deleted_experiment_is_refused_as_being_purged(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """Deleted on its own before its experiment, and claimed by a collection whose
    cut-off fell between the two: EXPERIMENT_DELETED advised restoring the experiment,
    which restored it, then refused the run RUN_BEING_PURGED."""
    project = await new_project(server_port, f"claimed-in-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("deleted")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.delete_run(run)
        await pool.execute(
            "UPDATE tracking.runs SET purge_time = clock_timestamp() WHERE run_id = $1::uuid", run
        )
        await tracking.delete_experiment(experiment)
        with pytest.raises(FailedPreconditionError) as refused:
            await tracking.restore_run(run)
        assert refused.value.reason == "RUN_BEING_PURGED"
        assert (await tracking.get_experiment(experiment)).lifecycle_stage == "deleted"


# The restore of a server of the release before.
_OLD_RESTORE = """UPDATE tracking.runs SET lifecycle_stage = 1, delete_time = NULL
                  WHERE run_id = $1::uuid"""


async def test_a_run_whose_purge_began_reads_as_gone(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """While a collection removed a run's history table by table, the run read as an
    ordinary deleted run with part of it: held up at its params, get_run answered its 3
    params and no metric, its history no point, and search_runs listed it so."""
    project = await new_project(server_port, f"reading-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("half gone")
        run = (await tracking.create_run(experiment)).info.run_id
        for key in ("a", "b", "c"):
            await tracking.log_param(run, key, "v")
        for step in range(5):
            await tracking.log_metric(run, "loss", float(step), step=step)
        await tracking.delete_run(run)
        async with another_transaction(pool) as holder:
            await holder.execute(  # a write to the run's params, under way
                "SELECT FROM tracking.params WHERE run_id = $1::uuid LIMIT 1 FOR UPDATE", run
            )
            collecting = asyncio.create_task(_collect(client, NOW))
            await eventually(lambda: holds_up_another(holder), what="the purge held up")
            metrics_left = await pool.fetchval(_METRICS_OF, run)  # gone; its params wait
            reads = await asyncio.gather(
                tracking.get_run(run),
                tracking.get_metric_history(run, "loss"),
                tracking.get_metric_history_bulk([run], "loss"),
                return_exceptions=True,
            )
            listed = [
                len(await tracking.search_runs([experiment], run_view_type=view, order_by=order))
                for view in ("ALL", "DELETED_ONLY")
                for order in (None, ["metrics.loss DESC"])
            ]
        await collecting  # the reads' outcomes are asserted once it has ended
        assert metrics_left == 0
        assert [getattr(read, "reason", read) for read in reads] == ["RUN_NOT_FOUND"] * 3
        assert listed == [0, 0, 0, 0]
        await _assert_purged(client, run)


_METRICS_OF = "SELECT count(*) FROM tracking.latest_metrics WHERE run_id = $1::uuid"


@pytest.mark.parametrize("order", [None, ["metrics.loss DESC"], ["params.lr"]])
async def test_a_search_page_reads_its_runs_in_one_snapshot(
    server_port: int, pool: asyncpg.Pool, unique: str, order: list[str] | None
) -> None:
    """A search picked its page's runs, then loaded what was logged to them in another
    statement: a collection claiming a run in between (its metrics gone, its params not
    yet) had search_runs list it with its params and no metric."""
    project = await new_project(server_port, f"snapshot-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("one snapshot")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.log_param(run, "lr", "0.1")
        await tracking.log_metric(run, "loss", 0.5)
        await tracking.delete_run(run)
        async with another_transaction(pool) as holder:
            # Holds the page's load back once its runs are picked: it reads params.
            await holder.execute("LOCK TABLE tracking.params IN ACCESS EXCLUSIVE MODE")
            searching = asyncio.create_task(
                tracking.search_runs([experiment], run_view_type="ALL", order_by=order)
            )
            await eventually(lambda: holds_up_another(holder), what="the page's load held up")
            async with pool.acquire() as claim, claim.transaction():
                # What a collection commits first: its claim, then the run's metrics gone.
                await claim.execute(_CLAIM, run)
                await claim.execute(_METRICS_GONE, run)
        page = await searching
        assert [(found.data.params, found.data.metrics) for found in page] == [
            ({"lr": "0.1"}, {"loss": 0.5})
        ]


_CLAIM = "UPDATE tracking.runs SET purge_time = clock_timestamp() WHERE run_id = $1::uuid"
_METRICS_GONE = "DELETE FROM tracking.latest_metrics WHERE run_id = $1::uuid"


async def test_a_write_to_a_run_a_collection_claimed_is_not_found(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """A run a collection had claimed read as gone (RUN_NOT_FOUND), yet every write to
    it answered FAILED_PRECONDITION RUN_DELETED, "restore it before writing to it",
    which restore_run then refused (RUN_BEING_PURGED)."""
    project = await new_project(server_port, f"claimed-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("claimed")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.set_tag(run, "t", "v")
        await tracking.delete_run(run)
        await pool.execute(_CLAIM, run)  # what a collection's claim commits
        writes: dict[str, Callable[[], Awaitable[object]]] = {
            "set_tag": lambda: tracking.set_tag(run, "t", "w", synchronous=True),
            "delete_tag": lambda: tracking.delete_tag(run, "t"),
            "log_param": lambda: tracking.log_param(run, "p", "v", synchronous=True),
            "log_metric": lambda: tracking.log_metric(run, "m", 1.0, synchronous=True),
            "log_batch metrics": lambda: tracking.log_batch(
                run, metrics=[Metric("m", 1.0)], synchronous=True
            ),
            "log_batch params and tags": lambda: tracking.log_batch(
                run, params=[Param("p", "v")], tags=[RunTag("t", "w")], synchronous=True
            ),
            "log_batch renaming": lambda: tracking.log_batch(
                run, tags=[RunTag("mlflow.runName", "renamed")], synchronous=True
            ),
            "log_batch with a request id": lambda: tracking.log_batch(
                run, metrics=[Metric("m", 1.0)], synchronous=True, request_id=str(uuid.uuid4())
            ),
            "update_run": lambda: tracking.update_run(run, name="renamed"),
            "set_terminated": lambda: tracking.set_terminated(run),
            "log_inputs": lambda: tracking.log_inputs(run, [RunInput("s3://b/d", "dataset")]),
        }

        answers = {name: await _answer(write) for name, write in writes.items()}

        assert answers == dict.fromkeys(writes, ("NotFoundError", "RUN_NOT_FOUND"))
        with pytest.raises(NotFoundError) as reading:
            await tracking.get_run(run)
        assert reading.value.reason == "RUN_NOT_FOUND"


async def _answer(write: Callable[[], Awaitable[object]]) -> tuple[str, str | None]:
    """The error class and reason write raised; ("OK", None) when it raised none."""
    try:
        await write()
    except cairn.exceptions.CairnError as error:
        return type(error).__name__, error.reason
    return "OK", None


_CLAIM_EXPERIMENT = (
    "UPDATE tracking.experiments SET purge_time = clock_timestamp() WHERE experiment_id = $1"
)


async def test_a_write_to_an_experiment_a_collection_claimed_says_it_cannot_be_restored(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """Once a collection had claimed a deleted experiment, every write to it and to its
    runs, and restore_run, answered EXPERIMENT_DELETED, "restore it first", which
    restore_experiment then refused (EXPERIMENT_BEING_PURGED); a run deleted on its own
    there answered RUN_DELETED, "restore it", which restore_run refused the same way."""
    project = await new_project(server_port, f"claimed-experiment-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        tracking = client.tracking
        experiment = await tracking.create_experiment("claimed")
        await tracking.set_experiment_tag(experiment, "t", "v")
        run = (await tracking.create_run(experiment)).info.run_id
        await tracking.set_tag(run, "t", "v")
        deleted_alone = (await tracking.create_run(experiment)).info.run_id
        await tracking.delete_run(deleted_alone)
        await tracking.delete_experiment(experiment)
        unclaimed = await _answer(lambda: tracking.create_run(experiment))
        await pool.execute(_CLAIM_EXPERIMENT, int(experiment))  # what a collection commits
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "set_tag": lambda: tracking.set_tag(run, "t", "w", synchronous=True),
            "delete_tag": lambda: tracking.delete_tag(run, "t"),
            "log_param": lambda: tracking.log_param(run, "p", "v", synchronous=True),
            "log_metric": lambda: tracking.log_metric(run, "m", 1.0, synchronous=True),
            "log_batch": lambda: tracking.log_batch(
                run, metrics=[Metric("m", 1.0)], params=[Param("p", "v")], synchronous=True
            ),
            "log_batch renaming": lambda: tracking.log_batch(
                run, tags=[RunTag("mlflow.runName", "renamed")], synchronous=True
            ),
            "update_run": lambda: tracking.update_run(run, name="renamed"),
            "set_terminated": lambda: tracking.set_terminated(run),
            "log_inputs": lambda: tracking.log_inputs(run, [RunInput("s3://b/d", "dataset")]),
            "restore_run": lambda: tracking.restore_run(run),
            "a write to a run deleted alone": lambda: tracking.log_param(
                deleted_alone, "p", "v", synchronous=True
            ),
            "restore_run of a run deleted alone": lambda: tracking.restore_run(deleted_alone),
            "create_run": lambda: tracking.create_run(experiment),
            "set_experiment_tag": lambda: tracking.set_experiment_tag(experiment, "t", "w"),
            "delete_experiment_tag": lambda: tracking.delete_experiment_tag(experiment, "t"),
            "rename_experiment": lambda: tracking.rename_experiment(experiment, "renamed"),
            "restore_experiment": lambda: tracking.restore_experiment(experiment),
        }

        answers = {name: await _answer(call) for name, call in calls.items()}

        assert unclaimed == ("FailedPreconditionError", "EXPERIMENT_DELETED")
        assert answers == dict.fromkeys(
            calls, ("FailedPreconditionError", "EXPERIMENT_BEING_PURGED")
        )
