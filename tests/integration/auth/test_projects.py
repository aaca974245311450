"""Projects and members: isolation between projects, roles given and taken at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from cairn.types import ApiKeyExpirationTime, ProjectMember, ProjectRole
from cairn_server.auth.store import AuthStore
from tests.conftest import eventually
from tests.integration.auth.conftest import World


def _user(world: World, who: str) -> str:
    return f"{who}-{world.project.removeprefix('acl-')}"


async def test_nothing_of_one_project_is_visible_from_another(world: World) -> None:
    async with world.tracking("editor") as mine:
        experiment_id = await mine.create_experiment("private")
    async with world.tracking("global_admin", world.other_project) as elsewhere:
        assert await elsewhere.get_experiment_by_name("private") is None
        with pytest.raises(NotFoundError):
            await elsewhere.get_experiment(experiment_id)
    async with world.tracking("outsider") as outsider:
        with pytest.raises(PermissionDeniedError) as raised:
            await outsider.get_experiment(experiment_id)
    assert raised.value.metadata["required_role"] == "VIEWER"


async def test_members_see_their_projects_with_their_role(world: World) -> None:
    async with world.auth("viewer") as auth:
        projects = await auth.get_projects()
        assert [(p.name, p.role) for p in projects] == [(world.project, ProjectRole.VIEWER)]
        assert (await auth.get_project(world.project)).description == "where the roles are"
        with pytest.raises(PermissionDeniedError):
            await auth.get_project(world.other_project)
    async with world.auth("global_admin") as auth:
        names = {p.name for p in await auth.get_projects()}
    assert {"default", world.project, world.other_project} <= names


async def test_a_project_admin_manages_members(world: World) -> None:
    newcomer = _user(world, "newcomer")
    async with world.auth("admin") as auth:
        await auth.add_user_project_role(newcomer, world.project, ProjectRole.PROJECT_VIEW)
        await auth.add_user_project_role(newcomer, world.project, "EDITOR")  # replaces
        members = await auth.get_project_members(world.project)
        assert ProjectMember(world.project, newcomer, ProjectRole.EDITOR) in members
        assert len(members) == 6
        with pytest.raises(PermissionDeniedError):  # not an admin of the other project
            await auth.add_user_project_role(newcomer, world.other_project, ProjectRole.ADMIN)


async def test_a_role_taken_away_stops_working_at_once(world: World) -> None:
    async with world.tracking("editor") as editor:
        await editor.create_experiment("before")
        async with world.auth("admin") as auth:
            await auth.delete_project_role(_user(world, "editor"), world.project)
            with pytest.raises(NotFoundError) as raised:
                await auth.delete_project_role(_user(world, "editor"), world.project)
        assert raised.value.reason == "PROJECT_ROLE_NOT_FOUND"
        with pytest.raises(PermissionDeniedError):
            await editor.create_experiment("after")


async def test_a_viewer_reads_but_does_not_write(world: World) -> None:
    async with world.tracking("editor") as editor:
        await editor.create_experiment("shared")
    async with world.tracking("viewer") as viewer:
        assert (await viewer.get_experiment_by_name("shared")) is not None
        with pytest.raises(PermissionDeniedError) as raised:
            await viewer.create_experiment("mine")
    assert raised.value.metadata == {"required_role": "EDITOR", "project": world.project}


async def test_only_global_admins_create_projects(world: World, unique: str) -> None:
    async with world.auth("admin") as auth:
        with pytest.raises(PermissionDeniedError):
            await auth.create_project(f"nope-{unique}")
    async with world.auth("global_admin") as auth:
        assert await auth.create_project(f"yes-{unique}") == f"yes-{unique}"
        with pytest.raises(AlreadyExistsError) as raised:
            await auth.create_project(f"yes-{unique}")
        assert raised.value.reason == "PROJECT_ALREADY_EXISTS"
        for bad in ("", "Upper", "-dash", "a" * 64, "has space"):
            with pytest.raises(InvalidArgumentError):
                await auth.create_project(bad)


async def test_unknown_projects(world: World, unique: str) -> None:
    async with world.tracking("global_admin", f"ghost-{unique}") as admin:
        with pytest.raises(NotFoundError) as raised:
            await admin.search_experiments()
    assert raised.value.reason == "PROJECT_NOT_FOUND"
    async with world.tracking("editor", f"ghost-{unique}") as member:
        with pytest.raises(PermissionDeniedError):  # no hint whether it exists
            await member.search_experiments()


async def test_bad_role_requests_are_invalid(world: World) -> None:
    async with world.auth("admin") as auth:
        with pytest.raises(InvalidArgumentError):
            await auth.add_user_project_role("has space", world.project, ProjectRole.VIEWER)
        with pytest.raises(ValueError):
            await auth.add_user_project_role("someone", world.project, "OWNER")


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("alice\u3164", "invisible"),  # a Hangul filler, which isprintable lets through
        ("al\u034fice", "invisible"),  # the combining grapheme joiner
        ("alice\u2800", "invisible"),  # the blank Braille pattern
        ("alice\ufe0f", "invisible"),
        ("alic" + "e\u0301", "composed form"),  # alicé, spelled as e and an accent
        ("\u0435ditor", "scripts"),  # a Cyrillic ie for the e
        ("edit\u03bfr", "scripts"),  # a Greek omicron for the o
        ("\u2170van", "variant"),  # a small Roman numeral one for the i
        ("alice@example\u2024com", "variant"),  # a one-dot leader for the dot
        ("alice\uff20example.com", "variant"),  # a fullwidth @
        ("alice\ufe6bexample.com", "variant"),  # a small @
        ("alice\U0001d7f7@example.com", "variant"),  # a mathematical 1
        ("\uff21\uff23\uff25", "variant"),  # fullwidth ACE throughout
        ("\u0301alice", "begin with a combining mark"),  # an acute drawn on what is before
        ("\u20ddalice", "begin with a combining mark"),  # an enclosing circle (Me)
        ("\u0903alice", "begin with a combining mark"),  # a spacing mark, visarga (Mc)
    ],
)
async def test_no_role_or_key_goes_to_a_look_alike_of_a_user(
    world: World, user: str, why: str
) -> None:
    """Each of these ids was taken as a user of its own, listed beside the one it looks
    like: an admin could give a look-alike of a colleague the admin role. Looked up or
    removed, an id is not held to the rule (one given before it may exist)."""
    async with world.auth("admin") as auth:
        with pytest.raises(InvalidArgumentError, match=why):
            await auth.add_user_project_role(user, world.project, ProjectRole.VIEWER)
        with pytest.raises(NotFoundError) as not_a_member:
            await auth.delete_project_role(user, world.project)
    assert not_a_member.value.reason == "PROJECT_ROLE_NOT_FOUND"
    async with world.auth("global_admin") as auth:
        with pytest.raises(InvalidArgumentError, match=why):
            await auth.create_user_api_key(user, "look-alike", ApiKeyExpirationTime.THIRTY_DAYS)


@pytest.mark.parametrize(
    ("user", "suggested"),
    [
        ("\uff9ealice", None),  # half-width voiced sound mark: plainly, a combining mark
        ("\u0e33", None),  # Thai SARA AM alone: plainly, NIKHAHIT (a mark) and SARA AA
        ("\u0e01\u0e33", "\u0e01\u0e4d\u0e32"),  # after a consonant, NIKHAHIT + SARA AA
        ("\u0e81\u0eb3", "\u0e81\u0ecd\u0eb2"),  # Lao AM, as Lao NIGGAHITA + AA
    ],
)
async def test_the_plain_form_named_for_a_variant_is_an_id_itself(
    world: World, user: str, suggested: str | None
) -> None:
    """A refused id's plain (NFKC) form was suggested though it began with a combining
    mark, which no new id may: for a half-width voiced sound mark, "write '\u3099alice'"."""
    async with world.auth("admin") as auth:
        with pytest.raises(InvalidArgumentError, match="variant") as refused:
            await auth.add_user_project_role(user, world.project, ProjectRole.VIEWER)
        if suggested is None:
            assert "write" not in refused.value.message
        else:
            assert f"write {suggested!r}" in refused.value.message
            await auth.add_user_project_role(suggested, world.project, ProjectRole.VIEWER)
            await auth.delete_project_role(suggested, world.project)


async def test_an_id_beginning_with_a_combining_mark_given_before_still_works(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    """Ids given before the leading-mark rule keep their keys, as other ids given before
    a rule do; only a new key or role is refused."""
    before, _ = await AuthStore(pool).create_key(f"\u0301marked-{unique}", "before", None)
    async with world.auth_with(before) as auth:
        assert [k.name for k in await auth.get_api_keys()] == ["before"]
        with pytest.raises(InvalidArgumentError, match="combining mark"):
            await auth.create_api_key("another", ApiKeyExpirationTime.THIRTY_DAYS)


async def test_ids_written_in_one_script_or_in_scripts_written_together_are_users(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    """The letters of an id come from one script, or from scripts one language writes
    together (kana and kanji, each with Latin too); digits and punctuation from any.
    A user id stored before that rule still works."""
    unique = str(int(unique, 16))  # in digits, which every script may hold
    ids = [
        f"\u0440\u0435\u0434\u0430\u043a\u0442\u043e\u0440-{unique}",  # Cyrillic throughout
        f"\u5c71\u7530\u305f\u308d\u3046-{unique}",  # kanji and hiragana
        f"taro\u5c71\u7530-{unique}@example.com",
        f"\u1f10\u03bb\u03b5\u03bd\u03b7.{unique}_2",  # Greek, with a breathing mark
    ]
    async with world.auth("admin") as auth:
        for user in ids:
            await auth.add_user_project_role(user, world.project, ProjectRole.VIEWER)
        members = {m.user_id for m in await auth.get_project_members(world.project)}
    assert set(ids) <= members
    before, _ = await AuthStore(pool).create_key(f"\u0435ditor-{unique}", "before", None)
    async with world.auth_with(before) as auth:
        assert [k.name for k in await auth.get_api_keys()] == ["before"]
        # Nor does it get a new key by not naming itself: a key that never expires
        # was given to it, and that one could make more.
        with pytest.raises(InvalidArgumentError) as refused:
            await auth.create_api_key("unnamed", ApiKeyExpirationTime.NEVER)
        assert refused.value.field_violations[0][0] == "user_id"
        assert [k.name for k in await auth.get_api_keys()] == ["before"]


async def test_without_auth_projects_must_still_exist(server_port: int, unique: str) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=f"missing-{unique}"
    ) as client:
        with pytest.raises(NotFoundError) as raised:
            await client.search_experiments()
    assert raised.value.reason == "PROJECT_NOT_FOUND"


async def test_a_malformed_project_is_invalid_for_members_and_hidden_from_strangers(
    world: World,
) -> None:
    async with world.tracking("editor", "Not A Project") as member:
        with pytest.raises(InvalidArgumentError):
            await member.search_experiments()
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", world.port, "cairn_0123456789ab_" + "z" * 43, project="Not A Project"
    ) as stranger:
        with pytest.raises(cairn.exceptions.UnauthenticatedError):
            await stranger.search_experiments()


async def test_a_viewer_cannot_upload_and_nothing_is_stored(world: World) -> None:
    def store(who: str) -> cairn.ArtifactClient:
        return cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", world.port, world.keys[who], project=world.project
        )

    async with store("viewer") as viewer:
        with pytest.raises(PermissionDeniedError):
            await viewer.upload("notes.txt", b"x" * (3 * 1024 * 1024))
        with pytest.raises(NotFoundError):
            await viewer.stat("notes.txt")
    async with store("editor") as editor:
        await editor.upload("notes.txt", b"mine")
    async with store("viewer") as viewer:
        assert await viewer.read("notes.txt") == b"mine"


async def _project_of_two_admins(world: World, unique: str) -> tuple[str, dict[str, str]]:
    """A new project whose admins are "first" and "second"; each one's user id and key."""
    return await _project_of_admins(world, unique, ("first", "second"))


