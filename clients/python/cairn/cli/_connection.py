"""Where the `cairn` command connects: flags, then CAIRN_* variables, then a profile.

Each setting is taken from the first of: its flag, its environment variable, the profile
(`--profile`/CAIRN_PROFILE, else the profile file's [default] section when there is one),
and the built-in default (127.0.0.1:50051, plaintext, no key, project "default"). The
profile file is the Python client's (cairn.profiles: `$CAIRN_PROFILES`, else
`~/.config/cairn/profiles.ini`).
"""

from __future__ import annotations

import configparser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import profiles
from .._client import Client, _split
from .._transport import DEFAULT_PROJECT, DEFAULT_TIMEOUT

DEFAULT_ADDRESS = "127.0.0.1:50051"
# Where the options given to the group and to the command meet (ctx.meta is shared).
_META_KEY = "cairn.connection"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Connection:
    """The settings a command connects with, once flags, environment and profile met."""

    host: str
    port: int
    tls: bool
    ca_file: str | None
    api_key: str | None
    token_style: str
    project: str
    timeout: float | None

    def client(self) -> Client:
        return Client(
            self.host,
            self.port,
            user_token=self.api_key,
            token_style=self.token_style,
            is_secure=self.tls,
            custom_ca=self.ca_file,
            project=self.project,
            timeout=self.timeout,
        )


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keeps an option's value where every command of the invocation reads it.

    The same options exist on the group (`cairn --profile prod runs list`) and on each
    command (`cairn runs list --profile prod`); a value typed on the command line wins
    over one the environment supplied to the other."""
    if value is None or param.name is None:
        return
    given = ctx.find_root().meta.setdefault(_META_KEY, {})
    typed = ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
    if typed or param.name not in given:
        given[param.name] = value


def _option(*names: str, **settings: Any) -> Callable[[F], F]:
    return click.option(
        *names, expose_value=False, callback=_remember, show_envvar=True, **settings
    )


_OPTIONS = [
    _option(
        "--address",
        "--target",
        "address",
        envvar="CAIRN_ADDRESS",
        help=f"host:port, http://host[:port] or https://host[:port] [default {DEFAULT_ADDRESS}]",
    ),
    _option("--api-key", envvar="CAIRN_API_KEY", help="the API key to send"),
    _option("--project", envvar="CAIRN_PROJECT", help="the project to work in"),
    _option("--profile", envvar="CAIRN_PROFILE", help="a section of the profile file"),
    _option("--tls/--no-tls", default=None, envvar="CAIRN_TLS", help="connect over TLS or not"),
    _option("--ca-file", envvar="CAIRN_CA_FILE", help="PEM root certificate to trust (TLS)"),
    _option(
        "--timeout", type=float, envvar="CAIRN_TIMEOUT", help="deadline of each call, in seconds"
    ),
]


def connection_options(command: F) -> F:
    """Adds the connection options to a command or group."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def resolve(ctx: click.Context) -> Connection:
    """The connection of this invocation (raises ProfileError for a bad profile)."""
    given: dict[str, Any] = ctx.find_root().meta.get(_META_KEY, {})
    profile = _profile(given.get("profile"))
    host, port, tls = _location(given, profile)
    return Connection(
        host=host,
        port=port,
        tls=tls,
        ca_file=_first(given.get("ca_file"), profile and profile.ca),
        api_key=_first(given.get("api_key"), profile and profile.token),
        token_style=profile.token_style if profile else profiles.BEARER,
        project=_first(given.get("project"), profile and profile.project, DEFAULT_PROJECT),
        timeout=_first(given.get("timeout"), profile and profile.timeout, DEFAULT_TIMEOUT),
    )


def _location(given: dict[str, Any], profile: profiles.Profile | None) -> tuple[str, int, bool]:
    """Host, port and TLS: the address given (its scheme, or --tls, says TLS), else the
    profile's, else 127.0.0.1:50051 in plaintext. A profile's TLS never applies to an
    address given elsewhere: it was meant for the profile's own server."""
    tls = given.get("tls")
    if given.get("address"):
        host, port, url_tls = _split(given["address"])
        secure = _first(tls, url_tls, False)
        fallback = profiles.DEFAULT_TLS_PORT if secure else profiles.DEFAULT_PLAINTEXT_PORT
        return host, port or fallback, secure
    if profile:
        return profile.host, profile.port, _first(tls, profile.tls)
    default_host, _, default_port = DEFAULT_ADDRESS.rpartition(":")
    return default_host, int(default_port), bool(tls)


def _profile(name: str | None) -> profiles.Profile | None:
    """The profile named, or the file's [default] when there is one; None otherwise."""
    if name:
        return profiles.load_profile(name)
    try:
        return profiles.load_profile("default")
    except profiles.ProfileError:
        if _has_default(profiles.profiles_path()):
            raise  # a [default] that cannot be used: say why rather than ignore it
        return None


def _has_default(path: Path) -> bool:
    if not path.exists():
        return False
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error:
        return True  # the file is broken: load_profile's error says where
    return parser.has_section("default")


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None and value != ""), None)
