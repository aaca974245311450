"""A request id two users send: each user's ids are their own."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import grpc
import pytest

import cairn
from cairn._clients.versioned_artifacts import ActiveArtifact
from cairn.exceptions import UnauthenticatedError, from_grpc_error
from cairn.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc
from tests.conftest import another_transaction, eventually, holds_up_another
from tests.integration.auth.conftest import World


async def test_users_creating_a_version_under_one_request_id_each_get_their_own(
    world: World,
) -> None:
    """Each user's request ids are their own: a version another user created under the
    id, of the same name and facts, is not this user's answer, nor are its files."""

    def registry(who: str) -> cairn.ModelRegistryAPIClient:
        return cairn.ModelRegistryAPIClient.insecure_connection(
            "127.0.0.1", world.port, world.keys[who], project=world.project
        )

    async def create(who: cairn.ModelRegistryAPIClient, data: bytes) -> ActiveArtifact:
        return await who.create_artifact("ds", "dataset", {"k": 1}, files=data, request_id="j1")

    async with registry("admin") as first, registry("editor") as second:
        firsts, seconds = await create(first, b"first"), await create(second, b"second")
        assert firsts.version != seconds.version
        assert (await firsts.load("data")).read() == b"first"
        assert (await seconds.load("data")).read() == b"second"
        assert (await create(second, b"second")).version == seconds.version  # a retry


async def _create_experiment(
    world: World, who: str, name: str, request_id: str, project: str | None = None
) -> str:
    """The experiment id CreateExperiment answers who, sent under request_id."""
    request = tracking_service_pb2.CreateExperimentRequest(
        project=project or world.project, name=name
    )
    metadata = (
        ("authorization", f"Bearer {world.keys[who]}"),
        ("x-cairn-request-id", request_id),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        answer = await stub.CreateExperiment(request, metadata=metadata)
    return answer.experiment.experiment_id


async def test_a_request_id_another_user_sent_is_yours_to_use(world: World) -> None:
    """Request ids were one space for every user: another project's editor who sent a
    readable id first ("job-42") had each later call under it refused, REQUEST_ID_REUSED,
    which also told them it was used. Each user's writes under the id are their own:
    applied once each, each repeat answered with its own caller's first answer."""
    mine = await _create_experiment(world, "editor", "mine", "job-42")
    theirs = await _create_experiment(world, "outsider", "theirs", "job-42", world.other_project)
    assert mine != theirs
    assert await _create_experiment(world, "editor", "mine", "job-42") == mine
    again = await _create_experiment(world, "outsider", "theirs", "job-42", world.other_project)
    assert again == theirs
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # another request of the user's
        await _create_experiment(world, "outsider", "other", "job-42", world.other_project)
    assert from_grpc_error(refused.value).reason == "REQUEST_ID_REUSED"


async def test_a_retry_under_an_id_another_user_took_is_answered_once_theirs_is_pruned(
    world: World, pool: asyncpg.Pool
) -> None:
    """The second user's claim, under a key of their own, is found before the id as
    sent: their retry after the first user's claim was pruned is a repeat, not a second
    write."""
    await _create_experiment(world, "outsider", "first", "job-7", world.other_project)
    second = await _create_experiment(world, "editor", "second", "job-7")
    await pool.execute(
        "DELETE FROM tracking.requests WHERE request_id = 'job-7' AND caller = $1",
        world.users["outsider"],
    )
    assert await _create_experiment(world, "editor", "second", "job-7") == second


async def test_an_id_a_server_before_claimed_for_an_unknown_user_refuses_other_requests(
    world: World, pool: asyncpg.Pool
) -> None:
    """Claims of servers of the release before name no user (still serving during a
    rolling update): the id may be this user's, so another request under it is refused,
    as before, never applied twice."""
    await _create_experiment(world, "editor", "before", "job-9")
    await pool.execute("UPDATE tracking.requests SET caller = NULL WHERE request_id = 'job-9'")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create_experiment(world, "admin", "after", "job-9")
    assert from_grpc_error(refused.value).reason == "REQUEST_ID_REUSED"


async def test_a_retry_racing_its_call_under_an_id_another_user_held_is_answered_once(
    world: World, pool: asyncpg.Pool
) -> None:
    """A user's call under an id another user held claims its own key; its retry, sent
    before that claim commits, cannot see it. Had the other user's claim been pruned
    meanwhile, the retry claimed the id as sent and ran the write a second time: the
    prune now waits for the call's commit."""
    await _create_experiment(world, "outsider", "theirs", "job-8", world.other_project)
    async with another_transaction(pool) as holder:
        await holder.execute("LOCK TABLE tracking.experiments IN EXCLUSIVE MODE")
        first = asyncio.ensure_future(_create_experiment(world, "editor", "mine", "job-8"))
        await eventually(lambda: holds_up_another(holder))  # claimed, writing
        async with pool.acquire() as pruner, pruner.transaction():
            await pruner.execute("SET LOCAL lock_timeout = '200ms'")
            with contextlib.suppress(asyncpg.LockNotAvailableError):  # the call holds it
                await pruner.execute(
                    "DELETE FROM tracking.requests WHERE request_id = 'job-8' AND caller = $1",
                    world.users["outsider"],
                )
        retry = asyncio.ensure_future(_create_experiment(world, "editor", "mine", "job-8"))
        await eventually(lambda: _sessions_waiting(holder, 2))  # before the call commits
    assert await retry == await first


async def _sessions_waiting(conn: asyncpg.Connection, sessions: int) -> bool:
    """Whether so many sessions wait for a lock (see holds_up_another)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    )
    return bool(waiting >= sessions)


@pytest.mark.parametrize("first", ["global_admin", "editor"])
async def test_a_key_made_for_a_user_leaves_the_request_id_to_its_sender(
    world: World, first: str
) -> None:
    """CreateApiKey's request ids were the new key's user's, not the sender's: a key a
    global admin made for the editor under an id refused the editor's own creation
    under it (and the other way round), REQUEST_ID_REUSED, telling them it was used."""
    sent = (("x-cairn-request-id", "key-7"),)
    editor = world.users["editor"]
    made = {}
    async with world.auth("global_admin") as admin, world.auth("editor") as own:
        for who in (first, *({"global_admin", "editor"} - {first})):
            if who == "editor":
                made[who] = await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)
            else:
                made[who] = await admin.create_user_api_key(
                    editor, "by-admin", "THIRTY_DAYS", metadata=sent
                )
    for key in made.values():  # neither revoked the other as its repeat
        async with world.tracking_with(key) as tracking:
            await tracking.search_experiments()


async def test_a_key_is_stored_under_the_id_as_sent_unless_another_senders_holds_it(
    world: World, pool: asyncpg.Pool
) -> None:
    """Where a server of the release before looks for it: a retry reaching one during an
    upgrade finds the key its lost answer held. Only the second sender's goes under a
    request id of their own."""
    sent = (("x-cairn-request-id", "key-9"),)
    async with world.auth("editor") as own, world.auth("global_admin") as admin:
        first = await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)
        second = await admin.create_user_api_key(
            world.users["editor"], "by-admin", "THIRTY_DAYS", metadata=sent
        )
    stored = await pool.fetch(
        "SELECT request_id, request_caller FROM auth.api_keys WHERE prefix = ANY($1::text[])"
        " ORDER BY create_time",
        [key.split("_")[1] for key in (first, second)],
    )
    root = world.users["global_admin"]
    assert [tuple(row) for row in stored] == [
        ("key-9", world.users["editor"]),
        (f"{root}\nkey-9", root),
    ]


async def test_a_key_a_server_before_stored_is_repeated_by_its_retry(
    world: World, pool: asyncpg.Pool
) -> None:
    """A key stored by a server that kept no sender, under the id as sent: the retry of
    the call that made it still finds it, and revokes it as a lost answer's."""
    sent = (("x-cairn-request-id", "key-8"),)
    async with world.auth("editor") as own:
        earlier = await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)
        await pool.execute(  # as the release before stored it
            "UPDATE auth.api_keys SET request_caller = NULL WHERE prefix = $1",
            earlier.split("_")[1],
        )
        await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)
    assert await _revoked(world, earlier)


