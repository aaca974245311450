"""An upload's request id two users send: each user's ids are their own, as those of
every other write are (test_shared_request_ids.py). On every path: the stream, tickets
(the byte endpoint; presigned parts on S3) and presigned PUT URLs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn._headers import REQUEST_ID_HEADER
from cairn.types import ObjectInfo
from cairn_server.common.config import Config
from tests.conftest import put_through, with_overrides
from tests.integration.auth.conftest import World, populated, serve

DIRECT_THRESHOLD = 1024 * 1024
SIZES = {"stream": 64, "ticket": DIRECT_THRESHOLD + 5}


@pytest_asyncio.fixture(scope="module", params=["filesystem", "s3"])
async def guarded_store(
    request: pytest.FixtureRequest, config: Config, s3_config: Config, pool: asyncpg.Pool
) -> AsyncIterator[tuple[str, int]]:
    """A server of every service with API keys required, on each backend in turn."""
    backend = config if request.param == "filesystem" else s3_config
    server, port = await serve(
        with_overrides(backend, auth="api_key", auth_failure_limit=10**6), pool
    )
    yield request.param, port
    await server.stop(grace=0)


@pytest.fixture
async def world(guarded_store: tuple[str, int], pool: asyncpg.Pool, unique: str) -> World:
    return await populated(guarded_store[1], pool, unique)


def _store(world: World, who: str, project: str | None = None) -> cairn.ArtifactClient:
    client = cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", world.port, world.keys[who], project=project or world.project, timeout=None
    )
    client.direct_threshold = DIRECT_THRESHOLD
    return client


def _with_id(request_id: str) -> list[tuple[str, str]]:
    return [(REQUEST_ID_HEADER, request_id)]


def _same(one: ObjectInfo, other: ObjectInfo) -> bool:
    return (one.path, one.sha256, one.update_time) == (other.path, other.sha256, other.update_time)


@pytest.mark.parametrize("way", SIZES)
async def test_an_upload_id_another_user_sent_is_yours_to_use(
    world: World, way: str, unique: str
) -> None:
    """Upload ids were one space for every user and project: another project's editor
    who uploaded under a readable id first had each later upload under it refused,
    REQUEST_ID_REUSED. Each user's upload under the id publishes, once."""
    request_id, mine, theirs = f"job-{unique}", os.urandom(SIZES[way]), os.urandom(SIZES[way])
    async with (
        _store(world, "editor") as editor,
        _store(world, "outsider", world.other_project) as outsider,
    ):
        first = await editor.upload("model.bin", mine, metadata=_with_id(request_id))
        other = await outsider.upload("model.bin", theirs, metadata=_with_id(request_id))
        for client, data, answer in [(editor, mine, first), (outsider, theirs, other)]:
            again = await client.upload("model.bin", data, metadata=_with_id(request_id))
            assert _same(again, answer)  # a repeat: published once, not refused
            assert await client.read("model.bin") == data


@pytest.mark.parametrize("way", SIZES)
async def test_users_of_one_project_uploading_under_one_id_each_publish_their_own(
    world: World, way: str, unique: str
) -> None:
    """The second user's upload was taken for a repeat of the first's (one project, one
    path): refused REQUEST_ID_REUSED, its bytes never published."""
    request_id, firsts, seconds = f"job-{unique}", os.urandom(SIZES[way]), os.urandom(SIZES[way])
    async with _store(world, "admin") as admin, _store(world, "editor") as editor:
        first = await admin.upload("m.bin", firsts, overwrite=True, metadata=_with_id(request_id))
        second = await editor.upload(
            "m.bin", seconds, overwrite=True, metadata=_with_id(request_id)
        )
        assert await editor.read("m.bin") == seconds
        for client, data, answer in [(admin, firsts, first), (editor, seconds, second)]:
            again = await client.upload(
                "m.bin", data, overwrite=True, metadata=_with_id(request_id)
            )
            assert _same(again, answer)
        assert await admin.read("m.bin") == seconds  # no repeat published again


async def test_a_retry_of_an_upload_under_an_id_another_user_took_is_answered_once(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    """The second user's publication, claimed under a key of their own, is found before
    the id as sent: their retry after the first user's claim was pruned is a repeat."""
    request_id = f"job-{unique}"
    async with _store(world, "admin") as admin, _store(world, "editor") as editor:
        await admin.upload("a.bin", b"admin's", metadata=_with_id(request_id))
        mine = await editor.upload("e.bin", b"editor's", metadata=_with_id(request_id))
        await _forget_claims(pool, request_id, world.users["admin"])
        again = await editor.upload("e.bin", b"editor's", metadata=_with_id(request_id))
        assert _same(again, mine)


async def test_an_object_another_user_published_under_an_id_is_not_yours_past_the_retention(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    """Once a publication's claim is pruned, the object's row tells a repeat: it names
    its user, so another user's upload of the same bytes, path and id publishes (it was
    answered with the first user's object, nothing of its own stored)."""
    request_id = f"job-{unique}"
    async with _store(world, "admin") as admin, _store(world, "editor") as editor:
        first = await admin.upload("same.bin", b"same", metadata=_with_id(request_id))
        await _forget_claims(pool, request_id, world.users["admin"])
        mine = await editor.upload(
            "same.bin", b"same", overwrite=True, metadata=_with_id(request_id)
        )
        assert mine.update_time is not None and first.update_time is not None
        assert mine.update_time > first.update_time  # published anew, not a repeat


async def _forget_claims(pool: asyncpg.Pool, request_id: str, user: str) -> None:
    """Prunes user's claims of request_id, as the retention would."""
    await pool.execute(
        "DELETE FROM artifacts.requests WHERE request_id = $1 AND caller = $2", request_id, user
    )


@pytest.mark.parametrize("guarded_store", ["s3"], indirect=True)  # presigned: S3 alone
async def test_presigned_urls_two_users_ask_under_one_id_are_two_uploads(
    world: World, unique: str
) -> None:
    """The second user asking under the id was handed the first's upload, to put bytes
    into that the first would confirm as theirs."""
    request_id = f"put-{unique}"
    async with _store(world, "admin") as admin, _store(world, "editor") as editor:
        puts = [
            await client.presigned_url(
                "p.bin",
                "PUT",
                overwrite=True,
                content_type="application/octet-stream",
                metadata=_with_id(request_id),
            )
            for client in (admin, editor)
        ]
        assert puts[0].upload_id != puts[1].upload_id
        for client, put, body in [(admin, puts[0], b"admin's"), (editor, puts[1], b"editor's")]:
            await put_through(put.url, body, put.headers)
            done = await client.confirm_upload("p.bin", upload_id=put.upload_id)
            assert done.size == len(body)
        assert await admin.read("p.bin") == b"editor's"
