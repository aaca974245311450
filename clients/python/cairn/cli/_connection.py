"""Where the `cairn` command connects: flags, then CAIRN_* variables, then a profile.

Each setting is taken from the first of: its flag, its environment variable, the profile
(`--profile`/CAIRN_PROFILE, else the profile file's [default] section when there is one),
and the built-in default (127.0.0.1:50051, plaintext, no key, project "default"). The
profile file is the Python client's (cairn.profiles: `$CAIRN_PROFILES`, which must be
there when set, else `~/.config/cairn/profiles.ini`).

The variables are read only when a command connects (`resolve`), not while click parses
the command line: the server's commands (`serve`, `migrate`, `config`, the key
bootstrap) share the `cairn` group but never connect, so a client setting they do not
use cannot break them.
"""

from __future__ import annotations

import configparser
import math
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import _small_files as small_files
from .. import profiles
from .._client import Client, _split
from .._headers import MAX_TOKEN_LENGTH, timeout_of, token_header
from .._transport import DEFAULT_PROJECT, DEFAULT_TIMEOUT

DEFAULT_ADDRESS = "127.0.0.1:50051"
# Where the options given to the group and to the command meet (ctx.meta is shared).
_META_KEY = "cairn.connection"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Connection:
    """The settings a command connects with, once flags, environment and profile met."""

    host: str
    port: int
    tls: bool
    ca: bytes | None = field(repr=False)  # the PEM, read once: a pipe holds it once
    api_key: str | None = field(repr=False)  # a traceback that shows locals prints repr
    token_style: str
    project: str
    timeout: float | None
    service_addresses: Mapping[str, str]

    def client(self) -> Client:
        return Client(
            self.host,
            self.port,
            user_token=self.api_key,
            token_style=self.token_style,
            is_secure=self.tls,
            custom_ca=self.ca,
            project=self.project,
            timeout=self.timeout,
            service_addresses=dict(self.service_addresses) or None,
        )


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keeps a typed option's value where every command of the invocation reads it.

    The same options exist on the group (`cairn --profile prod runs list`) and on each
    command (`cairn runs list --profile prod`); the one typed last wins."""
    if value is not None and param.name is not None:
        ctx.find_root().meta.setdefault(_META_KEY, {})[param.name] = value


def _seconds(text: str) -> float:
    """A timeout's text: seconds above 0, or "none" (inf here: None is "not given")."""
    seconds = timeout_of(text)
    return math.inf if seconds is None else seconds


class _Seconds(click.ParamType):
    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return _seconds(str(value))
        except ValueError:
            self.fail(f"{value!r}: give seconds above 0 (at most 1e9), or none", param, ctx)


def _address(text: str) -> str:
    """An address as given by a flag or a variable, checked as the client reads it, so
    that a malformed one is a usage mistake (exit status 2) before any call."""
    if not text.strip():
        raise ValueError("an address cannot be empty")
    _split(text)
    return text


def _named(text: str) -> str:
    """A project or profile named by its flag: an empty name is a usage mistake, never
    the profile's or the default one (`--project "$P"` with P unset wrote to "default")."""
    if not text.strip():
        raise ValueError("a name cannot be empty")
    return text


def _api_key(text: str) -> str:
    """A key as given by the flag or the variable, checked as the client checks it, so
    that one no header can carry (a control character, 20,000 characters) is a usage
    mistake before any call; the message never quotes the key."""
    token_header(text)
    return text


class _Checked(click.ParamType):
    """A value check takes, whose ValueError is a usage mistake (exit status 2)."""

    def __init__(self, name: str, check: Callable[[str], str]) -> None:
        self.name = name
        self._check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self._check(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


_ADDRESS = _Checked("address", _address)
_NAME = _Checked("name", _named)
_API_KEY = _Checked("key", _api_key)


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise ValueError("not a truth value")


# Each setting's name, its variable and how the variable's text becomes its value.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "address": ("CAIRN_ADDRESS", _address),
    "api_key": ("CAIRN_API_KEY", _api_key),
    "project": ("CAIRN_PROJECT", str),
    "profile": ("CAIRN_PROFILE", str),
    "tls": ("CAIRN_TLS", _boolean),
    "ca_file": ("CAIRN_CA_FILE", str),
    "timeout": ("CAIRN_TIMEOUT", _seconds),
    "registry_address": ("CAIRN_REGISTRY_ADDRESS", _address),
    "artifacts_address": ("CAIRN_ARTIFACTS_ADDRESS", _address),
}