async def test_a_retry_revokes_every_key_of_its_lost_answers_under_either_spelling(
    world: World, pool: asyncpg.Pool
) -> None:
    """A retry's own key aged out, and a server of the release before made the key of a
    second lost answer under the id as sent, keeping no sender: that key was left live,
    the one under the own key taken for the repeat."""
    sent = (("x-cairn-request-id", "key-10"),)
    editor = world.users["editor"]
    async with world.auth("global_admin") as admin, world.auth("editor") as own:
        await admin.create_user_api_key(editor, "by-admin", "THIRTY_DAYS", metadata=sent)
        mine = await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)  # own key
        lost = await own.create_api_key(
            "own", "THIRTY_DAYS", metadata=(("x-cairn-request-id", "x"),)
        )
        await pool.execute(
            "UPDATE auth.api_keys SET create_time = create_time - interval '1 day',"
            " request_id = CASE WHEN request_caller = $2 THEN NULL ELSE request_id END"
            " WHERE user_id = $1 AND request_id LIKE '%key-10'",
            editor,
            world.users["global_admin"],
        )
        await pool.execute(  # as the release before stored the retry it made
            """UPDATE auth.api_keys SET request_id = 'key-10', request_caller = NULL,
                   request_fingerprint = (SELECT request_fingerprint FROM auth.api_keys
                                          WHERE prefix = $2)
               WHERE prefix = $1""",
            lost.split("_")[1],
            mine.split("_")[1],
        )
        await own.create_api_key("own", "THIRTY_DAYS", metadata=sent)
    assert await _revoked(world, lost)


async def _revoked(world: World, key: str) -> bool:
    async with world.tracking_with(key) as tracking:
        with pytest.raises(UnauthenticatedError) as refused:
            await tracking.search_experiments()
    return refused.value.reason == "API_KEY_REVOKED"
