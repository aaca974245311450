"""ML cube's calls as its users write them, through a server that requires API keys:
role names as strings, update_project, get_user_projects and the show_* tables."""

from __future__ import annotations

import io
import subprocess
import sys

import asyncpg
import pytest

import cairn
from cairn.exceptions import InvalidArgumentError, NotFoundError, PermissionDeniedError
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server.auth.store import AuthStore
from tests.integration.auth.conftest import World


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("PROJECT_VIEW", ProjectRole.VIEWER),
        ("viewer", ProjectRole.VIEWER),
        ("Viewer", ProjectRole.VIEWER),
        ("PROJECT_EDIT", ProjectRole.EDITOR),
        ("editor", ProjectRole.EDITOR),
        ("project_admin", ProjectRole.ADMIN),
        ("ADMIN", ProjectRole.ADMIN),
        (ProjectRole.PROJECT_EDIT, ProjectRole.EDITOR),
    ],
)
async def test_a_role_is_named_as_ml_cube_or_cairn_name_it(
    world: World, unique: str, given: str | ProjectRole, expected: ProjectRole
) -> None:
    user = f"named-{unique}"
    async with world.auth("admin") as admin:
        await admin.add_user_project_role(user, world.project, given)
        members = {m.user_id: m.role for m in await admin.get_project_members(world.project)}
    assert members[user] is expected


async def test_a_name_that_is_no_role_is_refused_before_any_call(world: World) -> None:
    """As every failure, an InvalidArgumentError naming the argument (a ValueError too);
    a role, and an expiration that is none, raised a bare ValueError."""
    async with world.auth("admin") as admin:
        with pytest.raises(InvalidArgumentError, match="PROJECT_VIEW") as raised:
            await admin.add_user_project_role("someone", world.project, "owner")
        assert raised.value.field_violations[0][0] == "project_role"
        with pytest.raises(InvalidArgumentError, match="NEVER") as raised:
            await admin.create_user_api_key("someone", "k", "FOREVER")
        assert raised.value.field_violations[0][0] == "expiration_time"


async def test_update_project_changes_the_description_for_an_editor(world: World) -> None:
    async with world.auth("editor") as editor:
        updated = await editor.update_project(world.project, description="churn models")
        assert updated.description == "churn models"
        assert updated.role is ProjectRole.EDITOR
        # None leaves a value as it is, as in ML cube; the project's own name may repeat.
        same = await editor.update_project(world.project, world.project, None)
        assert same.description == "churn models"
        assert (await editor.get_project(world.project)).description == "churn models"
        with pytest.raises(InvalidArgumentError) as renamed:
            await editor.update_project(world.project, name="renamed")
        assert renamed.value.reason == "INVALID_ARGUMENT"


async def test_update_project_leaves_empty_values_as_they_are(world: World) -> None:
    # ML cube's docs: "Empty values will not be updated."
    async with world.auth("editor") as editor:
        assert (await editor.update_project(world.project, "", "d")).description == "d"
        assert (await editor.update_project(world.project, None, "")).description == "d"


async def test_update_project_is_refused_to_a_viewer_and_unknown_projects(
    world: World, unique: str
) -> None:
    async with world.auth("viewer") as viewer:
        with pytest.raises(PermissionDeniedError):
            await viewer.update_project(world.project, description="mine now")
    async with world.auth("global_admin") as admin:
        with pytest.raises(NotFoundError):
            await admin.update_project(f"nowhere-{unique}", description="x")


async def test_get_user_projects_lists_a_users_projects_with_their_role(world: World) -> None:
    async with world.auth("global_admin") as admin:
        projects = await admin.get_user_projects(world.users["outsider"])
    assert [(p.project_id, p.role) for p in projects] == [(world.other_project, ProjectRole.EDITOR)]
    async with world.auth("viewer") as viewer:
        own = await viewer.get_user_projects(world.users["viewer"])
        assert [p.project_id for p in own] == [world.project]
        with pytest.raises(PermissionDeniedError):
            await viewer.get_user_projects(world.users["outsider"])