# What a variable's text must be, said in its usage error instead of the text itself.
_WANTED = {
    "tls": "give 1, true, yes or on; 0, false, no or off",
    "timeout": "give seconds above 0 (at most 1e9), or none",
    "api_key": f"a key is printable ASCII, at most {MAX_TOKEN_LENGTH} characters",
}


def _option(name: str, *flags: str, text: str, **settings: Any) -> Callable[[F], F]:
    """The option of a setting; its variable is only named in the help (see resolve)."""
    return click.option(
        *flags,
        name,
        expose_value=False,
        callback=_remember,
        help=f"{text} [env var: {_VARIABLES[name][0]}]",
        **settings,
    )


_OPTIONS = [
    _option(
        "address",
        "--address",
        "--target",
        type=_ADDRESS,
        text=f"host:port, http://host[:port] or https://host[:port] [default {DEFAULT_ADDRESS}]",
    ),
    _option("api_key", "--api-key", type=_API_KEY, text="the API key to send"),
    _option("project", "--project", type=_NAME, text="the project to work in"),
    _option("profile", "--profile", type=_NAME, text="a section of the profile file"),
    _option("tls", "--tls/--no-tls", default=None, text="connect over TLS or not"),
    _option("ca_file", "--ca-file", text="PEM root certificate to trust (TLS)"),
    _option(
        "timeout",
        "--timeout",
        type=_Seconds(),
        text="deadline of each call, in seconds, or none",
    ),
    _option(
        "registry_address",
        "--registry-address",
        type=_ADDRESS,
        text="the model registry's address, when it is served apart [default: --address]",
    ),
    _option(
        "artifacts_address",
        "--artifacts-address",
        type=_ADDRESS,
        text="the artifact service's address, when it is served apart [default: --address]",
    ),
]


def connection_options(command: F) -> F:
    """Adds the connection options to a command or group."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def typed(ctx: click.Context) -> list[str]:
    """The connection options typed in this invocation, as flags (--address, ...)."""
    return [f"--{name.replace('_', '-')}" for name in ctx.find_root().meta.get(_META_KEY, {})]


def resolve(ctx: click.Context) -> Connection:
    """The connection of this invocation (raises ProfileError for a bad profile, and
    click's usage error for a variable that is not a value of its setting)."""
    flags = ctx.find_root().meta.get(_META_KEY, {})
    given = {**_from_environment(ctx, skipped=flags.keys()), **flags}
    profile = _profile(given.get("profile"))
    host, port, tls = _location(given, profile)
    _schemes_agree(given, tls, ctx)
    # A profile's key, CA and services belong to the profile's server: given another
    # address, they are not used (a key is never sent elsewhere, maybe in the clear).
    own = profile if profile and not given.get("address") else None
    return Connection(
        host=host,
        port=port,
        tls=tls,
        # A CA says whom to trust over TLS; a plaintext connection has no use for one,
        # from the profile, the flag or the variable alike.
        ca=_ca(given, profile, ctx) if tls else None,
        api_key=_first(given.get("api_key"), own and own.token),
        token_style=profile.token_style if profile else profiles.BEARER,
        project=_first(given.get("project"), profile and profile.project, DEFAULT_PROJECT),
        timeout=_timeout(given, profile),
        service_addresses=_services(given, own),
    )


def _ca(
    given: dict[str, Any], profile: profiles.Profile | None, ctx: click.Context
) -> bytes | None:
    """The CA of a TLS connection: the flag's or variable's file, else the profile's;
    one that holds no PEM certificate is a usage mistake naming where it was given (the
    call failed later with OpenSSL's own words, "no start line", naming neither)."""
    if path := given.get("ca_file"):
        try:
            return _read_ca(path)
        except ValueError as problem:
            typed_here = "ca_file" in ctx.find_root().meta.get(_META_KEY, {})
            where = "--ca-file" if typed_here else "CAIRN_CA_FILE"
            raise click.UsageError(f"{where}: {problem}") from None
    if profile is None or not profile.ca:
        return None
    try:
        return _read_ca(profile.ca)
    except ValueError as problem:
        where = f"{profiles.profiles_path()} [{profile.name}]"
        raise profiles.ProfileError(f"{where}: ca: {problem}") from None


def _read_ca(path: str) -> bytes:
    """The root certificates a TLS connection trusts, from the file at path.

    Raises:
        ValueError: saying why they cannot be: unread, or no PEM certificate in it.
    """
    try:
        pem = small_files.read(path)
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror or error})") from None
    try:
        ssl.create_default_context(cadata=pem.decode())
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} holds no PEM certificate") from None
    return pem


