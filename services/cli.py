"""The server's commands: serve services, apply migrations, create API keys in the
database, show settings.

The `cairn` console script (cairn.cli) hands `serve`, `migrate`, `config` and
`keys create --user` to `main` here; `python -m cairn_server.cli` runs them directly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import uvloop

from . import catalog
from .auth import SPEC as AUTH
from .auth import keys as auth_keys
from .auth import validation as auth_validation
from .auth.store import AuthStore
from .common import config as config_module
from .common import database, logs, memory, migrations
from .common.config import Config
from .common.errors import DomainError
from .common.server import migrate, run
from .common.service import Unservable
from .common.settings import ConfigError

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args)
        services = catalog.select(getattr(args, "services", []))
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    logs.configure(config.log_level, config.log_format)
    for name, nearest in config_module.unread_variables(os.environ).items():
        logs.get("cairn.config").warning(
            "no setting reads this variable", variable=name, did_you_mean=nearest
        )
    try:
        return int(args.command(config, services, args) or 0)
    except (_NoDatabase, Unservable) as exc:
        sys.stderr.write(f"cairn {args.command_name}: {exc}\n")
        return 1


def _serve(config: Config, services: list[catalog.ServiceSpec], args: argparse.Namespace) -> int:
    memory.tune_for_large_buffers()
    try:
        # On uvloop, asyncpg and grpc.aio answer about 0.1 ms sooner per call here.
        uvloop.run(run(config, services))
    except (*_DATABASE_ERRORS, Unservable) as exc:
        _raise_if_no_database(config, exc)
        if not isinstance(exc, (OSError, Unservable)):
            raise
        sys.stderr.write(f"cairn serve: {exc}\n")  # a port in use, say: no traceback
        return 1
    return 0


def _migrate(config: Config, services: list[catalog.ServiceSpec], args: argparse.Namespace) -> None:
    async def migrated(pool: asyncpg.Pool) -> None:
        await migrate(pool, services, config)
        # Warns of a newer release's migrations, as serving does: an older image's
        # migrate Job, run in a rollback, said only that its own were up to date.
        await migrations.check(pool, services)

    _with_pool(config, migrated)
    logs.get("cairn.migrations").info("migrations up to date", services=[s.name for s in services])


def _create_key(
    config: Config, services: list[catalog.ServiceSpec], args: argparse.Namespace
) -> int:
    """Straight against the database, so a fresh deployment gets its first admin key
    without ever serving with authentication off."""

    async def create(pool: asyncpg.Pool) -> str:
        await migrate(pool, [AUTH], config)
        key, info = await AuthStore(pool).create_key(
            args.user, args.name, auth_keys.LIFETIMES[args.expires], global_admin=args.admin
        )
        logs.get("cairn.auth").info(
            "API key created", user=info.user_id, key_prefix=info.prefix, admin=args.admin
        )
        return key

    try:
        key = _with_pool(config, create)
    except DomainError as exc:  # the user's live keys at their bound, say
        sys.stderr.write(f"cairn keys create: {exc.message}\n")
        return 1
    sys.stdout.write(key + "\n")
    return 0


def _with_pool(config: Config, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def session() -> T:
        url = await asyncio.to_thread(database.resolve_url, config)
        pool = await database.create_pool(url, config)
        try:
            return await work(pool)
        finally:
            await database.close_pool(pool)

    try:
        return uvloop.run(session())
    except _DATABASE_ERRORS as exc:
        _raise_if_no_database(config, exc)
        raise


# What a failure to use the database may raise (OSError: one refused or unreachable).
_DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    database.UnreadableUrl,
    database.RefusedConnection,
)
# The URL unread, or the database refusing a connection (its database, user or a
# setting), rather than any one statement.
_REFUSED = (
    database.UnreadableUrl,
    database.RefusedConnection,
    asyncpg.ClientConfigurationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


def _raise_if_no_database(config: Config, exc: BaseException) -> None:
    """Raises _NoDatabase when exc says the database is out of reach or refuses us."""
    if isinstance(exc, _REFUSED) or database.unreachable(exc):
        raise _NoDatabase(config, exc) from exc


class _NoDatabase(Exception):
    """A server command's database could not be used: where it is, and why."""

    def __init__(self, config: Config, cause: BaseException) -> None:
        super().__init__(
            f"cannot use the database at {_where(config)} (--database-url, "
            f"CAIRN_DATABASE_URL): {_why(cause)}"
        )


def _why(cause: BaseException) -> str:
    if str(cause):
        return str(cause)
    if isinstance(cause, TimeoutError):  # says nothing of itself
        return "no answer in time (TimeoutError)"
    return type(cause).__name__


def _where(config: Config) -> str:
    """The database's place, without its password."""
    if not config.database_url:
        return f"{config.data_dir}/postgres (embedded)"
    try:
        parts = urlsplit(config.database_url)
        # An "@" past the host: a password holding "/" (or "?", "#") unencoded, read here
        # as host, port and path ("user:2024/pw@host"), which would show a piece of it.
        past_host = parts.path + parts.query + parts.fragment
        # Several "@" before it: one of a password, which asyncpg does not read as here.
        readable = "@" not in past_host and parts.netloc.count("@") <= 1
        if parts.scheme in ("postgres", "postgresql") and readable:
            # As asyncpg reads it: `host` and `port` parameters (a socket's folder, say)
            # before the URL's own, PGHOST and PGPORT after.
            given = parse_qs(parts.query)
            host = given.get("host", [parts.hostname or os.environ.get("PGHOST", "localhost")])
            port = given.get("port", [str(parts.port or os.environ.get("PGPORT", 5432))])
            return f"{host[0]}:{port[0]}{parts.path}"
    except ValueError:  # several hosts, a port past 65535: asyncpg reads what this cannot
        pass
    return "the URL given"


def _show_config(
    config: Config, services: list[catalog.ServiceSpec], args: argparse.Namespace
) -> None:
    sys.stdout.write(config_module.table_markdown())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cairn", description="Cairn ML metadata platform")
    parser.add_argument("--version", action="version", version=f"cairn {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    names = ", ".join(catalog.SERVICES)
    for name, command, summary in (
        ("serve", _serve, "serve services on one port until SIGTERM, SIGINT or SIGHUP"),
        ("migrate", _migrate, "apply pending database migrations, then exit"),
    ):
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.add_argument("services", nargs="*", help=f"all (default) or some of: {names}")
        config_module.add_flags(sub)
        sub.set_defaults(command=command, command_name=name)
    _add_keys_command(commands)
    show = commands.add_parser("config", help="print the configuration table (Markdown)")
    show.set_defaults(command=_show_config, command_name="config")
    return parser


def _add_keys_command(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="manage API keys directly in the database")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    summary = "create an API key and print it (once) on stdout"
    create = actions.add_parser("create", help=summary, description=summary)
    create.add_argument(
        "--user", required=True, type=_checked(auth_validation.new_user_id), help="the key's user"
    )
    create.add_argument(
        "--name",
        default="bootstrap",
        type=_checked(auth_validation.key_name),
        help="a name to recognise the key by",
    )
    create.add_argument(
        "--expires", choices=list(auth_keys.LIFETIMES), default="90d", help="lifetime (default 90d)"
    )
    create.add_argument(
        "--admin", action="store_true", help="make the user a global admin (bootstrap)"
    )
    config_module.add_flags(create)
    create.set_defaults(command=_create_key, command_name="keys create")


def _checked(rule: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type applying one of the services' validation rules."""

    def check(value: str) -> str:
        try:
            return rule(value)
        except DomainError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return check


def _version() -> str:
    try:
        return importlib.metadata.version("cairn")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
