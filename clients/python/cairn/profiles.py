"""Connection profiles: named sections of an INI file, as Devo's client reads them.

The Python client (`cairn.create_client_from_profile`) and the `cairn` command
(`--profile`, docs/cli.md) read the same file. It is found, in this order, at the path
given, at `$CAIRN_PROFILES`, or at `~/.config/cairn/profiles.ini`::

    [default]
    url = http://127.0.0.1:50051

    [prod]
    host = cairn.example.com
    port = 443
    tls = true
    ca = ~/certs/cairn-ca.pem
    token = cairn_0123456789ab_...
    token_style = bearer
    project = churn
    timeout = 45
    download_path = ~/models
    registry_address = registry.cairn.example.com:443
    artifacts_address = artifacts.cairn.example.com:443

`url` (Devo's, `http://` for plaintext, `https://` for TLS) or `host` with `port` and
`tls` say where the server is, never both. `tls` is true unless the profile says
`tls = false`, as `cairn.Client(host)` connects over TLS: a profile that forgets the key
must not send its token in the clear. A `ca` on a plaintext connection is refused, since
it would silently not be used. `token_style` (Devo's `auth_type` too) is `standalone`
(`x-api-key: <token>`, Devo's default and so the default here) or `bearer`
(`authorization: Bearer <token>`); a Cairn server takes either. `registry_address` and
`artifacts_address` place the services deployed apart from the server (the client's
`service_addresses`, docs/deploy.md), with the profile's TLS and token.
"""

from __future__ import annotations

import configparser
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import _small_files as small_files
from ._headers import timeout_of, token_header
from ._targets import parse, target
from ._transport import DEFAULT_PROJECT, DEFAULT_TIMEOUT

PROFILES_ENV = "CAIRN_PROFILES"
DEFAULT_PROFILES_PATH = Path("~/.config/cairn/profiles.ini")
PROFILES_FILE_NAME = "profiles.ini"
STANDALONE = "standalone"
BEARER = "bearer"
# Without a port in a URL: 443 for https, and `make run`'s port for plaintext.
DEFAULT_TLS_PORT = 443
DEFAULT_PLAINTEXT_PORT = 50051

_KEYS = {
    "url",
    "host",
    "port",
    "tls",
    "ca",
    "token",
    "token_style",
    "auth_type",
    "project",
    "timeout",
    "download_path",
    "registry_address",
    "artifacts_address",
}
# The profile keys of the services a deployment may serve apart (Client's service_addresses).
SERVICE_KEYS = {"registry": "registry_address", "artifacts": "artifacts_address"}


class ProfileError(ValueError):
    """A profile file or a profile that cannot be used.

    Its message names the file, the section, the line number and the key, never a
    line's text or a token (an address the client refuses is quoted as its own error
    quotes it, which leaves out a user or password)."""


class ProfileFileWarning(UserWarning):
    """A profile file holding a token is readable or writable by others than its owner."""


@dataclass(frozen=True)
class Profile:
    """Where a server is and how to talk to it.

    Attributes:
        name: the profile's section name.
        host: the server's host name or address.
        port: its TCP port.
        tls: whether to connect over TLS (a profile's `host` without `tls` means TLS).
        ca: a PEM root certificate file for TLS (None: the system roots).
        token: the API key (None: none sent).
        token_style: "standalone" (`x-api-key`) or "bearer" (`authorization: Bearer`).
        project: the project calls work in.
        timeout: default deadline of each call in seconds (None: no deadline).
        download_path: where Devo's get_model/find_model put files (None: ".").
        service_addresses: the address of each service served apart from host:port, by
            service name ("registry", "artifacts"); empty when all are served there.
    """

    name: str
    host: str
    port: int
    tls: bool = False
    ca: str | None = None
    token: str | None = field(default=None, repr=False)
    token_style: str = STANDALONE
    project: str = DEFAULT_PROJECT
    timeout: float | None = DEFAULT_TIMEOUT
    download_path: str | None = None
    service_addresses: Mapping[str, str] = field(default_factory=dict)