def _from_environment(ctx: click.Context, skipped: Iterable[str]) -> dict[str, Any]:
    """The settings the environment gives, but for those `skipped` (given as flags, which
    come first: a malformed variable below one is never read)."""
    values = {}
    for name, (variable, parse) in _VARIABLES.items():
        text = os.environ.get(variable, "")
        if not text or name in skipped:
            continue
        try:
            values[name] = parse(text)
        except ValueError as error:
            # Why, never the text: a URL may hold a password, and a variable a secret.
            if parse is _address:
                raise click.UsageError(f"{variable} is not a valid address: {error}", ctx) from None
            raise click.UsageError(
                f"{variable} is not a valid value: {_WANTED[name]}", ctx
            ) from None
    return values


def _schemes_agree(given: dict[str, Any], tls: bool, ctx: click.Context) -> None:
    """An address given whose scheme says the contrary of the connection's TLS (--tls,
    or the server's own address for a service served apart) is a usage mistake, as the
    Python client refuses it; it is not named (a URL may hold a password)."""
    for name in ("address", "registry_address", "artifacts_address"):
        url_tls = _split(given[name])[2] if given.get(name) else None
        if url_tls is not None and url_tls != tls:
            scheme, wanted = ("https", "plaintext") if url_tls else ("http", "TLS")
            option = f"--{name.replace('_', '-')} ({_VARIABLES[name][0]})"
            raise click.UsageError(
                f"{option} is an {scheme}:// address for a {wanted} connection: choose one",
                ctx,
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


def _timeout(given: dict[str, Any], profile: profiles.Profile | None) -> float | None:
    # A profile's timeout is kept as it is, None (no deadline) too, as
    # cairn.create_client_from_profile keeps it.
    if given.get("timeout") is not None:
        return None if given["timeout"] == math.inf else float(given["timeout"])
    return profile.timeout if profile else DEFAULT_TIMEOUT


def _services(given: dict[str, Any], profile: profiles.Profile | None) -> dict[str, str]:
    """The services served apart from the address: given, else the profile's own."""
    services = dict(profile.service_addresses) if profile else {}
    for service in ("registry", "artifacts"):
        if given.get(f"{service}_address"):
            services[service] = given[f"{service}_address"]
    return services


def _profile(name: str | None) -> profiles.Profile | None:
    """The profile named, or the file's [default] when there is one; None otherwise.
    A file $CAIRN_PROFILES names must be there: a typo in it connected to the default
    address, unsaid."""
    if name:
        return profiles.load_profile(name)
    try:
        return profiles.load_profile("default")
    except profiles.ProfileError:
        path = profiles.profiles_path()
        if _has_default(path) or (os.environ.get(profiles.PROFILES_ENV) and not path.exists()):
            raise  # a [default] that cannot be used, a file named absent: say why
        return None


def _has_default(path: Path) -> bool:
    if not path.exists():
        return False
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(small_files.read(path).decode("utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError, OSError):
        # The file is broken (not INI, not UTF-8) or unread: load_profile's error says
        # where, naming the file, as it does for --profile default.
        return True
    return parser.has_section("default")


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None and value != ""), None)
