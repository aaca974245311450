"""`cairn projects list|create|describe|update|members|add-member|remove-member`."""

from __future__ import annotations

import click

from ..types import ProjectRole
from ._calls import call, pages
from ._connection import connection_options
from ._output import echo, emit_object, emit_pages, output_option, plain

COLUMNS = [
    ("name", "Project"),
    ("description", "Description"),
    ("role", "Your role"),
    ("create_time", "Created"),
]
MEMBER_COLUMNS = [("user_id", "User"), ("role", "Role")]
ROLES = ["viewer", "editor", "admin"]


@click.group("projects")
def group() -> None:
    """Projects (workspaces) and their members."""


@group.command("list")
@click.option("--user", "user_id", help="another user's projects, with their role (admins)")
@output_option
@connection_options
def list_projects(user_id: str | None, output: str) -> None:
    """List your projects (every project for a global admin)."""
    call(
        lambda client: emit_pages(
            output,
            pages(client.auth.list_projects(user_id or ""), None),
            plain,
            COLUMNS,
            "Projects",
        )
    )


@group.command("create")
@click.argument("name")
@click.option("--description", help="what the project is for")
@connection_options
def create_project(name: str, description: str | None) -> None:
    """Create a project (global admins) and print its id, which is its name."""
    echo(call(lambda client: client.auth.create_project(name, description)))


@group.command("describe")
@click.argument("name")
@output_option
@connection_options
def describe_project(name: str, output: str) -> None:
    """Show a project."""
    project = call(lambda client: client.auth.get_project(name))
    emit_object(output, plain(project), f"Project {name}")


def _new_description(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # The client (as ML cube) reads "" as "leave it as it is": passed on, the command
    # would succeed having changed nothing.
    if not value:
        raise click.BadParameter(
            "an empty description would leave the old one unchanged: a description"
            " cannot be cleared, only replaced by new text",
            ctx,
            param,
        )
    return value


@group.command("update")
@click.argument("name")
@click.option(
    "--description",
    required=True,
    callback=_new_description,
    help="the new description, not empty",
)
@connection_options
def update_project(name: str, description: str) -> None:
    """Change a project's description (its editors)."""
    call(lambda client: client.auth.update_project(name, description=description))


@group.command("members")
@click.argument("name")
@output_option
@connection_options
def members(name: str, output: str) -> None:
    """List a project's members and their roles."""
    call(
        lambda client: emit_pages(
            output,
            pages(client.auth.list_project_members(name), None),
            plain,
            MEMBER_COLUMNS,
            f"Members of {name}",
        )
    )


@group.command("add-member")
@click.argument("name")
@click.argument("user_id")
@click.argument("role", type=click.Choice(ROLES, case_sensitive=False))
@connection_options
def add_member(name: str, user_id: str, role: str) -> None:
    """Give USER_ID a ROLE in project NAME, replacing any role they had there."""
    call(lambda client: client.auth.add_user_project_role(user_id, name, ProjectRole(role)))


@group.command("remove-member")
@click.argument("name")
@click.argument("user_id")
@connection_options
def remove_member(name: str, user_id: str) -> None:
    """Take USER_ID out of project NAME."""
    call(lambda client: client.auth.delete_project_role(user_id, name))