async def _project_of_admins(
    world: World, unique: str, names: tuple[str, ...]
) -> tuple[str, dict[str, str]]:
    """A new project with an admin of each name; each one's user id and key."""
    project = f"admins-{len(names)}-{unique}"
    keys = {}
    async with world.auth("global_admin") as root:
        await root.create_project(project)
        for name in names:
            user = f"{name}-{unique}"
            await root.add_user_project_role(user, project, ProjectRole.ADMIN)
            keys[user] = await root.create_user_api_key(user, "k", ApiKeyExpirationTime.ONE_YEAR)
    return project, keys


async def test_a_project_keeps_an_admin_unless_a_global_admin_removes_it(
    world: World, unique: str
) -> None:
    project, keys = await _project_of_two_admins(world, unique)
    first, second = keys
    async with world.auth_with(keys[first]) as auth:
        await auth.delete_project_role(second, project)  # one admin is left: first
        refusals = []
        for leave in (
            auth.add_user_project_role(first, project, ProjectRole.EDITOR),
            auth.delete_project_role(first, project),
        ):
            with pytest.raises(FailedPreconditionError) as raised:
                await leave
            refusals.append(raised.value.reason)
        assert refusals == ["LAST_PROJECT_ADMIN"] * 2
        await auth.add_user_project_role(first, project, ProjectRole.ADMIN)  # stays one
    async with world.auth("global_admin") as root:
        await root.delete_project_role(first, project)  # a global admin may
        assert await root.get_project_members(project) == []


