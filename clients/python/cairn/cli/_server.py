"""The server's commands (`serve`, `migrate`, `config`, `keys create --user`), handed
to cairn_server.cli, which needs the server's dependencies (`pip install 'cairn[server]'`).

They are imported only when one of them runs: the user commands work with the client
package alone.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import click

# The server's own parser reads these commands' flags and prints their --help.
PASS_THROUGH: dict[str, Any] = {
    "context_settings": {"ignore_unknown_options": True, "allow_extra_args": True},
    "add_help_option": False,
}


def run_server_command(argv: Sequence[str]) -> None:
    """Runs `cairn <argv>` as the server's command line does, exiting with its status."""
    try:
        from cairn_server import cli as server_cli
    except ImportError as error:
        if not server_not_installed(error):
            raise  # a bug of the server's own code: its message, not advice to install
        raise click.ClickException(
            f"`cairn {argv[0]}` is a server command and needs the server's packages"
            f" ({error.name} is missing): pip install 'cairn[server]'"
        ) from None
    raise SystemExit(server_cli.main(list(argv)))


def server_not_installed(error: ImportError) -> bool:
    """Whether importing the server failed because it, or one of the packages it
    depends on, is not installed (`pip install 'cairn[server]'` is the cure), rather
    than because of a bug in the server's own modules."""
    if importlib.util.find_spec("cairn_server") is None:
        return True
    return error.name is not None and not _is_our_module(error.name)


def _is_our_module(name: str) -> bool:
    # The server's and the client's modules: one of them missing is a bug, not an install.
    return name.partition(".")[0] in ("cairn_server", "cairn")


def _pass_through(name: str, summary: str) -> click.Command:
    @click.command(name, help=summary, short_help=summary, **PASS_THROUGH)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        run_server_command([name, *args])

    return command


COMMANDS = [
    _pass_through("serve", "Serve services on one port until SIGTERM/SIGINT (server)."),
    _pass_through("migrate", "Apply pending database migrations, then exit (server)."),
    _pass_through("config", "Print the server's configuration table, Markdown (server)."),
]
NAMES = frozenset(command.name for command in COMMANDS)
