"""Configuration from CAIRN_* environment variables and command-line flags.

Every setting is declared once, in the fields of `Settings` (settings.py): the environment
variable, the flag and the row of the configuration table in docs/configuration.md all
derive from it. A flag wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_checks import check_settings
from .settings import ConfigError, Settings, number

ENV_PREFIX = "CAIRN_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Config(Settings):
    """Settings of a Cairn server process, all services alike: each within its choices
    and bounds, and together as config_checks.py checks them."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_setting(f, getattr(self, f.name))
        check_settings(self)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.artifact_root or Path(self.data_dir) / "artifacts")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, with secrets masked, for logging."""
        return {
            f.name: (
                "***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }


def _check_setting(f: dataclasses.Field[Any], value: Any) -> None:
    """Raises ConfigError for a value outside the setting's choices or bounds."""
    choices, bounds = f.metadata["choices"], f.metadata["bounds"]
    if choices and value not in choices:
        raise ConfigError(f"{env_name(f.name)} must be one of {', '.join(choices)}")
    # nan passes every bound (each comparison with it is false).
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{env_name(f.name)} must be a finite number, not {value}")
    if bounds is not None and not bounds.allow(value):
        raise ConfigError(f"{env_name(f.name)} must be {bounds}, not {number(value)}")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting; unset flags stay None so the environment can apply."""
    for f in dataclasses.fields(Config):
        kind = _field_type(f)
        extra: dict[str, Any] = {"choices": f.metadata["choices"] or None}
        if kind is bool:
            extra = {"action": argparse.BooleanOptionalAction}
        else:
            extra["type"] = kind
        parser.add_argument(
            flag_name(f.name), dest=f.name, default=None, help=_flag_help(f), **extra
        )


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Builds the config from flags (when given), then the environment, then defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
        elif env_name(f.name) in env:
            values[f.name] = _parse(f, env[env_name(f.name)])
    return Config(**values)


# The client's and the `cairn` command's own variables (docs/client.md, docs/cli.md),
# which the environment of a server may hold too.
_CLIENT_VARIABLES = frozenset(
    f"{ENV_PREFIX}{name}"
    for name in [
        *("ADDRESS", "API_KEY", "ARTIFACTS_ADDRESS", "CA_FILE", "MODEL_CACHE", "PROFILE"),
        *("PROFILES", "PROJECT", "REGISTRY_ADDRESS", "TIMEOUT", "TLS"),
    ]
)
# What Kubernetes sets for each Service of a pod's namespace unless the pod's
# enableServiceLinks is false: for a Service cairn-tracking, CAIRN_TRACKING_SERVICE_HOST,
# CAIRN_TRACKING_SERVICE_PORT(_<name>), CAIRN_TRACKING_PORT_50051_TCP(_PROTO|_PORT|_ADDR),
# and CAIRN_TRACKING_PORT, whose value is a URL (tcp://10.0.0.7:50051); a Service named
# cairn, the same without TRACKING_.
_SERVICE_LINK = re.compile(
    r"CAIRN(_\w+)?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)"
)
_LINKED_PORT = re.compile(r"CAIRN(_\w+)?_PORT")
_LINKED_PORT_VALUE = re.compile(r"(tcp|udp|sctp)://\S+")


def unread_variables(env: Mapping[str, str]) -> dict[str, str | None]:
    """The CAIRN_* variables of env no setting reads, each with the setting whose name
    is nearest (None: none is near): a misspelt setting (CAIRN_SHUTDOWN_GRACE_SECOND)
    was left at its default without a word."""
    settings = {f.name.upper(): env_name(f.name) for f in dataclasses.fields(Config)}
    unread = sorted(
        name
        for name, value in env.items()
        if name.startswith(ENV_PREFIX)
        and name not in settings.values()
        and name not in _CLIENT_VARIABLES
        and not _service_link(name, value)
    )
    return {name: _nearest(name.removeprefix(ENV_PREFIX), settings) for name in unread}


def _service_link(name: str, value: str) -> bool:
    if _SERVICE_LINK.fullmatch(name):
        return True
    return bool(_LINKED_PORT.fullmatch(name) and _LINKED_PORT_VALUE.fullmatch(value))


def _nearest(name: str, settings: dict[str, str]) -> str | None:
    near = difflib.get_close_matches(name, settings, n=1, cutoff=0.75)  # past the prefix
    return settings[near[0]] if near else None


def table_markdown() -> str:
    """The configuration table, as docs/configuration.md shows it."""
    rows = ["| Environment variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = f.default if f.default != "" else "(empty)"
        meaning = f.metadata["help"]
        if f.metadata["choices"]:
            meaning += f" (one of: {', '.join(f.metadata['choices'])})"
        rows.append(f"| `{env_name(f.name)}` | `{flag_name(f.name)}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


def _field_type(f: dataclasses.Field[Any]) -> type:
    return {"str": str, "int": int, "bool": bool, "float": float}[str(f.type)]


def _flag_help(f: dataclasses.Field[Any]) -> str:
    return f"{f.metadata['help']} [env {env_name(f.name)}, default {f.default!r}]"


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = _field_type(f)
    try:
        if kind is bool:
            return _parse_bool(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)