async def test_two_admins_taking_each_others_role_at_once_leave_one(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    project, keys = await _project_of_two_admins(world, unique)
    first, second = keys
    async with world.auth_with(keys[first]) as one, world.auth_with(keys[second]) as other:
        # The test holds the admins' rows, so both changes are admitted and wait: one
        # for a row, the other for its turn.
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(
                "SELECT 1 FROM auth.project_roles WHERE project = $1 FOR UPDATE", project
            )
            changes = [
                asyncio.ensure_future(one.add_user_project_role(second, project, "VIEWER")),
                asyncio.ensure_future(other.add_user_project_role(first, project, "VIEWER")),
            ]
            await eventually(lambda: _waiting_on_locks(pool, 2), what="both changes waiting")
        outcomes = await asyncio.gather(*changes, return_exceptions=True)
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(refused) == 1, outcomes
    # The second to take its turn was demoted by the first: no longer an admin.
    assert isinstance(refused[0], PermissionDeniedError), refused
    assert refused[0].metadata == {"required_role": "ADMIN", "project": project}
    async with world.auth("global_admin") as root:
        roles = {member.role for member in await root.get_project_members(project)}
    assert roles == {ProjectRole.VIEWER, ProjectRole.ADMIN}


@pytest.mark.parametrize("removed", [False, True], ids=["demoted", "removed"])
async def test_an_admin_demoted_while_its_change_waits_is_refused_it(
    world: World, pool: asyncpg.Pool, unique: str, removed: bool
) -> None:
    """first demotes second (or removes its role) while second's own change of the
    project's roles waits for its turn, admitted when second was still admin: second's
    change is refused, and first's stays. Before, the interceptor's check at admission
    was all: second's self-promotion answered OK after first's demotion had, and second
    was admin again (its removal of third went through too), in 19 of 20 rounds of
    calls made at once without a held lock."""
    project, keys = await _project_of_admins(world, unique, ("first", "second", "third"))
    first, second, third = keys
    async with world.auth_with(keys[first]) as one, world.auth_with(keys[second]) as other:
        # Both changes are admitted (second is admin then) and wait for their turn,
        # the demotion first.
        async with _turns_held(pool, project):
            demotion = _changed(one, project, second, None if removed else ProjectRole.VIEWER)
            await eventually(lambda: _waiting_on_locks(pool, 1), what="the demotion waiting")
            if removed:
                late = _changed(other, project, third, None)
            else:
                late = _changed(other, project, second, ProjectRole.ADMIN)
            await eventually(lambda: _waiting_on_locks(pool, 2), what="both changes waiting")
        await demotion
        with pytest.raises(PermissionDeniedError) as raised:
            await late
    assert raised.value.reason == "PERMISSION_DENIED"
    assert raised.value.metadata == {"required_role": "ADMIN", "project": project}
    async with world.auth("global_admin") as root:
        roles = {member.user_id: member.role for member in await root.get_project_members(project)}
    expected = {first: ProjectRole.ADMIN, third: ProjectRole.ADMIN}
    if not removed:
        expected[second] = ProjectRole.VIEWER
    assert roles == expected


@pytest.mark.parametrize("removed", [False, True], ids=["granted", "removed"])
async def test_a_role_change_whose_key_is_revoked_while_it_waits_is_refused(
    world: World, pool: asyncpg.Pool, unique: str, removed: bool
) -> None:
    """An admin's key (a stolen one, say) asks for a change of the project's roles,
    admitted, and is revoked while the change waits for its turn: the change is refused
    and the revocation's OK holds. Before, the change went through after it (the only
    check of the key was the gate's): its grant of admin outlived the key."""
    project, keys = await _project_of_admins(world, unique, ("first", "second"))
    first, second = keys
    grantee = f"grantee-{unique}"
    async with world.auth("global_admin") as root, world.auth_with(keys[first]) as stolen:
        async with _turns_held(pool, project):
            if removed:
                change = _changed(stolen, project, second, None)
            else:
                change = _changed(stolen, project, grantee, ProjectRole.ADMIN)
            await eventually(lambda: _waiting_on_locks(pool, 1), what="the change waiting")
            await root.delete_api_key(keys[first])
        with pytest.raises(UnauthenticatedError) as refused:
            await change
        members = {
            member.user_id: member.role for member in await root.get_project_members(project)
        }
    assert refused.value.reason == "API_KEY_REVOKED"
    assert members == {first: ProjectRole.ADMIN, second: ProjectRole.ADMIN}


async def test_admins_changing_each_others_roles_at_once_take_turns(
    world: World, unique: str
) -> None:
    """Three admins each demote all three to editor at once, round after round: the
    changes take turns, and all but the last admin's demotions are made. Before, a change
    locked the rows of the admins it saw and then its target's row, which may lie outside
    them, so PostgreSQL found deadlocks and some calls raised AbortedError
    (TRANSACTION_CONFLICT) in most runs of ten rounds."""
    project, keys = await _project_of_admins(world, unique, ("first", "second", "third"))
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(world.auth("global_admin"))
        admins = [await stack.enter_async_context(world.auth_with(key)) for key in keys.values()]
        for _ in range(10):
            for user in keys:
                await root.add_user_project_role(user, project, ProjectRole.ADMIN)
            outcomes = await asyncio.gather(
                *(
                    admin.add_user_project_role(user, project, ProjectRole.EDITOR)
                    for admin in admins
                    for user in keys
                ),
                return_exceptions=True,
            )
            refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            # A caller demoted before its call is admitted is refused, as it should be.
            assert all(
                isinstance(error, PermissionDeniedError)
                or (
                    isinstance(error, FailedPreconditionError)
                    and error.reason == "LAST_PROJECT_ADMIN"
                )
                for error in refused
            ), refused
            roles = [member.role for member in await root.get_project_members(project)]
            assert sorted(roles) == [ProjectRole.ADMIN, ProjectRole.EDITOR, ProjectRole.EDITOR]


@contextlib.asynccontextmanager
async def _turns_held(pool: asyncpg.Pool, project: str) -> AsyncIterator[None]:
    """The project's row held as a change of its roles holds it in its turn: changes
    admitted meanwhile wait for theirs."""
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT 1 FROM auth.projects WHERE name = $1 FOR NO KEY UPDATE", project
        )
        yield


def _changed(
    client: cairn.AuthClient, project: str, user: str, role: ProjectRole | None
) -> asyncio.Future[None]:
    """user's role in project changed by client, in a task: to role, or taken (None)."""
    if role is None:
        return asyncio.ensure_future(client.delete_project_role(user, project))
    return asyncio.ensure_future(client.add_user_project_role(user, project, role))


async def _waiting_on_locks(pool: asyncpg.Pool, count: int) -> bool:
    waiting = await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND query LIKE '%auth.project%'"""
    )
    return waiting >= count