async def test_get_user_projects_of_a_global_admin_is_the_same_whoever_asks(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    second = f"root2-{unique}"
    key, _ = await AuthStore(pool).create_key(second, "root2", None, global_admin=True)
    async with world.auth("global_admin") as admin:
        await admin.add_user_project_role(second, world.project, "editor")
        asked_by_another = await admin.get_user_projects(second)
    async with world.auth_with(key) as himself:
        asked_by_himself = await himself.get_user_projects(second)
        every = await himself.get_projects()  # without a user: every project, for him
    expected = [(world.project, ProjectRole.EDITOR)]
    assert [(p.project_id, p.role) for p in asked_by_another] == expected
    assert [(p.project_id, p.role) for p in asked_by_himself] == expected
    assert world.other_project in [p.project_id for p in every]


async def test_show_user_projects_prints_a_users_projects_with_their_role(
    world: World,
) -> None:
    """ML cube's show_user_projects(user_id), beside get_user_projects and
    show_user_api_keys, was missing: AttributeError."""
    async with world.auth("global_admin") as admin:
        shown = io.StringIO()
        await admin.show_user_projects(world.users["outsider"], file=shown)
    assert "Role" in shown.getvalue() and world.project not in shown.getvalue()
    row = next(line for line in shown.getvalue().splitlines() if world.other_project in line)
    assert "editor" in row
    async with world.auth("viewer") as viewer:
        with pytest.raises(PermissionDeniedError):
            await viewer.show_user_projects(world.users["outsider"], file=io.StringIO())


async def test_create_project_takes_ml_cubes_default_storage_policy_as_none(
    world: World, unique: str
) -> None:
    """ML cube's create_project(name, description, default_storage_policy) raised
    TypeError (an unexpected argument), where update_project takes it and requires None."""
    name = f"policy-{unique}"
    async with world.auth("global_admin") as admin:
        assert await admin.create_project(name, "d", default_storage_policy=None) == name
        assert await admin.create_project(f"{name}-2", "d", None) == f"{name}-2"
        with pytest.raises(InvalidArgumentError) as refused:
            await admin.create_project(f"{name}-3", "d", "s3")
        assert refused.value.field_violations[0][0] == "default_storage_policy"
        assert f"{name}-3" not in [p.project_id for p in await admin.get_projects()]


async def test_show_projects_and_api_keys_print_tables_without_secrets(world: World) -> None:
    async with world.auth("editor") as editor:
        await editor.update_project(world.project, description="where the roles are")
        key = await editor.create_api_key("laptop", ApiKeyExpirationTime.NINETY_DAYS)
        projects, keys = io.StringIO(), io.StringIO()
        await editor.show_projects(file=projects)
        await editor.show_api_keys(file=keys)
    lines = projects.getvalue().splitlines()
    assert lines[0].strip() == "Projects"
    assert "Project ID" in lines[2] and "Description" in lines[2]
    row = next(line for line in lines if world.project in line)
    assert "where the roles are" in row and "editor" in row
    listing = keys.getvalue()
    prefix, secret = key.split("_")[1], key.split("_", 2)[2]
    laptop = next(line for line in listing.splitlines() if prefix in line)
    assert "laptop" in laptop and "never" not in laptop
    assert secret not in listing and "\x1b[" not in listing


async def test_show_projects_prints_a_description_as_written_never_as_markup(
    world: World,
) -> None:
    written = "see [/link] and [bold]this[/bold] [red]"
    async with world.auth("editor") as editor:
        await editor.update_project(world.project, description=written)
        shown = io.StringIO()
        await editor.show_projects(file=shown)
    assert written in shown.getvalue()


async def test_show_projects_shows_terminal_controls_escaped(world: World) -> None:
    """A description holding ESC sequences was printed raw: listing the projects cleared
    the screen and retitled the terminal of whoever did."""
    async with world.auth("editor") as editor:
        await editor.update_project(world.project, description="a\x1b]0;PWNED\x07\x1b[2Jb\u202e")
        shown = io.StringIO()
        await editor.show_projects(file=shown)
    assert "\x1b" not in shown.getvalue() and "\u202e" not in shown.getvalue()
    assert "a\\x1b]0;PWNED\\x07\\x1b[2Jb\\u202e" in shown.getvalue()


def test_importing_cairn_does_not_import_rich() -> None:
    code = "import sys, cairn, cairn.sync; print('rich' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.stdout.strip() == "False", imported.stderr


async def test_show_models_prints_every_model_of_the_project(server_port: int, unique: str) -> None:
    project = f"shown-{unique}"
    async with cairn.AuthClient.insecure_connection("127.0.0.1", server_port) as auth:
        await auth.create_project(project)
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as registry:
        for n in range(103):  # more than one page of 100
            await registry.upsert_registered_model(
                cairn.types.RegisteredModel(f"model-{n:03}", owner="team")
            )
        shown = io.StringIO()
        await registry.show_models(file=shown)
    async with cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", server_port) as other:
        by_task = io.StringIO()
        await other.show_models(project, file=by_task)  # ML cube's task id, positionally
    assert by_task.getvalue() == shown.getvalue()
    rows = [line for line in shown.getvalue().splitlines() if "model-" in line]
    assert len(rows) == 103 and "team" in rows[0]
    assert f"Models of project {project}" in shown.getvalue()


async def test_a_users_keys_are_shown_and_revoked_by_ml_cubes_names(world: World) -> None:
    """ML cube's show_user_api_keys(user_id) and delete_user_api_key(user_id, api_key),
    which the client lacked."""
    user = world.users["viewer"]
    async with world.auth("global_admin") as admin:
        key = await admin.create_user_api_key(user, "ci", ApiKeyExpirationTime.THIRTY_DAYS)
        shown = io.StringIO()
        await admin.show_user_api_keys(user, file=shown)
        prefix = key.split("_")[1]
        assert prefix in shown.getvalue() and key not in shown.getvalue()
        with pytest.raises(NotFoundError) as elsewhere:  # a key, but not that user's
            await admin.delete_user_api_key(world.users["editor"], key)
        assert elsewhere.value.reason == "API_KEY_NOT_FOUND"
        await admin.delete_user_api_key(user, key)
        (listed,) = [k for k in await admin.get_user_api_keys(user) if k.prefix == prefix]
        assert listed.revoked
    async with world.auth("viewer") as viewer, world.auth_with(key) as revoked:
        with pytest.raises(PermissionDeniedError):
            await viewer.show_user_api_keys(world.users["editor"])
        with pytest.raises(cairn.exceptions.UnauthenticatedError):
            await revoked.get_api_keys()


async def test_a_users_key_is_revoked_in_every_form_the_server_takes(world: World) -> None:
    """delete_user_api_key took a whole key or a bare prefix, and "cairn_<prefix>", the
    form docs/cli.md shows and DeleteApiKey takes, was NotFoundError: no key of the user
    had the prefix "cairn_<prefix>"."""
    user = world.users["viewer"]
    async with world.auth("global_admin") as admin:
        for form in ("{key}", "{prefix}", "cairn_{prefix}"):
            key = await admin.create_user_api_key(user, form, ApiKeyExpirationTime.THIRTY_DAYS)
            prefix = key.split("_")[1]
            await admin.delete_user_api_key(user, form.format(key=key, prefix=prefix))
            (listed,) = [k for k in await admin.get_user_api_keys(user) if k.prefix == prefix]
            assert listed.revoked, form
        with pytest.raises(InvalidArgumentError) as malformed:  # as DeleteApiKey answers
            await admin.delete_user_api_key(user, f"cairn_{prefix}_")
    assert malformed.value.field_violations[0][0] == "api_key"
