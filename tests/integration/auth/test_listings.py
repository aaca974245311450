"""Auth's listings answer a page at a time, so that no number of keys or members makes
them unreadable; and a user's live keys are bounded, so that no caller makes a listing
grow at will.

Served with the least message a server may be set to (1 MiB): the keys and the members
made here, with names of 4-byte characters, would not fit one answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn.auth.v1 import auth_service_pb2 as api
from cairn.exceptions import InvalidArgumentError
from cairn.types import ApiKeyExpirationTime, Pager
from cairn_server.auth.api_keys import MAX_LIVE_KEYS
from cairn_server.auth.store import AuthStore
from cairn_server.common.config import Config
from tests.conftest import serving
from tests.integration.auth.test_bootstrap import _cairn

WIDE = "\U0001f511"  # 4 bytes in UTF-8: the longest answers in the fewest rows
NEVER = ApiKeyExpirationTime.NEVER


@pytest_asyncio.fixture(scope="module")
async def port(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    # Auth beside artifacts: the registry is not served with less than about 6.2 MiB.
    async with serving(config, pool, ["artifacts"], max_message_bytes=1024 * 1024) as port:
        yield port


@pytest_asyncio.fixture(scope="module")
async def auth(port: int) -> AsyncIterator[cairn.AuthClient]:
    async with cairn.AuthClient.insecure_connection("127.0.0.1", port) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def crowded(pool: asyncpg.Pool) -> str:
    """A user one key short of the bound, every key with the longest name.

    Written straight into the tables, which take a thousand keys in one statement where
    as many calls would take seconds. Keys of one moment come in threes, so that the
    order by time and prefix has ties to break."""
    user = f"crowded-{uuid.uuid4().hex[:8]}" + WIDE * 112
    count = MAX_LIVE_KEYS - 1
    await pool.execute("INSERT INTO auth.users (user_id) VALUES ($1)", user)
    await pool.execute(
        """INSERT INTO auth.api_keys (prefix, key_hash, user_id, name, create_time)
           SELECT prefix, sha256(prefix::bytea), $1, lpad(i::text, 4, '0') || $2,
                  now() - (i / 3) * interval '1 millisecond'
           FROM unnest($3::text[]) WITH ORDINALITY AS k(prefix, i)""",
        user,
        WIDE * 252,
        [uuid.uuid4().hex[:12] for _ in range(count)],
    )
    return user


async def _all(calls: Any, width: int = 32) -> list[Any]:
    """Runs the calls, width at a time; their results, or the errors they raised."""
    gate = asyncio.Semaphore(width)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def _walk(auth: cairn.AuthClient, method: str, request: Any, items: str) -> list[Any]:
    """Every item of a listing, following its pages."""
    found: list[Any] = []
    while True:
        reply = await auth._transport.unary(getattr(auth._stub, method), request)
        found += getattr(reply, items)
        if not reply.next_page_token:
            return found
        request.page_token = reply.next_page_token


async def test_racing_creations_at_the_bound_leave_one_key_past_none(
    auth: cairn.AuthClient, crowded: str, pool: asyncpg.Pool, config: Config
) -> None:
    outcomes = await _all(
        [lambda i=i: auth.create_user_api_key(crowded, f"race {i}", NEVER) for i in range(8)]
    )
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 7, outcomes
    assert all(isinstance(e, InvalidArgumentError) for e in refused), refused
    assert {e.reason for e in refused if isinstance(e, InvalidArgumentError)} == {
        "TOO_MANY_API_KEYS"
    }
    keys = await auth.get_user_api_keys(crowded)
    assert sum(1 for k in keys if not k.revoked) == MAX_LIVE_KEYS

    # A revoked key and an expired one no longer count; each frees one place.
    await auth.delete_api_key(keys[0].prefix)
    await auth.create_user_api_key(crowded, "after a revocation", NEVER)
    await pool.execute(
        "UPDATE auth.api_keys SET expire_time = now() - interval '1 second' WHERE prefix = $1",
        keys[1].prefix,
    )
    await auth.create_user_api_key(crowded, "after an expiry", NEVER)
    with pytest.raises(InvalidArgumentError) as refused_again:
        await auth.create_user_api_key(crowded, "one too many", NEVER)
    assert refused_again.value.reason == "TOO_MANY_API_KEYS"
    # The command line writes keys through the same store method, and is refused alike.
    command = _cairn("keys", "create", "--user", crowded, database_url=config.database_url)
    assert command.returncode == 1 and not command.stdout
    assert "neither revoked nor expired" in command.stderr and "Traceback" not in command.stderr


async def test_a_users_keys_are_listed_whole_a_page_at_a_time(
    auth: cairn.AuthClient, crowded: str, pool: asyncpg.Pool
) -> None:
    expected = [
        row["prefix"]
        for row in await pool.fetch(
            "SELECT prefix FROM auth.api_keys WHERE user_id = $1 ORDER BY create_time, prefix",
            crowded,
        )
    ]
    assert len(expected) >= MAX_LIVE_KEYS - 1
    for size in (0, 7, 500):  # the default, a small one, the largest
        request = api.GetApiKeysRequest(user_id=crowded, page_size=size)
        listed = await _walk(auth, "GetApiKeys", request, "api_keys")
        assert [k.prefix for k in listed] == expected, size
    assert [k.prefix for k in await auth.get_user_api_keys(crowded)] == expected
    # A caller that reads no token (written before keys paged) gets the largest page.
    unpaged = await auth._transport.unary(
        auth._stub.GetApiKeys, api.GetApiKeysRequest(user_id=crowded)
    )
    assert [k.prefix for k in unpaged.api_keys] == expected[:500]

    with pytest.raises(InvalidArgumentError):
        await auth._transport.unary(
            auth._stub.GetApiKeys, api.GetApiKeysRequest(user_id=crowded, page_size=501)
        )
    first = await auth._transport.unary(
        auth._stub.GetApiKeys, api.GetApiKeysRequest(user_id=crowded, page_size=1)
    )
    with pytest.raises(InvalidArgumentError) as elsewhere:  # another user's listing
        await auth._transport.unary(
            auth._stub.GetApiKeys,
            api.GetApiKeysRequest(user_id="someone-else", page_token=first.next_page_token),
        )
    assert elsewhere.value.reason == "INVALID_PAGE_TOKEN"


async def test_a_projects_members_are_listed_whole_a_page_at_a_time(
    auth: cairn.AuthClient, pool: asyncpg.Pool, unique: str
) -> None:
    project = await auth.create_project(f"members-{unique}")
    users = [f"{i:04d}" + WIDE * 124 for i in range(2000)]
    # Straight into the tables: 2,000 calls would take seconds.
    await pool.execute(
        "INSERT INTO auth.users (user_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", users
    )
    await pool.execute(
        "INSERT INTO auth.project_roles (project, user_id, role) SELECT $1, unnest($2::text[]), 1",
        project,
        users,
    )
    for size in (0, 7, 1000):
        request = api.GetProjectMembersRequest(project=project, page_size=size)
        listed = await _walk(auth, "GetProjectMembers", request, "members")
        assert [m.user_id for m in listed] == users, size
    assert [m.user_id for m in await auth.get_project_members(project)] == users
    paged = auth.list_project_members(project).limit(7)
    assert [m.user_id for m in await paged.next_page()] == users[:7]
    assert [m.user_id async for m in auth.list_project_members(project)] == users
    refused_pagers: list[tuple[Pager[Any], str]] = [
        (auth.list_project_members(project).descending(), "order_by"),
        (auth.list_user_api_keys().limit(501), "limit"),  # past the server's most
    ]
    for pager, field in refused_pagers:
        with pytest.raises(InvalidArgumentError) as refused:
            await pager.next_page()
        assert refused.value.field_violations[0][0] == field


async def test_projects_with_the_longest_descriptions_are_listed_whole_a_page_at_a_time(
    auth: cairn.AuthClient, pool: asyncpg.Pool, unique: str
) -> None:
    # 30 descriptions of 40 kB each come to more than a 1 MiB answer: one answer
    # holding every project could not be read.
    names = [f"0-wide-{unique}-{i:02d}" for i in range(30)]
    await pool.execute(
        "INSERT INTO auth.projects (name, description) SELECT unnest($1::text[]), $2",
        names,
        WIDE * 10_000,
    )
    try:
        await _check_projects_listed_whole(auth, unique, names)
        await _check_the_store_returns_only_what_an_answer_holds(pool, names)
    finally:  # a global admin's listings in the other tests stay as they were
        await pool.execute("DELETE FROM auth.projects WHERE name = ANY($1::text[])", names)


async def _check_projects_listed_whole(
    auth: cairn.AuthClient, unique: str, names: list[str]
) -> None:
    request = api.GetProjectsRequest()
    pages = []
    while True:
        reply = await auth._transport.unary(auth._stub.GetProjects, request)
        pages.append(reply)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    listed = [p.name for page in pages for p in page.projects]
    assert len(listed) == len(set(listed))  # none twice
    assert [name for name in listed if name.startswith(f"0-wide-{unique}")] == names
    assert len(pages) > 1
    projects = {p.name: p for p in await auth.get_projects()}
    assert all(projects[name].description == WIDE * 10_000 for name in names)


async def _check_the_store_returns_only_what_an_answer_holds(
    pool: asyncpg.Pool, names: list[str]
) -> None:
    """The store hands the service the projects an answer holds, not the page asked
    for (it used to return up to 1,001 descriptions of 40 kB, cut to fit after). The
    wide projects sort before every other test's, so they are the page's first."""
    budget = 100_000  # two descriptions of 40 kB, not three
    projects, token = await AuthStore(pool).projects("nobody", 1000, "", every=True, budget=budget)
    assert [p.name for p in projects] == names[:2]
    assert token
