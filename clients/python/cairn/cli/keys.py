"""`cairn keys list|create|revoke`: API keys through the Auth API.

`cairn keys create --user NAME [--admin]` is the server's bootstrap instead: it writes
the key straight into the database (docs/auth.md), so a deployment gets its first key
without serving with authentication off. It needs `cairn[server]` and the database
settings (CAIRN_DATABASE_URL or --database-url, ...), never a running server.
"""

from __future__ import annotations

import click

from ..types import ApiKeyExpirationTime
from ._calls import call, pages
from ._connection import connection_options, typed
from ._output import echo, emit_pages, output_option, plain
from ._server import run_server_command

LIFETIMES = {
    "30d": ApiKeyExpirationTime.THIRTY_DAYS,
    "90d": ApiKeyExpirationTime.NINETY_DAYS,
    "1y": ApiKeyExpirationTime.ONE_YEAR,
    "never": ApiKeyExpirationTime.NEVER,
}
COLUMNS = [
    ("prefix", "Prefix"),
    ("name", "Name"),
    ("user_id", "User"),
    ("create_time", "Created"),
    ("expire_time", "Expires"),
    ("revoke_time", "Revoked"),
]


@click.group("keys")
def group() -> None:
    """API keys: list, create, revoke."""


@group.command("list")
@click.option("--user", "user_id", default="", help="another user's keys (global admins)")
@output_option
@connection_options
def list_keys(user_id: str, output: str) -> None:
    """List your API keys (revoked and expired ones too); never a secret."""
    call(
        lambda client: emit_pages(
            output, pages(client.auth.list_user_api_keys(user_id), None), plain, COLUMNS, "API keys"
        )
    )


@group.command(
    "create", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("--name", help="a name to recognise the key by [default: cli; bootstrap: bootstrap]")
@click.option("--expires", type=click.Choice(list(LIFETIMES)), default="90d", show_default=True)
@click.option("--user", help="bootstrap: a key for this user, written into the database")
@click.option("--admin", is_flag=True, help="bootstrap: make the user a global admin")
@connection_options
@click.pass_context
def create_key(
    ctx: click.Context, name: str | None, expires: str, user: str | None, admin: bool
) -> None:
    """Create an API key and print it, once, on stdout.

    Without --user: a key for yourself, through the server. With --user (and --admin):
    the bootstrap, straight into the database (then the server's flags apply too, e.g.
    --database-url)."""
    if user is not None or admin:
        if connection := typed(ctx):  # the bootstrap reaches no server: a key there is lost
            raise click.UsageError(
                "--user writes the key straight into a database (--database-url, "
                f"CAIRN_DATABASE_URL) and reaches no server: {', '.join(connection)} "
                "would make a key that server does not know",
                ctx,
            )
        bootstrap = ["keys", "create", "--expires", expires, *ctx.args]
        bootstrap += ["--user", user] if user is not None else []
        bootstrap += ["--name", name] if name is not None else []
        run_server_command([*bootstrap, *(["--admin"] if admin else [])])
    if ctx.args:  # the server's flags are for the bootstrap only: anything else is a typo
        unknown = ctx.args[0]
        if unknown.startswith("-"):
            raise click.NoSuchOption(unknown.partition("=")[0], ctx=ctx)
        raise click.UsageError(f"Got unexpected extra argument ({unknown})", ctx)
    if name == "":  # a name given empty was made "cli" without a word
        raise click.BadParameter("must not be empty", param_hint="--name")
    key = call(lambda client: client.auth.create_api_key(name or "cli", LIFETIMES[expires]))
    echo(key)


@group.command("revoke")
@click.argument("key")
@connection_options
def revoke_key(key: str) -> None:
    """Revoke a key, given whole or by its prefix; it stops working at once, and so do
    the keys made with it."""
    call(lambda client: client.auth.delete_api_key(key))