def profiles_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The profile file: path (a directory means its profiles.ini), else $CAIRN_PROFILES,
    else ~/.config/cairn/profiles.ini; "~" is expanded."""
    chosen = Path(path or os.environ.get(PROFILES_ENV) or DEFAULT_PROFILES_PATH).expanduser()
    return chosen / PROFILES_FILE_NAME if chosen.is_dir() else chosen


def load_profile(
    name: str = "default",
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, object] | None = None,
) -> Profile:
    """Reads one profile, with the keys of overrides in place of the file's (a value of
    None leaves the key out); a placement given (`url`, or `host`/`port`/`tls`) replaces
    the file's other one (its url taken apart, the rest of it kept), and `auth_type` and
    `token_style` replace each other.

    Raises:
        ProfileError: when the file or the profile is missing, or a value is invalid.
    """
    file = profiles_path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(_text(file), source=str(file))
    except FileNotFoundError:
        raise ProfileError(f"no profile file at {file}") from None
    except OSError as error:
        raise ProfileError(f"{file} cannot be read ({error.strerror or error})") from None
    except configparser.Error as error:
        raise ProfileError(f"{file} is not a valid INI file: {_where(error)}") from None
    if any(parser.has_option(section, "token") for section in parser.sections()):
        _warn_if_shared(file)
    if not parser.has_section(name):
        known = ", ".join(parser.sections()) or "none"
        raise ProfileError(f"{file} has no profile {name!r} (it has: {known})")
    values = _overridden(dict(parser.items(name)), overrides or {}, f"{file} [{name}]")
    return parse_profile(name, values, source=str(file))


# Where the server is, besides a url; and the two names of the token style.
_PLACEMENT = ("host", "port", "tls")
_STYLE_NAMES = ("token_style", "auth_type")


def _overridden(
    values: dict[str, str], overrides: Mapping[str, object], where: str
) -> dict[str, str]:
    """values with overrides in place, None leaving a key out. A url given replaces the
    file's host, port and tls; a host, port or tls given replaces the file's url, taken
    apart into them first; a token style given replaces the file's, however written
    (the file's token_style would otherwise win over an auth_type given)."""
    merged = dict(values)
    given = {key for key, value in overrides.items() if value is not None}
    if "url" in given:
        for key in _PLACEMENT:
            merged.pop(key, None)
    elif given.intersection(_PLACEMENT) and merged.get("url"):
        try:
            host, port, tls = split_url(merged.pop("url"))
        except ProfileError as error:
            raise ProfileError(f"{where}: url: {error}") from None
        merged.update(host=host, port=str(port), tls=_as_written(tls))
    if given.intersection(_STYLE_NAMES):
        for key in _STYLE_NAMES:
            merged.pop(key, None)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _as_written(value)
    return merged


def _as_written(value: object) -> str:
    """value as the file would write it, to be read as the file's values are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _text(file: Path) -> str:
    data = small_files.read(file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:  # where, not the text: the line may be a token
        line = data.count(b"\n", 0, error.start) + 1
        raise ProfileError(f"{file}: line {line} is not UTF-8 text") from None


def _where(error: configparser.Error) -> str:
    """Where the file is wrong, without the text of the line (it may be a token)."""
    if isinstance(error, configparser.DuplicateOptionError):
        return f"line {error.lineno}: key {error.option!r} twice in [{error.section}]"
    if isinstance(error, configparser.DuplicateSectionError):
        return f"line {error.lineno}: section [{error.section}] twice"
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: a key before any [section]"
    if isinstance(error, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in error.errors)
        return f"line{'s' if len(error.errors) > 1 else ''} {lines}: not `key = value`"
    return type(error).__name__


def _warn_if_shared(file: Path) -> None:
    # As ssh refuses a private key others can read: a token there is everybody's.
    mode = file.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{file} holds a token and is open to other users (mode {stat.S_IMODE(mode):o});"
            f" run: chmod 600 {file}",
            ProfileFileWarning,
            stacklevel=3,
        )


def parse_profile(name: str, values: dict[str, str], *, source: str = "profile") -> Profile:
    """A Profile from one section's keys and values (see the module's docstring)."""
    unknown = set(values) - _KEYS
    if unknown:
        raise ProfileError(f"{source} [{name}]: unknown keys {', '.join(sorted(unknown))}")
    host, port, tls = _address(name, values, source)
    if values.get("ca") and not tls:
        raise ProfileError(f"{source} [{name}]: ca is for TLS, but the connection is plaintext")
    style = (values.get("token_style") or values.get("auth_type") or STANDALONE).lower()
    if style not in (STANDALONE, BEARER):
        raise ProfileError(f"{source} [{name}]: token_style must be standalone or bearer")
    token = values.get("token") or None
    try:  # as the client will check it, which would name no file
        token_header(token)
    except ValueError as error:  # its words never quote the token
        raise ProfileError(f"{source} [{name}]: token: {error}") from None
    services = {service: values[key] for service, key in SERVICE_KEYS.items() if values.get(key)}
    for service, address in services.items():
        _check_address(name, source, SERVICE_KEYS[service], address, tls)
    return Profile(
        name=name,
        host=host,
        port=port,
        tls=tls,
        ca=_path(values.get("ca")),
        token=token,
        token_style=style,
        project=values.get("project") or DEFAULT_PROJECT,
        timeout=_timeout(name, values.get("timeout"), source),
        download_path=_path(values.get("download_path")),
        service_addresses=services,
    )


def split_url(url: str) -> tuple[str, int, bool]:
    """Host, port and TLS of "https://host[:port]" or "http://host[:port]".

    Raises:
        ProfileError: when url is not such a URL (the message does not quote it: a URL
            may carry credentials).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ProfileError("the URL is not http://host[:port] or https://host[:port]")
    try:  # read as cairn.Client reads it: no user or password, a port from 1 to 65535
        address = parse(url)
    except ValueError as error:  # its words quote no credentials
        raise ProfileError(str(error)) from None
    tls = bool(address.tls)
    default = DEFAULT_TLS_PORT if tls else DEFAULT_PLAINTEXT_PORT
    return address.host, address.port or default, tls


def _address(name: str, values: dict[str, str], source: str) -> tuple[str, int, bool]:
    if values.get("url"):
        beside = [key for key in ("host", "port", "tls") if key in values]
        if beside:
            raise ProfileError(
                f"{source} [{name}]: url places the server; {', '.join(beside)} cannot be"
                " given with it"
            )
        try:
            host, port, tls = split_url(values["url"])
        except ProfileError as error:
            raise ProfileError(f"{source} [{name}]: url: {error}") from None
        _check_address(name, source, "url", host, tls, port)
        return host, port, tls
    if not values.get("host"):
        raise ProfileError(f"{source} [{name}]: needs url, or host (and port)")
    tls = _boolean(name, values.get("tls", "true"), source)
    port_text = values.get("port") or str(DEFAULT_TLS_PORT if tls else DEFAULT_PLAINTEXT_PORT)
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ProfileError(f"{source} [{name}]: port must be a number from 1 to 65535")
    _check_address(name, source, "host", values["host"], tls, int(port_text))
    return values["host"], int(port_text), tls


def _check_address(
    name: str, source: str, key: str, address: str, tls: bool, port: int | None = None
) -> None:
    """ProfileError naming the key for an address the client would refuse (a control
    character in it, say), which would otherwise be a ValueError naming no file."""
    try:
        target(address, tls, port)
    except ValueError as error:  # its words quote no credentials
        raise ProfileError(f"{source} [{name}]: {key}: {error}") from None


def _boolean(name: str, value: str, source: str) -> bool:
    states = configparser.ConfigParser.BOOLEAN_STATES
    if value.lower() not in states:
        raise ProfileError(f"{source} [{name}]: tls must be true or false")
    return states[value.lower()]


def _timeout(name: str, value: str | None, source: str) -> float | None:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    try:
        return timeout_of(value)
    except ValueError:
        raise ProfileError(
            f"{source} [{name}]: timeout must be seconds above 0, or none; not {value!r}"
        ) from None


def _path(value: str | None) -> str | None:
    return str(Path(value).expanduser()) if value else None
